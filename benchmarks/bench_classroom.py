"""Thirty students on one server: each opens the app, attacks and certifies within one minute.

Starts ``streamlit run app.py`` (as ``bench_app.py`` does) with ``DSMOOTH_JOB_SLOTS`` set to
``--slots``, then opens ``--sessions`` browser sessions: Chromium contexts in one headless browser,
driven concurrently with Playwright's async API. Each session starts at a seeded random moment
within ``--spread`` seconds, opens a link to the Attack page, presses "Run the attack", then opens a
link to the Certify page (same image) and presses Certify, all with the app's defaults (model, image,
preset, sigma, n0, n, alpha, seed), unless ``--queries``/``--n`` lower the work or
``--distinct-seeds`` gives each session its own seed (session i: seed i), which makes every job real
work instead of a result that an equal job already computed. The links carry these settings
(``dsmooth_lab_ui.links``), as a teacher's handout would: nothing is typed, each box and the address
bar must show the link's value before the button is pressed, and the attack's record must name the
seed and query budget asked for; a session that ran other settings fails the run.

What it reports (printed, and written to ``benchmarks/results/bench_classroom-<time>.json``):

- every result correct: each session's attack (l2 norm of delta, queries, prediction after) and
  certificates (prediction and p_lower per method, as the page prints them) equal the library's for
  the same inputs and seeds, computed once per distinct input in a fresh process after the run;
- the wait before each job starts: in the page, a MutationObserver notes the moment of the click and
  the first frame in which the job panel shows the job running (or the result, for a job that never
  ran itself); the wait is the difference, so it includes the click's rerun and the panel's redraw;
- each job's run time: the panel's "done in X s" (the scheduler's own start-to-end time);
- the places in line each session was shown while queued;
- total wall time, the server's and its worker processes' and Chromium's memory before (the server
  warmed by one session, as a teacher's check before class), at the peak (sampled every second) and
  after, as PSS (resident memory with shared pages split among the processes sharing them; the
  summed RSS of Chromium's processes counts its shared pages many times), the load average, errors.

Needs CIFAR-10 in ``DSMOOTH_DATA_DIR`` and Chromium at /usr/bin/chromium.
Run: ``PYTHONPATH=. .venv/bin/python benchmarks/bench_classroom.py`` (30 sessions), or
``--sessions 3 --spread 5`` for a smoke run.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from bench_app import CHROMIUM, LAUNCH_ARGS, free_port, start_server, stop_server
from bench_results import add_results_option, write_result

# imported before the sessions start: an import inside a session blocked the event loop for over a minute
from dsmooth_lab_ui import links, nav

ROOT = Path(__file__).resolve().parents[1]
PAGE_TIMEOUT_MS = 1_800_000  # a session at the back of a long queue waits minutes
# A result not drawn this long after its click fails that session with a screenshot (the longest wait
# measured at the back of the queue was 60 s); a wait without end once held a whole run for minutes.
FINISH_TIMEOUT_S = 300
IMAGE_CAPTION = re.compile(r"CIFAR-10 test #(\d+)")
DONE_IN = re.compile(r"done in ([0-9.]+) s")
QUEUED = re.compile(r"Queued: (\d+)\w\w in line")
CERT_LINE = re.compile(r"^(DSmooth|RandSmooth|LSmooth) (certifies (.+?)|abstains): p_lower = ([0-9.]+), R = ([^ ]+)")
ATTACK_PRESET = "conventional"  # the Attack page's default (pages/attack.py)
METHODS = (("DSmooth", "dsmooth"), ("RandSmooth", "randsmooth"), ("LSmooth", "lsmooth"))
# The boxes of each page's settings, by their link parameter names (dsmooth_lab_ui.links).
ATTACK_INPUTS = {"queries": "Square queries (budget per image)", "seed": "Seed"}
CERTIFY_INPUTS = {
    "sigma": "sigma (noise level)",
    "n0": "n0 (selection draws)",
    "n": "n (estimation draws)",
    "alpha": "alpha (failure probability)",
    "batch": "Batch size",
    "seed": "Seed",
}
# In the page: from the click, note when the job panel first shows the job running, each queued place it
# shows, and when the result (a text matching `done`) is drawn with no panel and the script idle.
WATCH = """(done) => {
  const app = document.querySelector('[data-testid="stApp"]');
  const pattern = new RegExp(done);
  const seen = {click: performance.now(), running: null, places: [], finished: null};
  window.__dslSeen = seen;
  window.__dslFinished = new Promise((resolve) => {
    const check = () => {
      const panel = document.querySelector('.st-key-dsl_job_panel');
      if (panel !== null) {
        const text = panel.innerText;
        const place = text.match(/Queued: (\\d+)\\w\\w in line/);
        if (place) {
          const n = Number(place[1]);
          if (seen.places[seen.places.length - 1] !== n) seen.places.push(n);
        } else if (seen.running === null && /thread\\(s\\)/.test(text)) {
          seen.running = performance.now();
        }
        return;
      }
      if (app.getAttribute('data-test-script-state') !== 'notRunning') return;
      const texts = Array.from(document.querySelectorAll('[data-testid="stMetric"], li')).map((e) => e.innerText);
      const alerts = Array.from(document.querySelectorAll('[data-testid="stAlert"]')).map((e) => e.innerText);
      seen.failed = alerts.find((t) => /failed:|^Cancelled:/.test(t)) || null;
      if (seen.failed !== null || texts.some((t) => pattern.test(t))) {
        seen.finished = performance.now();
        observer.disconnect();
        resolve(true);
      }
    };
    const observer = new MutationObserver(check);
    observer.observe(document.body, {subtree: true, childList: true, attributes: true, characterData: true});
  });
}"""
ATTACK_DONE = r"^Seed\s*\d+$"
CERTIFY_DONE = r"^LSmooth (certifies|abstains)"


@dataclasses.dataclass
class Options:
    """What each session does beyond the defaults (``None``: leave the app's default)."""

    queries: int | None
    n: int | None
    distinct_seeds: bool

    def seed(self, session: int) -> int:
        return session if self.distinct_seeds else 0


# ---------------------------------------------------------------- memory
def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (read from /proc: no psutil in the environment)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def pss_mb(pid: int) -> float:
    """Proportional set size: RSS with each shared page split among its sharers, so a sum over processes
    that share pages (Chromium's, the server and its forked workers) does not count them twice."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def chromium_pids() -> list[int]:
    """Chromium processes started by this benchmark (children of this process's Playwright driver)."""
    return [pid for pid in descendants(os.getpid())[1:] if "chrom" in _command(pid)]


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def memory(server_pid: int) -> dict[str, float]:
    """Memory (PSS) in MB of the server, of its workers (all its descendants), and of Chromium (all its processes)."""
    workers = descendants(server_pid)[1:]
    return {
        "server MB": round(pss_mb(server_pid)),
        "workers MB": round(sum(pss_mb(pid) for pid in workers)),
        "workers": len(workers),
        "chromium MB": round(sum(pss_mb(pid) for pid in chromium_pids())),
    }


class MemoryPeaks(threading.Thread):
    """Samples :func:`memory` every second; keeps each figure's peak."""

    def __init__(self, server_pid: int) -> None:
        super().__init__(daemon=True)
        self.server_pid, self.peak, self.stop = server_pid, {}, threading.Event()

    def run(self) -> None:
        while not self.stop.wait(1.0):
            for name, value in memory(self.server_pid).items():
                self.peak[name] = max(self.peak.get(name, 0), value)


# ---------------------------------------------------------------- one student, in Chromium
async def idle(page, timeout: float = 600) -> None:
    """Until the script is not running and no job panel is shown."""
    deadline = time.monotonic() + timeout
    app = page.locator('[data-testid="stApp"]')
    while time.monotonic() < deadline:
        script = await app.get_attribute("data-test-script-state")
        if script == "notRunning" and not await page.locator(".st-key-dsl_job_panel").count():
            return
        await page.wait_for_timeout(200)
    raise RuntimeError("the app did not become idle")


def link(url: str, page_path: str, **params: object) -> str:
    """The address that opens ``page_path`` with ``params`` (``links.address`` checks each name)."""
    return f"{url}/{links.address(page_path, **params)}"


async def open_link(page, address: str, heading: str) -> None:
    await page.goto(address)
    await page.get_by_role("heading", level=1).filter(has_text=heading).wait_for()
    await idle(page)


# How long a box may lag behind its link: under 30 sessions the page's redraw after the run that reads the
# link can come after the script reports itself idle (bench_classroom-20261206T103138Z.json: 27 sessions
# read the seed box as 0 while the address already held the link's seed).
SETTLE_SECONDS = 60


async def expect_settings(page, boxes: dict[str, str], wanted: dict[str, object]) -> None:
    """Before a button is pressed: each box shows the link's value, and so does the address bar, which the
    server rewrites after every run from the session's state (``links.sync``): the server holds it too.

    Why: typed values were lost under load (bench_classroom-20261206T071513Z.json: 2 of 30 attacks ran
    with the default 1,000 queries), so the settings come in the session's link and are checked here.
    """
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        query = dict(parse_qsl(urlsplit(page.url).query))
        wrong = []
        for name, value in wanted.items():
            shown = await page.get_by_label(boxes[name], exact=True).input_value()
            if shown != str(value) or query.get(name) != str(value):
                wrong.append(f"{name} = {value}: box {shown!r}, address {query.get(name)!r}")
        if not wrong:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the link's settings did not take within {SETTLE_SECONDS} s: {'; '.join(wrong)}")
        await page.wait_for_timeout(250)  # the page may still be between the link's run and its redraw


async def press_and_time(page, button: str, done: str, title: str) -> dict:
    """Click ``button``; until its result is drawn. The wait, the run time and the places in line."""
    await page.evaluate(WATCH, done)
    await page.get_by_role("button", name=button, exact=True).click()
    limit = FINISH_TIMEOUT_S * 1000
    if not await page.evaluate(
        f"() => Promise.race([window.__dslFinished, new Promise((r) => setTimeout(() => r(false), {limit}))])"
    ):
        shot = Path(tempfile.mkdtemp(prefix="bench_classroom-")) / "no-result.png"
        await page.screenshot(path=str(shot), full_page=True)
        text = " | ".join(line for line in (await page.locator("body").inner_text()).splitlines() if line.strip())
        raise RuntimeError(
            f"{button}: no result {FINISH_TIMEOUT_S} s after its click (screenshot {shot}): {text[:1500]}"
        )
    seen = await page.evaluate("() => window.__dslSeen")
    if seen["failed"]:  # reported as this session's error; the other sessions go on
        # the whole alert on one line: its first line is the icon's name ("error")
        raise RuntimeError(f"{button}: {' '.join(seen['failed'].split())[:400]}")
    note = " ".join(await page.get_by_text(DONE_IN).all_inner_texts())
    match = re.search(f"{title}: {DONE_IN.pattern}", note)  # this job's own; the previous one's may still show
    run = float(match[1]) if match else 0.0  # no panel: the result came from the cache at once
    # a short job can end before a frame shows it running: it started its run time before its result was drawn
    started = seen["running"] if seen["running"] is not None else seen["finished"] - 1000 * run
    return {
        "wait s": round(max(started - seen["click"], 0.0) / 1000, 2),
        "run s": run,
        "how": "cached" if match is None else ("computed" if run > 0 else "equal job's result"),
        "places": seen["places"],
        "page s": round((seen["finished"] - seen["click"]) / 1000, 2),
    }


async def metric(page, label: str) -> str:
    box = page.locator('[data-testid="stMetric"]').filter(has=page.get_by_text(label, exact=True))
    return (await box.locator('[data-testid="stMetricValue"]').inner_text()).strip()


async def attack_budget(page) -> int:
    """The Square query budget the finished attack ran with, from its "Attack settings used" record."""
    await page.get_by_text("Attack settings used", exact=True).click()
    text = await page.locator('[data-testid="stJson"]').last.inner_text()
    match = re.search(r'"?n_queries"?\s*:\s*(\d+)', text)
    if match is None:
        raise RuntimeError(f"no n_queries in the attack's settings: {text[:200]!r}")
    return int(match[1])


async def student(browser, url: str, session: int, delay: float, options: Options, t0: float) -> dict:
    """One session: open the attack link, attack; open the certify link, certify; what it saw, or the error.

    Each link carries the session's settings (seed, queries, n), as a teacher's handout would; nothing is
    typed. The certify link also names the image the attack page showed, so both jobs work on one image.
    """
    await asyncio.sleep(delay)
    out: dict = {"session": session, "opened at s": round(time.monotonic() - t0, 1)}
    context = await browser.new_context(viewport={"width": 1400, "height": 2000})
    try:
        page = await context.new_page()
        page.set_default_timeout(PAGE_TIMEOUT_MS)
        seed = options.seed(session)
        out["seed"] = seed
        wanted = {"seed": seed, **({"queries": options.queries} if options.queries is not None else {})}
        await open_link(page, link(url, nav.ATTACK, **wanted), "Attack")
        caption = await page.locator('[data-testid="stSidebar"]').get_by_text(IMAGE_CAPTION).first.inner_text()
        out["image"] = int(IMAGE_CAPTION.search(caption)[1])
        await expect_settings(page, ATTACK_INPUTS, wanted)
        out["attack"] = await press_and_time(page, "Run the attack", ATTACK_DONE, "The attack")
        out["attack"]["result"] = {
            "l2": await metric(page, "l2 norm of delta"),
            "queries": await metric(page, "Queries used"),
            "after": await metric(page, "Prediction after"),
        }
        out["attack"]["used"] = {"seed": int(await metric(page, "Seed")), "queries": await attack_budget(page)}

        wanted = {"seed": seed, **({"n": options.n} if options.n is not None else {})}
        image = f"cifar10-test:{out['image']}"
        await open_link(page, link(url, nav.CERTIFY, image=image, **wanted), "Certify")
        await expect_settings(page, CERTIFY_INPUTS, wanted)
        out["settings"] = {
            name: await page.get_by_label(label, exact=True).input_value() for name, label in CERTIFY_INPUTS.items()
        }
        out["certify"] = await press_and_time(page, "Certify", CERTIFY_DONE, "Certification")
        lines = await page.locator("li").all_inner_texts()
        found = [m for m in (CERT_LINE.match(t) for t in lines) if m]
        out["certify"]["result"] = {m[1]: {"prediction": m[3] or "ABSTAIN", "p_lower": m[4], "R": m[5]} for m in found}
    except Exception as exc:  # reported per session; the others go on
        out["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        print(f"session {session}: {out['error']}", file=sys.stderr, flush=True)  # now, not only at the end
    finally:
        await context.close()
    out["ended at s"] = round(time.monotonic() - t0, 1)
    return out


async def warm_up(browser, url: str) -> None:
    """The teacher opens the app before class: the server's imports and its first worker are ready."""
    context = await browser.new_context()
    page = await context.new_page()
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    await page.goto(url)
    await page.locator('[data-testid="stSidebar"]').get_by_text(IMAGE_CAPTION).first.wait_for()
    await idle(page)
    await context.close()
    await asyncio.sleep(5)  # the worker's imports


async def classroom(url: str, sessions: int, spread: float, seed: int, options: Options, server_pid: int) -> dict:
    from playwright.async_api import async_playwright

    rng = random.Random(seed)
    delays = sorted(rng.uniform(0, spread) for _ in range(sessions))
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS)
        try:
            await warm_up(browser, url)
            before = memory(server_pid)
            peaks = MemoryPeaks(server_pid)
            peaks.start()
            t0 = time.monotonic()
            results = await asyncio.gather(
                *(student(browser, url, i, delay, options, t0) for i, delay in enumerate(delays))
            )
            wall = time.monotonic() - t0
            peaks.stop.set()
            after = memory(server_pid)
        finally:
            await browser.close()
    return {"sessions": list(results), "wall s": wall, "memory": {"before": before, "peak": peaks.peak, "after": after}}


# ---------------------------------------------------------------- the library, in its own process
def library(cases: list[dict]) -> list[dict]:
    """Each distinct case's attack and certificates through the library, formatted as the pages print them."""
    import torch
    from PIL import Image

    from dsmooth_core import bundled, certify
    from dsmooth_core.attacks import PRESETS, square_then_fgsm
    from dsmooth_core.backends import inference_model
    from dsmooth_core.data import load_cifar10
    from dsmooth_core.device import generator_for
    from dsmooth_core.models import DEFAULT_MODEL, load_model, prepare_image
    from dsmooth_core.noise import make_noise
    from dsmooth_core.profiles import ThreatProfile

    # the forward the app's jobs run (DSMOOTH_BACKEND, else auto), for the attack's queries and the certificates
    model, _ = inference_model(load_model(DEFAULT_MODEL))
    test = load_cifar10("test", download=False)
    classes = test.classes
    covariance = ThreatProfile.load(bundled.PROFILE).covariance  # the app's default profile
    out = []
    for case in cases:
        x = prepare_image(Image.fromarray(test.images[case["image"]]), model.info)
        label = torch.tensor([int(test.labels[case["image"]])])
        config = PRESETS[case["preset"]]
        if case["queries"] is not None:
            config = dataclasses.replace(config, n_queries=case["queries"])
        attacked = square_then_fgsm(model, x.unsqueeze(0), label, config, generator=generator_for(model, case["seed"]))
        with torch.no_grad():
            after = int(model(attacked.adversarial).argmax(1)[0])
        s = case["settings"]
        certificates = {}
        for name, method in METHODS:
            noise = make_noise(method, float(s["sigma"]), covariance if method == "dsmooth" else None)
            gen = generator_for(model, case["seed"])
            cert = certify(model, x, noise, int(s["n0"]), int(s["n"]), float(s["alpha"]), int(s["batch"]), gen)
            prediction = "ABSTAIN" if cert.abstained else classes[cert.prediction]
            certificates[name] = {"prediction": prediction, "p_lower": f"{cert.p_lower:.4f}", "R": f"{cert.radius:.4g}"}
        out.append(
            {
                "attack": {
                    "l2": f"{float(attacked.l2[0]):.4f}",
                    "queries": f"{int(attacked.queries[0]):,}",
                    "after": classes[after],
                },
                "certify": certificates,
            }
        )
    return out


def run_library(cases: list[dict]) -> list[dict]:
    """:func:`library` in a fresh process, after the run (it does not compete with the sessions)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, __file__, "--library", json.dumps(cases)]
    out = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def case_of(session: dict, options: Options) -> dict:
    """The library's inputs for a session: the settings its links asked for, the page's defaults for the rest."""
    settings = {**session["settings"], "seed": str(session["seed"])}
    if options.n is not None:
        settings["n"] = str(options.n)
    return {
        "image": session["image"],
        "preset": ATTACK_PRESET,
        "queries": options.queries,
        "seed": session["seed"],
        "settings": settings,
    }


def other_settings(done: list[dict], options: Options) -> list[str]:
    """Sessions whose jobs ran with other settings than their links asked for (or than the other sessions')."""
    from dsmooth_core.attacks import PRESETS

    wrong = []
    for session in done:
        want = {"seed": session["seed"], "queries": options.queries or PRESETS[ATTACK_PRESET].n_queries}
        if session["attack"]["used"] != want:
            wrong.append(f"session {session['session']} attack ran with {session['attack']['used']}, not {want}")
    defaults = {json.dumps(case_of(s, options)["settings"] | {"seed": None}, sort_keys=True) for s in done}
    if len(defaults) > 1:
        wrong.append(f"the sessions' certify settings differ beyond their seeds: {sorted(defaults)}")
    return wrong


def check(sessions: list[dict], options: Options) -> list[str]:
    """Compare every finished session with the library (one library run per distinct case); the mismatches.

    The library runs with the settings each session's links asked for, so a session whose job ran with
    other settings (a lost value) gives another result, and :func:`other_settings` names it directly.
    """
    done = [s for s in sessions if "error" not in s]
    wrong = other_settings(done, options)
    cases: list[dict] = []
    for session in done:
        if case_of(session, options) not in cases:
            cases.append(case_of(session, options))
    expected = run_library(cases) if cases else []
    for session in done:
        want = expected[cases.index(case_of(session, options))]
        for job in ("attack", "certify"):
            session[job]["correct"] = session[job]["result"] == want[job]
            if not session[job]["correct"]:
                wrong.append(f"session {session['session']} {job}: app {session[job]['result']}, library {want[job]}")
    return wrong


# ---------------------------------------------------------------- figures
def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"median": 0.0, "p95": 0.0, "max": 0.0}
    return {
        "median": round(statistics.median(values), 2),
        "p95": round(percentile(values, 95), 2),
        "max": round(max(values), 2),
    }


def job_rows(sessions: list[dict]) -> list[dict[str, object]]:
    """Per job kind, from the flat session rows (:func:`flat`): how each was served, waits and run times.

    The wait is over the jobs that went through the queue (computed, or given an equal job's result when
    their turn came); a result the cache had at the click started no job, and the time until the page
    drew it is given apart (it is the server's and browsers' rendering under load, not the queue).
    """
    rows = []
    sessions = [_served(s) for s in sessions]
    for job in ("attack", "certify"):
        seen = [s for s in sessions if s.get(f"{job} how")]
        queued = [s for s in seen if s[f"{job} how"] != "cached"]
        waits = summary([s[f"{job} wait s"] for s in queued])
        runs = summary([s[f"{job} run s"] for s in seen if s[f"{job} how"] == "computed"])
        drawn = summary([s[f"{job} wait s"] for s in seen if s[f"{job} how"] == "cached"])
        rows.append(
            {
                "job": job,
                "finished": len(seen),
                "correct": sum(bool(s.get(f"{job} correct")) for s in seen),
                "computed": sum(s[f"{job} how"] == "computed" for s in seen),
                "equal job's result": sum(s[f"{job} how"] == "equal job's result" for s in seen),
                "cached at the click": len(seen) - len(queued),
                "wait median s": waits["median"],
                "wait p95 s": waits["p95"],
                "wait max s": waits["max"],
                "run median s": runs["median"],
                "run max s": runs["max"],
                "cached: drawn after, median s": drawn["median"],
                "cached: drawn after, max s": drawn["max"],
                "most jobs ahead shown": max(
                    (max(s[f"{job} places"]) - 1 for s in queued if s[f"{job} places"]), default=0
                ),
            }
        )
    return rows


def _served(session: dict) -> dict:
    """How each job was served, from its run time: "done in 0.0 s" is an equal job's result.

    Runs started before 07:20 UTC on 2026-12-06 called a job whose running frame the page never drew an equal
    job's result, with its wait up to its result (it is computed, and started its run time earlier), and
    read a certify cached at the click as an equal job's result when the attack's "done in" caption was
    still drawn (its run time is the attack's).
    """
    fixed = dict(session)
    for job in ("attack", "certify"):
        if fixed.get(f"{job} how") != "equal job's result" or not fixed[f"{job} run s"]:
            continue
        if job == "certify" and fixed["certify run s"] == fixed.get("attack run s"):
            fixed["certify how"] = "cached"  # the attack's caption, still drawn in the run that delivered it
        else:
            fixed[f"{job} how"] = "computed"
            fixed[f"{job} wait s"] = round(max(fixed[f"{job} wait s"] - fixed[f"{job} run s"], 0.0), 2)
    return fixed


def summarize(path: Path) -> list[dict[str, object]]:
    """The jobs table of a results file, computed again from its sessions table."""
    return job_rows(json.loads(path.read_text())["tables"]["sessions"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=30, help="browser sessions (students)")
    parser.add_argument("--slots", type=int, default=None, help="DSMOOTH_JOB_SLOTS for the server (default: its own)")
    parser.add_argument("--spread", type=float, default=60.0, help="seconds over which the sessions start")
    parser.add_argument("--seed", type=int, default=0, help="seed of the start times")
    parser.add_argument("--queries", type=int, default=None, help="set the attack's Square queries (default: app's)")
    parser.add_argument("--n", type=int, default=None, help="set certify's n (default: the app's)")
    parser.add_argument("--distinct-seeds", action="store_true", help="session i uses seed i (all jobs real work)")
    parser.add_argument("--library", help=argparse.SUPPRESS)
    parser.add_argument("--summary-of", type=Path, help="print the jobs table of a results file from its sessions")
    add_results_option(parser)
    args = parser.parse_args()
    if args.library:
        print(json.dumps(library(json.loads(args.library))))
        return
    if args.summary_of:
        print(json.dumps(summarize(args.summary_of), indent=1))
        return
    if not CHROMIUM.exists():
        sys.exit(f"needs Chromium at {CHROMIUM}")
    if args.slots is not None:
        os.environ["DSMOOTH_JOB_SLOTS"] = str(args.slots)  # the server inherits it (and the results file names it)
    options = Options(args.queries, args.n, args.distinct_seeds)
    port = free_port()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        server = start_server(port, Path(folder) / "server.log")
        try:
            run = asyncio.run(
                classroom(f"http://127.0.0.1:{port}", args.sessions, args.spread, args.seed, options, server.pid)
            )
        finally:
            stop_server(server)
    load_after = os.getloadavg()
    sessions = run["sessions"]
    errors = [f"session {s['session']}: {s['error']}" for s in sessions if "error" in s]
    wrong = check(sessions, options)
    flat_sessions = [flat(s) for s in sessions]
    rows = job_rows(flat_sessions)
    correct = not errors and not wrong and all(r["correct"] == r["finished"] == args.sessions for r in rows)
    slots = os.environ.get("DSMOOTH_JOB_SLOTS", "default")
    for row in rows:
        print(json.dumps(row))
    memory_rows = [{"when": when, **figures} for when, figures in run["memory"].items()]
    for row in memory_rows:
        print(json.dumps(row))
    load = f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after (1 min), {os.cpu_count()} cores"
    print(f"{args.sessions} sessions, slots {slots}: wall {run['wall s']:.0f} s; {load}")
    print(f"all {2 * args.sessions} results equal to the library's: {correct}")
    for line in errors + wrong:
        print(line)
    settings = {
        "sessions": args.sessions,
        "slots": slots,
        "spread s": args.spread,
        "start-time seed": args.seed,
        "attack queries": args.queries or "app default",
        "certify n": args.n or "app default",
        "seeds": "session i: seed i" if args.distinct_seeds else "the app's default (0) in every session",
        "client": "Chromium contexts in one headless browser (Playwright async)",
    }
    totals = [
        {
            "wall s": round(run["wall s"], 1),
            "all results equal the library's": correct,
            "errors": len(errors),
            "wrong": len(wrong),
            "load average before": round(load_before[0], 2),
            "load average after": round(load_after[0], 2),
        }
    ]
    tables = {"jobs": rows, "total": totals, "memory (PSS)": memory_rows, "sessions": flat_sessions}
    notes = [
        "wait: in the page, from the click to the first frame of the job panel showing the job running "
        "(MutationObserver), so it includes the click's rerun and the panel's redraw; a job served by an "
        "equal job's result when its turn comes does not run, and its wait is until its result is drawn; "
        "a result cached at the click starts no job: the time until it is drawn is given apart",
        "run: the panel's 'done in X s', the scheduler's start-to-end time of the job",
        "library results computed once per distinct input (image, preset, seed, settings) in a fresh process",
        *errors,
        *wrong,
    ]
    write_result(args.results, "bench_classroom", settings, tables, notes)
    if not correct:
        sys.exit(f"FAILED: not all {2 * args.sessions} results equal the library's for the sessions' own settings")


def flat(session: dict) -> dict[str, object]:
    row: dict[str, object] = {"session": session["session"], "opened at s": session["opened at s"]}
    for job in ("attack", "certify"):
        if job in session:
            for key in ("wait s", "run s", "how", "places", "correct"):
                row[f"{job} {key}"] = session[job].get(key)
    row["ended at s"] = session["ended at s"]
    row["error"] = session.get("error", "")
    return row


if __name__ == "__main__":
    main()
