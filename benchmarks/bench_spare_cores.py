"""Spare cores: what a low-priority helper gives a certification, and what it takes from other work.

The app's certify job (bundled ResNet-20, DSmooth, RandSmooth and LSmooth, n0 = 100, n = 1,000,
batch 200) on ONNX Runtime with the intra-op threads the lab's rule gives it, once alone and once with
the cores that rule leaves free lent to it (``dsmooth_core.backends.spare_cores``), in three settings:
a quiet machine; another process busy on one core all the time (a browser that never rests); and
another process busy 20 ms of every 40 on one core (a browser that redraws now and then). Prints the
certification's median seconds, and the other process's work per second against its rate alone
(the share of its work the helper took). Rounds of each setting alternate lent and not lent.
Writes ``benchmarks/results/bench_spare_cores-<time>.json``.
Run: ``PYTHONPATH=. .venv/bin/python benchmarks/bench_spare_cores.py [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

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
SETTINGS = {"quiet": None, "another process busy on one core": (1000, 0), "another process busy 20 ms of 40": (20, 20)}


def start_other(duty: tuple[int, int]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", OTHER, *map(str, duty)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )


def stop_other(other: subprocess.Popen) -> float:
    out, _ = other.communicate("", timeout=30)
    return float(out)


def other_alone(duty: tuple[int, int], seconds: float) -> float:
    other = start_other(duty)
    time.sleep(seconds)
    return stop_other(other)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    add_results_option(parser)
    args = parser.parse_args()
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
            row["other process's work, job alone / other alone"] = round(statistics.median(others[0]) / alone, 3)
            row["other process's work, job lent / other alone"] = round(statistics.median(others[lent]) / alone, 3)
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
