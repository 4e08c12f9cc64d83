"""The app against the library it calls: attack, certify, page switches, and 4 sessions at once.

Starts ``streamlit run app.py`` on a free port and drives it in Chromium (Playwright, as the browser
test does): pick CIFAR-10 test image #459, attack it (conventional preset, 1,000 queries), certify
it with DSmooth, RandSmooth and LSmooth (n0 = 100, n = 1,000), switch between the pages, then let
4 browser sessions certify at once. Attack and certify run three times each, with three seeds (a
seed the app has seen would come back from its result cache). Each seed's work also runs through
the library in a fresh process (with the threads the app's rule gives it, and the spare cores its
worker lends) just before the app does it, so both see about the same machine load; the library also
certifies every seed, to check the app's results.

Prints ``app/library`` ratios of the median times for attack and certify (targets <= 1.3), the
median warm page switch (target < 1 s), and the time of 4 sessions certifying at once against one
(each with its own seed, so no session reuses another's result). Needs CIFAR-10 in
``DSMOOTH_DATA_DIR`` and Chromium at /usr/bin/chromium. Timings on a shared machine are noisy: run
it on a quiet one. Writes the figures to ``benchmarks/results/bench_app-<time>.json``.
Run: ``make bench``, or ``PYTHONPATH=. .venv/bin/python benchmarks/bench_app.py``.

The library runs the forward the app runs (``DSMOOTH_BACKEND``, else auto: ONNX Runtime on a CPU), so
app/library compares like with like. ``--backends torch,onnxruntime`` measures certify only, with one
server per backend side by side and their runs interleaved seed by seed (each seed's library run just
before its app run), so both backends see the same machine load: the app's speed-up of one backend over
the other is then a ratio of runs made under the same load, which a shared machine allows.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_results import add_results_option, write_result

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
IMAGE_INDEX = 459
ATTACK_SEEDS = (0, 1, 2)
CERTIFY_SEEDS = (0, 5, 6)  # one session, three runs
FOUR_SEEDS = (1, 2, 3, 4)  # the four sessions at once
METHODS = (("DSmooth", "dsmooth"), ("RandSmooth", "randsmooth"), ("LSmooth", "lsmooth"))
N0, N, ALPHA, SIGMA, BATCH = 100, 1000, 0.001, 0.25, 200
PAGES = ("Attack", "Threat profile", "Noise explorer", "Certify", "Experiments", "About", "Model & image")
FINISH_TIMEOUT_S = 180  # a certify job takes seconds; four queued ones well under a minute
POLL_MS = 50  # the harness's own checks; finer polling took CPU from the job it times
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
WATCH = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  let seen = false;
  window.__dslFinished = new Promise((resolve) => {
    const check = () => {
      const panel = document.querySelector('.st-key-dsl_job_panel');
      seen = seen || panel !== null;
      if (seen && panel === null && app.getAttribute('data-test-script-state') === 'notRunning') {
        observer.disconnect();
        resolve(true);
      }
    };
    const observer = new MutationObserver(check);
    observer.observe(document.body, {subtree: true, childList: true, attributes: true});
  });
}"""
# Resolves once the script has been seen running after this call (or after 2 s: a run too short to see).
RUN_SEEN = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  window.__dslRunSeen = new Promise((resolve) => {
    const observer = new MutationObserver((records) => {
      // a short run may be over by the time this is called: its record still holds the 'running' it left
      const states = [app.getAttribute('data-test-script-state'), ...records.map((r) => r.oldValue)];
      if (states.includes('running')) { observer.disconnect(); resolve(true); }
    });
    observer.observe(app, {attributes: true, attributeOldValue: true, attributeFilter: ['data-test-script-state']});
    setTimeout(() => { observer.disconnect(); resolve(false); }, 2000);
  });
}"""
P_LOWER = re.compile(r"^(DSmooth|RandSmooth|LSmooth) (?:certifies|abstains).*?p_lower = ([0-9.]+)")


# ---------------------------------------------------------------- the library, in its own process
def library(work: str, seeds: list[int]) -> dict:
    """``work`` ("attack" or "certify" for each seed) through the library, as the app does it, timed."""
    import torch
    from PIL import Image

    from dsmooth_core import bundled, certify
    from dsmooth_core.attacks import PRESETS, square_then_fgsm
    from dsmooth_core.backends import forward_name, inference_model
    from dsmooth_core.data import load_cifar10
    from dsmooth_core.models import DEFAULT_MODEL, load_model, prepare_image
    from dsmooth_core.noise import make_noise
    from dsmooth_core.profiles import ThreatProfile
    from dsmooth_lab_ui import threads

    model = load_model(DEFAULT_MODEL)
    test = load_cifar10("test", download=False)
    x = prepare_image(Image.fromarray(test.images[IMAGE_INDEX]), model.info)
    if work == "attack":
        torch.set_num_threads(threads.for_batch(1))
        model, _ = inference_model(model)  # Square queries the app's forward (FGSM's gradient stays torch's)
        label = torch.tensor([int(test.labels[IMAGE_INDEX])])
        start = time.perf_counter()
        square_then_fgsm(
            model, x.unsqueeze(0), label, PRESETS["conventional"], generator=torch.Generator().manual_seed(seeds[0])
        )
        return {"seconds": time.perf_counter() - start}
    covariance = ThreatProfile.load(bundled.PROFILE).covariance  # as the app
    torch.set_num_threads(threads.for_batch(BATCH))
    model, _ = inference_model(model)  # the app's forward, prepared before the clock starts (as the app's page does)
    p_lower: dict[int, dict[str, float]] = {}
    start = time.perf_counter()
    with threads.lending_spare_cores(threads.for_batch(BATCH)):  # as the app's worker runs a job
        for seed in seeds:
            p_lower[seed] = {}
            for name, method in METHODS:
                noise = make_noise(method, SIGMA, covariance if method == "dsmooth" else None)
                cert = certify(model, x, noise, N0, N, ALPHA, BATCH, torch.Generator().manual_seed(seed))
                p_lower[seed][name] = round(cert.p_lower, 4)
    return {"seconds": time.perf_counter() - start, "p_lower": p_lower, "forward": forward_name(model)}


def variant_env(variant: str | None) -> dict[str, str]:
    """The environment of a ``--backends`` entry: ``BACKEND`` or ``BACKEND:THREADS`` (``DSMOOTH_TORCH_THREADS``)."""
    if not variant:
        return {}
    backend, _, thread_count = variant.partition(":")
    return {"DSMOOTH_BACKEND": backend, **({"DSMOOTH_TORCH_THREADS": thread_count} if thread_count else {})}


def run_library(work: str, seeds: tuple[int, ...] = (0,), variant: str | None = None) -> dict:
    """:func:`library` in a fresh process (no server, no browser in it), in ``variant``'s environment."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **variant_env(variant)}
    command = [sys.executable, __file__, "--library", work, "--seeds", ",".join(map(str, seeds))]
    out = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["p_lower"] = {int(k): v for k, v in result.get("p_lower", {}).items()}
    return result


# ---------------------------------------------------------------- the app, in Chromium
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    port: int, log: Path, variant: str | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen:
    """``streamlit run app.py`` on ``port`` in ``variant``'s environment plus ``env``, once it accepts connections."""
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.address", "127.0.0.1"]
    command += ["--server.port", str(port), "--server.headless", "true", "--server.fileWatcherType", "none"]
    command += ["--browser.gatherUsageStats", "false"]
    with log.open("w") as out:
        server = subprocess.Popen(
            command,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **variant_env(variant), **(env or {})},
        )
    deadline = time.monotonic() + 120
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"streamlit did not start:\n{log.read_text()}") from None
            time.sleep(0.3)


def stop_server(server: subprocess.Popen) -> None:
    """End the server; under load it took over 30 s to stop with its workers, which lost whole runs' figures."""
    server.terminate()
    try:
        server.wait(timeout=120)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(timeout=30)


def idle(page, timeout: float = 600) -> None:
    """Until the script is not running and no job panel is shown.

    For the untimed steps (typing a number, opening a session); the timed waits use :func:`watch`.
    """
    deadline = time.monotonic() + timeout
    app = page.locator('[data-testid="stApp"]')
    while time.monotonic() < deadline:
        if (
            app.get_attribute("data-test-script-state") == "notRunning"
            and not page.locator(".st-key-dsl_job_panel").count()
        ):
            return
        page.wait_for_timeout(POLL_MS)
    raise RuntimeError("the app did not become idle")


def set_number(page, label: str, value: float) -> None:
    """Type ``value`` into the number box ``label`` and wait until the page has run with it.

    Checked and typed again if needed: a rerun that started before the typing (a click on the current
    page's own link starts one the harness cannot see begin) redraws the box with its old value, and a
    Certify pressed then repeats the previous seed, whose cached result starts no job to wait for.
    """
    box = page.get_by_label(label, exact=True)
    for _ in range(5):
        box.fill(str(value))
        box.press("Enter")
        page.wait_for_timeout(300)
        idle(page)
        if float(box.input_value()) == float(value):
            return
    raise RuntimeError(f"the box {label!r} does not keep the value {value}")


def switch(page, title: str) -> float:
    """Seconds from clicking a page's link until its title is shown and the script has finished."""
    heading = page.get_by_role("heading", level=1).filter(has_text=title.split(" ")[0])
    same_page = heading.count() > 0  # its own link reruns it with its title already shown
    if same_page:
        page.evaluate(RUN_SEEN)
    start = time.perf_counter()
    page.get_by_role("link", name=title, exact=True).first.click()
    heading.wait_for(timeout=120_000)
    if same_page:
        page.evaluate("() => window.__dslRunSeen")
    idle(page)
    return time.perf_counter() - start


def open_session(browser, url: str):
    page = browser.new_context(viewport={"width": 1400, "height": 2000}).new_page()
    page.set_default_timeout(600_000)
    page.goto(f"{url}/model_image")  # by its address: the app opens on the guided lesson
    page.get_by_role("heading", name="Model & image").wait_for()
    idle(page)
    set_number(page, "Or test image index", IMAGE_INDEX)
    page.get_by_role("button", name="Use it").click()
    page.wait_for_timeout(300)
    idle(page)
    return page


def job_note(page) -> str:
    """The panel's line about the finished job: its own compute time, without the page's overhead."""
    return " ".join(page.get_by_text(re.compile(r"done in [0-9.]+ s")).all_inner_texts())


def watch(page) -> None:
    """Before a click that starts a job: note, in the page, the moment that job's result is drawn.

    A MutationObserver checks on every change of the page. Playwright's own waits for an element
    retry at growing intervals, 500 ms apart after the first few (its source); with them the app's
    time exceeded its job's by 0.2-0.6 s, with the observer by 0.2-0.3 s (measured).
    """
    page.evaluate(WATCH)


def finished(page) -> None:
    """Until the job a click started (after :func:`watch`) has ended and the run drawing it is over.

    A result not drawn within :data:`FINISH_TIMEOUT_S` fails the run with a screenshot and the page's
    text (a wait without end once hid what the page showed).
    """
    limit = FINISH_TIMEOUT_S * 1000
    wait = f"() => Promise.race([window.__dslFinished, new Promise((r) => setTimeout(() => r(false), {limit}))])"
    if page.evaluate(wait):
        return
    shot = Path(tempfile.mkdtemp(prefix="bench_app-")) / "no-result.png"
    page.screenshot(path=str(shot), full_page=True)
    text = " | ".join(line for line in page.locator("body").inner_text().splitlines() if line.strip())
    raise RuntimeError(f"no result {FINISH_TIMEOUT_S} s after the click (screenshot {shot}); the page: {text[:3000]}")


def attack_once(page, seed: int) -> float:
    """Seconds from pressing "Run the attack" until the page shows that seed's result."""
    set_number(page, "Seed", seed)
    watch(page)
    start = time.perf_counter()
    page.get_by_role("button", name="Run the attack").click()
    finished(page)
    seconds = time.perf_counter() - start
    page.locator('[data-testid="stMetric"]').filter(has_text=re.compile(rf"^Seed\s*{seed}$")).wait_for(state="attached")
    return seconds


def certify_and_wait(pages: list, seeds: list[int]) -> tuple[float, list[dict[str, float]]]:
    """Press Certify in every page at once; seconds until all show three results, and their p_lower."""
    for page, seed in zip(pages, seeds, strict=True):
        switch(page, "Certify")
        set_number(page, "Seed", seed)
        watch(page)
    start = time.perf_counter()
    for page in pages:
        page.get_by_role("button", name="Certify", exact=True).click()
    for page in pages:
        finished(page)
    seconds = time.perf_counter() - start
    found: list[dict[str, float]] = []
    for page in pages:
        page.locator("li").filter(has_text=re.compile("^LSmooth (certifies|abstains)")).wait_for(state="attached")
        found.append({m[1]: float(m[2]) for m in (P_LOWER.match(t) for t in page.locator("li").all_inner_texts()) if m})
    return seconds, found


def app(url: str) -> dict:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS)
        try:
            page = open_session(browser, url)
            switch(page, "Attack")
            attack, library_attack = [], []
            for seed in ATTACK_SEEDS:
                library_attack.append(run_library("attack", (seed,))["seconds"])
                attack.append(attack_once(page, seed))
                app_s, library_s = attack[-1], library_attack[-1]
                print(f"attack, seed {seed}: app {app_s:.2f} s ({job_note(page)}), library {library_s:.2f} s")

            certify, library_certify, p_lower = [], [], {}
            for seed in CERTIFY_SEEDS:
                library_certify.append(run_library("certify", (seed,))["seconds"])
                seconds, (p_lower[seed],) = certify_and_wait([page], [seed])
                certify.append(seconds)
                library_s = library_certify[-1]
                print(f"certify, seed {seed}: app {seconds:.2f} s ({job_note(page)}), library {library_s:.2f} s")
            for title in PAGES:  # every page visited once: warm
                switch(page, title)
            switches = [switch(page, title) for _ in range(2) for title in PAGES]
            print(f"page switches (s): {[round(t, 2) for t in switches]}", flush=True)

            sessions = [open_session(browser, url) for _ in FOUR_SEEDS]
            four_seconds, four = certify_and_wait(sessions, list(FOUR_SEEDS))
        finally:
            browser.close()
    return {
        "attack": statistics.median(attack),
        "library_attack": statistics.median(library_attack),
        "certify": statistics.median(certify),
        "library_certify": statistics.median(library_certify),
        "p_lower": {**p_lower, **dict(zip(FOUR_SEEDS, four, strict=True))},
        "switches": switches,
        "four": four_seconds,
    }


def compare_backends(backends: list[str], seeds: tuple[int, ...], results: Path) -> None:
    """Certify only, one server per backend, runs interleaved seed by seed (see the module docstring)."""
    from playwright.sync_api import sync_playwright

    times: dict[str, dict[str, list[float]]] = {b: {"app": [], "library": []} for b in backends}
    equal: dict[str, bool] = dict.fromkeys(backends, True)
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as folder, sync_playwright() as playwright:
        servers, pages = {}, {}
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS)
        try:
            for backend in backends:
                port = free_port()
                servers[backend] = start_server(port, Path(folder) / f"server{len(servers)}.log", backend)
                pages[backend] = open_session(browser, f"http://127.0.0.1:{port}")
                switch(pages[backend], "Certify")
                certify_and_wait([pages[backend]], [N0])  # a first certify per server: its one-off preparation
            for seed in seeds:
                for backend in backends:
                    library_run = run_library("certify", (seed,), backend)
                    seconds, (shown,) = certify_and_wait([pages[backend]], [seed])
                    times[backend]["app"].append(seconds)
                    times[backend]["library"].append(library_run["seconds"])
                    equal[backend] &= shown == library_run["p_lower"][seed]
                    loads.append(os.getloadavg()[0])
                    print(
                        f"seed {seed}, {backend}: app {seconds:.2f} s ({job_note(pages[backend])}), library "
                        f"{library_run['seconds']:.2f} s ({library_run['forward']}), load {loads[-1]:.1f}",
                        flush=True,
                    )
        finally:
            browser.close()
            for server in servers.values():
                stop_server(server)
    medians = {b: {where: statistics.median(t) for where, t in times[b].items()} for b in backends}
    rows = [
        {
            "backend (DSMOOTH_BACKEND[:DSMOOTH_TORCH_THREADS])": b,
            "app s": round(medians[b]["app"], 2),
            "library s": round(medians[b]["library"], 2),
            "app/library": round(medians[b]["app"] / medians[b]["library"], 2),
            f"app, {backends[0]} / this": round(medians[backends[0]]["app"] / medians[b]["app"], 2),
            "certificates equal the library's": equal[b],
        }
        for b in backends
    ]
    for row in rows:
        print(row)
    print(f"load average (1 min) during the runs: {min(loads):.1f} to {max(loads):.1f}")
    settings = {
        "image": f"CIFAR-10 test #{IMAGE_INDEX}",
        "methods": "DSmooth, RandSmooth, LSmooth",
        "n0": N0,
        "n": N,
        "sigma": SIGMA,
        "alpha": ALPHA,
        "batch": BATCH,
        "seeds": f"medians of {len(seeds)} seeds, the backends interleaved seed by seed",
        "load average during the runs": f"{min(loads):.1f} to {max(loads):.1f}",
    }
    tables = {"certify in the app and the library, per backend": rows}
    write_result(results, "bench_app", settings, tables, ["one server per backend, side by side; see --backends"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--library", choices=["attack", "certify"], help="run this work through the library only")
    parser.add_argument("--seeds", default="0", help="seeds, comma-separated (with --library; attack uses the first)")
    parser.add_argument(
        "--backends",
        help="certify only, on these backends side by side, e.g. torch,onnxruntime (seeds: --seeds); "
        "BACKEND:THREADS sets DSMOOTH_TORCH_THREADS for that one, e.g. onnxruntime:2",
    )
    add_results_option(parser)
    args = parser.parse_args()
    if args.library:
        print(json.dumps(library(args.library, [int(seed) for seed in args.seeds.split(",")])))
        return
    if not CHROMIUM.exists():
        sys.exit(f"needs Chromium at {CHROMIUM}")
    if args.backends:
        seeds = tuple(int(seed) for seed in args.seeds.split(","))
        compare_backends(args.backends.split(","), seeds if len(seeds) > 1 else CERTIFY_SEEDS, args.results)
        return
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        server = start_server(port, Path(folder) / "server.log")
        try:
            measured = app(f"http://127.0.0.1:{port}")
        finally:
            server.terminate()
            server.wait(timeout=30)
    seeds = CERTIFY_SEEDS + FOUR_SEEDS
    expected = run_library("certify", seeds)["p_lower"]

    correct = all(measured["p_lower"][seed] == expected[seed] for seed in seeds)
    attack, certify = measured["attack"], measured["certify"]
    library_attack, library_certify = measured["library_attack"], measured["library_certify"]
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} (timings are noisy when shared)")
    print("medians of 3 seeds; each library run in a fresh process just before the app's run of that seed")
    print(f"attack  (Square + FGSM, 1000 queries): app {attack:6.2f} s, library {library_attack:6.2f} s")
    print(f"        app/library = {attack / library_attack:.2f} (target <= 1.3)")
    print(f"certify (3 methods, n0={N0}, n={N}):   app {certify:6.2f} s, library {library_certify:6.2f} s")
    print(f"        app/library = {certify / library_certify:.2f} (target <= 1.3)")
    print(
        f"warm page switch: median {statistics.median(measured['switches']):.2f} s, max "
        f"{max(measured['switches']):.2f} s over {len(measured['switches'])} switches (target median < 1 s)"
    )
    print(
        f"4 sessions certifying at once: {measured['four']:.1f} s against {certify:.1f} s for one "
        f"(ratio {measured['four'] / certify:.2f}; jobs queue, so about 4 is ideal); "
        f"all {len(seeds)} certifications equal to the library's: {correct}"
    )
    if not correct:
        print(f"app p_lower {measured['p_lower']}\nlibrary p_lower {expected}")
    switches = measured["switches"]
    rows = [
        {
            "what": "attack (Square + FGSM, 1,000 queries)",
            "app s": round(attack, 2),
            "library s": round(library_attack, 2),
            "app/library": round(attack / library_attack, 2),
            "target": "<= 1.3",
        },
        {
            "what": f"certify (3 methods, n0 = {N0}, n = {N:,})",
            "app s": round(certify, 2),
            "library s": round(library_certify, 2),
            "app/library": round(certify / library_certify, 2),
            "target": "<= 1.3",
        },
    ]
    sessions = [
        {
            "warm page switch, median s": round(statistics.median(switches), 2),
            "max s": round(max(switches), 2),
            "switches": len(switches),
            "target": "median < 1 s",
            "4 sessions at once s": round(measured["four"], 1),
            "4 sessions / one": round(measured["four"] / certify, 2),
            f"all {len(seeds)} certifications equal the library's": correct,
        }
    ]
    settings = {
        "image": f"CIFAR-10 test #{IMAGE_INDEX}",
        "sigma": SIGMA,
        "alpha": ALPHA,
        "batch": BATCH,
        "seeds": "medians of 3 seeds; each library run in a fresh process just before the app's run",
    }
    tables = {"the app against the library": rows, "page switches and 4 sessions": sessions}
    write_result(args.results, "bench_app", settings, tables, ["Chromium, the server and the library on one machine"])


if __name__ == "__main__":
    main()
