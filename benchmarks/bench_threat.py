"""Cost of building a threat profile: attack throughput and covariance fit time and memory.

Prints, for a ResNet-20 (untrained weights) on CIFAR-sized images, the attack's model queries per
second next to the raw batched forward passes per second, then the time and peak resident memory of
``LowRankCovariance.fit`` at CIFAR size and at ImageNet size (synthetic perturbations), each fit in
its own process so its peak memory is its own. Targets on CPU: CIFAR fit < 5 s; ImageNet-size fit
< 30 s and < 4 GB. Writes the figures to ``benchmarks/results/bench_threat-<time>.json``.
Run: ``PYTHONPATH=. .venv/bin/python benchmarks/bench_threat.py [--images 64] [--queries 100] [--device cpu]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from bench_results import Rows, add_results_option, write_result

from dsmooth_core import LowRankCovariance
from dsmooth_core.attacks import PRESETS, square_then_fgsm
from dsmooth_core.models import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD, ModelInfo, build_architecture, wrap

# (label, N, shape, k, seconds target, GiB target or None)
FITS = (
    ("CIFAR-10", 1000, (3, 32, 32), 100, 5.0, None),
    ("ImageNet", 1000, (3, 224, 224), 500, 30.0, 4.0),
)
GIB = 2**30


def resnet20(device: torch.device) -> torch.nn.Module:
    info = ModelInfo(
        "resnet20", "cifar10", (3, 32, 32), CIFAR10_CLASSES, "untrained", mean=CIFAR10_MEAN, std=CIFAR10_STD
    )
    return wrap(build_architecture("resnet20"), info).to(device)


def attack_throughput(images: int, queries: int, device: torch.device) -> Rows:
    """Queries/s of Square + FGSM against forwards/s of the same model on the same batch."""
    model = resnet20(device)
    x = torch.rand(images, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        y = model(x).argmax(1)  # the model's own labels, so every image starts correctly classified
        model(x)  # warm-up
        start = time.perf_counter()
        for _ in range(10):
            model(x)
        forwards = 10 * images / (time.perf_counter() - start)
    config = replace(PRESETS["conventional"], n_queries=queries)
    start = time.perf_counter()
    result = square_then_fgsm(model, x, y, config, generator=torch.Generator().manual_seed(0))
    seconds = time.perf_counter() - start
    spent = int(result.queries.sum())
    print(f"attack: {images} images, budget {queries} queries, eps_inf {config.eps_inf:.4f}, device {device}")
    print(f"  fooled {int(result.success.sum())}/{images}, {spent} queries in {seconds:.2f} s")
    print(f"  attack {spent / seconds:,.0f} queries/s; raw forward {forwards:,.0f} images/s (batch {images})")
    print(f"  ratio {spent / seconds / forwards:.2f} (queries include FGSM's forward+backward)")
    return [
        {
            "images": images,
            "query budget": queries,
            "eps_inf": round(config.eps_inf, 4),
            "fooled": int(result.success.sum()),
            "queries spent": spent,
            "seconds": round(seconds, 2),
            "queries/s": round(spent / seconds),
            "raw forward images/s": round(forwards),
        }
    ]


def fit_in_subprocess(n: int, shape: tuple[int, ...], k: int) -> dict[str, float]:
    """Run one fit in a fresh interpreter (same thread count), so its peak RSS is its own."""
    command = [sys.executable, str(Path(__file__).resolve()), "--fit-worker", json.dumps([n, list(shape), k])]
    command += ["--threads", str(torch.get_num_threads())]
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def fit_worker(spec: str) -> None:
    """Child side: synthetic perturbations, one timed fit, then the RSS before and at its peak."""
    n, shape, k = json.loads(spec)
    g = torch.Generator().manual_seed(0)
    data = torch.randn(n, *shape, generator=g).mul_(torch.rand(*shape, generator=g))
    before, cpu_before = _peak_rss(), time.process_time()
    start = time.perf_counter()
    LowRankCovariance.fit(data, k)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_before
    print(
        json.dumps(
            {"seconds": seconds, "cpu": cpu, "rss_before": before, "peak_rss": _peak_rss(), "input": data.nbytes}
        )
    )


def _peak_rss() -> int:
    """High-water mark of this process's resident memory in bytes (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def covariance_fits() -> Rows:
    rows: Rows = []
    for label, n, shape, k, seconds_target, gib_target in FITS:
        d = torch.Size(shape).numel()
        m = fit_in_subprocess(n, shape, k)
        peak = m["peak_rss"] / GIB
        print(
            f"fit {label:8s} N={n} d={d} k={k}: {m['seconds']:.2f} s (target < {seconds_target:g} s) "
            f"{'OK' if m['seconds'] < seconds_target else 'MISSED'}; CPU time {m['cpu']:.2f} s over all threads"
        )
        memory = (
            f"  peak RSS {peak:.2f} GiB (input {m['input'] / GIB:.2f} GiB, "
            f"RSS before the fit {m['rss_before'] / GIB:.2f} GiB)"
        )
        if gib_target is not None:
            memory += f" (target < {gib_target:g} GiB) {'OK' if peak < gib_target else 'MISSED'}"
        print(memory)
        rows.append(
            {
                "size": label,
                "N": n,
                "d": d,
                "k": k,
                "seconds": round(m["seconds"], 2),
                "target s": f"< {seconds_target:g}",
                "CPU s (all threads)": round(m["cpu"], 2),
                "peak RSS GiB": round(peak, 2),
                "input GiB": round(m["input"] / GIB, 2),
                "target GiB": f"< {gib_target:g}" if gib_target is not None else "",
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--skip-attack", action="store_true")
    parser.add_argument("--fit-worker", help=argparse.SUPPRESS)
    add_results_option(parser)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.fit_worker:
        fit_worker(args.fit_worker)
        return
    print(f"threads {torch.get_num_threads()}")
    tables: dict[str, Rows] = {}
    if not args.skip_attack:
        tables["attack (Square + FGSM, conventional preset)"] = attack_throughput(
            args.images, args.queries, torch.device(args.device)
        )
    tables["covariance fit (synthetic perturbations, each fit in its own process)"] = covariance_fits()
    settings = {"threads": torch.get_num_threads(), "device": args.device, "model": "ResNet-20, untrained weights"}
    notes = ["attack queries include FGSM's forward and backward"]
    write_result(args.results, "bench_threat", settings, tables, notes)


if __name__ == "__main__":
    main()
