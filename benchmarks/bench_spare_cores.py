"""Spare cores: what a low-priority helper gives a certification, and what it takes from other work.

The app's certify job (bundled ResNet-20, DSmooth, RandSmooth and LSmooth, n0 = 100, n = 1,000,
batch 200) on ONNX Runtime with the intra-op threads the lab's rule gives it, once alone and once with
the cores that rule leaves free lent to it (``dsmooth_core.backends.spare_cores``), in three settings:
a quiet machine; another process busy on one core all the time (a browser that never rests);
another process busy 20 ms of every 40 on one core (a browser that redraws now and then); and two
processes busy all the time (every core taken: the helper gets no time, and must not hold the job
up). Prints the certification's median seconds, and the other processes' work per second against
their rate alone (the share of their work the helper took). Rounds of each setting alternate lent and not lent.

``--app`` measures what the user meets instead: two app servers, ``DSMOOTH_SPARE_CORES=off`` and ``on``,
driven in Chromium (as ``bench_app.py``). In each round each server certifies the three methods with
n = 20,000 while the session switches between the Attack and Noise explorer pages; it reports the
certification's time from the click to the drawn result and the page switches' times during it (from
the click on a page's link until its run has ended and its charts are drawn).
Writes ``benchmarks/results/bench_spare_cores-<time>.json``.
Run: ``PYTHONPATH=. .venv/bin/python benchmarks/bench_spare_cores.py [--rounds 5] [--app]``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_results import add_results_option, write_result

from dsmooth_core import bundled, certify
from dsmooth_core.backends import forward_name, inference_model
from dsmooth_core.backends.spare_cores import spare_cores, supported
from dsmooth_core.models import DEFAULT_MODEL, load_model
from dsmooth_core.noise import make_noise
from dsmooth_core.profiles import ThreatProfile
from dsmooth_lab_ui import threads

N0, N, ALPHA, SIGMA, BATCH = 100, 1000, 0.001, 0.25, 200
METHODS = ("dsmooth", "randsmooth", "lsmooth")
APP_N = 20_000  # a job of several seconds, long enough for the page switches made during it
APP_SWITCHES = ("Attack", "Noise explorer") * 3
# The other process: busy for ON ms, then asleep for OFF ms, until its stdin closes; prints loops per second.
OTHER = """
import sys, threading, time
on, off = float(sys.argv[1]) / 1000, float(sys.argv[2]) / 1000
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
loops, start = 0, time.perf_counter()
while not stop.is_set():
    until = time.perf_counter() + on
    while time.perf_counter() < until:
        loops += 1
    if off:
        time.sleep(off)
print(loops / (time.perf_counter() - start))
"""
# What else runs: (busy ms, asleep ms, how many such processes), or nothing.
SETTINGS = {
    "quiet": None,
    "another process busy on one core": (1000, 0, 1),
    "another process busy 20 ms of 40": (20, 20, 1),
    "two processes busy on both cores": (1000, 0, 2),
}


def start_other(duty: tuple[int, int, int]) -> list[subprocess.Popen]:
    on, off, count = duty
    command = [sys.executable, "-c", OTHER, str(on), str(off)]
    return [subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(count)]


def stop_other(others: list[subprocess.Popen]) -> float:
    """The other processes' work per second, summed."""
    return sum(float(other.communicate("", timeout=30)[0]) for other in others)


def other_alone(duty: tuple[int, int, int], seconds: float) -> float:
    others = start_other(duty)
    time.sleep(seconds)
    return stop_other(others)


# Resolves when the script run a click starts has ended: the first change to "notRunning" after this call.
# The job panel's fragment runs again and again while a job runs, so "not running" alone would wait for a
# gap between two of those runs, which may come seconds after the page is drawn.
RUN_ENDED = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  window.__runEnded = new Promise((resolve) => {
    const observer = new MutationObserver(() => {
      if (app.getAttribute('data-test-script-state') === 'notRunning') { observer.disconnect(); resolve(true); }
    });
    observer.observe(app, {attributes: true, attributeFilter: ['data-test-script-state']});
  });
}"""
CHARTS_DRAWN = """() => [...document.querySelectorAll('[data-testid="stPlotlyChart"]')].every(
  (chart) => chart.querySelector('.main-svg') !== null)"""


def switch_during_job(page, title: str) -> float:
    """Seconds from clicking a page's link until its run has ended and its charts are drawn (a job running)."""
    page.evaluate(RUN_ENDED)
    start = time.perf_counter()
    page.get_by_role("link", name=title, exact=True).first.click()
    page.get_by_role("heading", level=1).filter(has_text=title.split(" ")[0]).wait_for(timeout=120_000)
    page.evaluate("() => window.__runEnded")
    page.wait_for_function(CHARTS_DRAWN, polling=20)
    return time.perf_counter() - start


def in_the_app(rounds: int, results: Path) -> None:
    """Certify with n = APP_N in two servers, spare cores off and on, switching pages while each job runs."""
    import bench_app as harness
    from playwright.sync_api import sync_playwright

    modes = ("off", "on")
    certify_s: dict[str, list[float]] = {mode: [] for mode in modes}
    switch_s: dict[str, list[float]] = {mode: [] for mode in modes}
    with tempfile.TemporaryDirectory() as folder, sync_playwright() as playwright:
        servers, pages = {}, {}
        browser = playwright.chromium.launch(
            executable_path=str(harness.CHROMIUM), headless=True, args=harness.LAUNCH_ARGS
        )
        try:
            for mode in modes:
                port = harness.free_port()
                servers[mode] = harness.start_server(port, Path(folder) / f"{mode}.log", env={threads.SPARE_ENV: mode})
                pages[mode] = harness.open_session(browser, f"http://127.0.0.1:{port}")
                harness.switch(pages[mode], "Certify")
                harness.set_number(pages[mode], "n (estimation draws)", APP_N)
            for seed in range(1, rounds + 1):
                for mode in modes:
                    page = pages[mode]
                    harness.switch(page, "Certify")
                    harness.set_number(page, "Seed", seed)
                    harness.watch(page)
                    start = time.perf_counter()
                    page.get_by_role("button", name="Certify", exact=True).click()
                    page.locator(".st-key-dsl_job_panel").wait_for()
                    for title in APP_SWITCHES:
                        switch_s[mode].append(switch_during_job(page, title))
                    harness.finished(page)
                    certify_s[mode].append(time.perf_counter() - start)
                    print(
                        f"round {seed}, spare cores {mode}: certify {certify_s[mode][-1]:.2f} s, switches "
                        f"{[round(t, 2) for t in switch_s[mode][-len(APP_SWITCHES) :]]}",
                        flush=True,
                    )
        finally:
            browser.close()
            for server in servers.values():
                harness.stop_server(server)
    rows = [
        {
            "DSMOOTH_SPARE_CORES": mode,
            "certify s (click to result), median": round(statistics.median(certify_s[mode]), 2),
            "page switch during the job, median s": round(statistics.median(switch_s[mode]), 3),
            "max s": round(max(switch_s[mode]), 3),
            "switches": len(switch_s[mode]),
        }
        for mode in modes
    ]
    for row in rows:
        print(row)
    settings = {
        "work": f"DSmooth, RandSmooth and LSmooth, n0 = {N0}, n = {APP_N}, batch {BATCH}, in the app (Chromium)",
        "during each job": f"page switches: {', '.join(APP_SWITCHES)}",
        "rounds": f"{rounds}, the two servers alternating",
    }
    write_result(results, "bench_spare_cores", settings, {"in the app: certify and page switches during it": rows})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--app", action="store_true", help="measure in the app, in Chromium (see above)")
    add_results_option(parser)
    args = parser.parse_args()
    if args.app:
        in_the_app(args.rounds, args.results)
        return
    if not supported():
        sys.exit("spare cores are lent on Linux only")
    thread_count = threads.for_batch(BATCH)
    lent = threads.spare(thread_count)
    if lent == 0:
        sys.exit(f"no spare core: {threads.usable_cores()} core(s), {thread_count} thread(s) for the job")
    torch.set_num_threads(thread_count)
    model, note = inference_model(load_model(DEFAULT_MODEL))
    print(note)
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    covariance = ThreatProfile.load(bundled.PROFILE).covariance
    noises = [make_noise(m, SIGMA, covariance if m == "dsmooth" else None) for m in METHODS]

    def job(count: int) -> tuple[float, list[tuple[int, ...]]]:
        start = time.perf_counter()
        with spare_cores(count):
            votes = [
                certify(model, image, noise, N0, N, ALPHA, BATCH, torch.Generator().manual_seed(1)).counts_estimation
                for noise in noises
            ]
        return time.perf_counter() - start, votes

    job(lent)  # warm-up: sessions and the helper threads
    rows, same_votes = [], True
    for setting, duty in SETTINGS.items():
        seconds: dict[int, list[float]] = {0: [], lent: []}
        others: dict[int, list[float]] = {0: [], lent: []}
        for _ in range(args.rounds):
            votes = {}
            for count in (0, lent):
                other = start_other(duty) if duty else None
                time.sleep(0.2)  # the other process is running when the job starts
                took, votes[count] = job(count)
                if other is not None:
                    others[count].append(stop_other(other))
                seconds[count].append(took)
            same_votes &= votes[0] == votes[lent]
        row: dict[str, object] = {
            "setting": setting,
            "threads": thread_count,
            "certify s, alone": round(statistics.median(seconds[0]), 3),
            f"certify s, {lent} spare core(s) lent": round(statistics.median(seconds[lent]), 3),
            "speed-up": round(statistics.median(seconds[0]) / statistics.median(seconds[lent]), 2),
        }
        if duty:
            alone = other_alone(duty, statistics.median(seconds[0]))
            row["other processes' work, job alone / others alone"] = round(statistics.median(others[0]) / alone, 3)
            row["other processes' work, job lent / others alone"] = round(statistics.median(others[lent]) / alone, 3)
        rows.append(row)
        print(row, flush=True)
    print(f"votes equal with and without the helper: {same_votes}")
    settings = {
        "model": f"bundled ResNet-20 on {forward_name(model)}",
        "work": f"DSmooth, RandSmooth and LSmooth, n0 = {N0}, n = {N}, batch {BATCH}, sigma {SIGMA}",
        "rounds": f"median of {args.rounds}, lent and not lent alternating",
        "votes equal with and without the helper": same_votes,
    }
    write_result(args.results, "bench_spare_cores", settings, {"certify with and without spare cores": rows}, [note])


if __name__ == "__main__":
    main()
