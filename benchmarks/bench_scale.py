"""The Ray engine against the in-process one: the same experiment, its records, and its wall time.

Certifies the same images (default 16, n = 1,000, all three methods, a ResNet-20) in this process
with one thread, then on a local Ray instance with 1 worker and with 2 workers (one CPU each). Prints
each time, Ray's overhead on 1 worker (target <= 10 %) and its speed-up on 2, and fails if any record
differs from the in-process one (wall-clock seconds aside). Each engine first runs a tiny warm-up,
timed apart for Ray: it starts the workers and imports torch in them, a cost paid once per cluster.
Writes the figures to ``benchmarks/results/bench_scale-<time>.json``.
Run: ``OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python benchmarks/bench_scale.py [--images 16] [--n 1000]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import ray
import torch
from bench_results import add_results_option, write_result

from dsmooth_core import LowRankCovariance
from dsmooth_core.attacks import AttackConfig
from dsmooth_core.data import ImageSet
from dsmooth_core.experiments import ExperimentSpec, RecordStore, read_records, run_experiment
from dsmooth_core.models import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD, ModelInfo, build_architecture, wrap
from dsmooth_core.profiles import ThreatProfile
from dsmooth_core.scale import RayOptions, connect, run_experiment_on_ray


def inputs(images: int, k: int) -> tuple[torch.nn.Module, ImageSet, ThreatProfile]:
    """An untrained ResNet-20 from a fixed seed, random images, and a profile fitted to random perturbations."""
    torch.manual_seed(0)
    info = ModelInfo(
        "resnet20", "cifar10", (3, 32, 32), CIFAR10_CLASSES, "untrained", mean=CIFAR10_MEAN, std=CIFAR10_STD
    )
    model = wrap(build_architecture("resnet20"), info)
    rng = np.random.default_rng(0)
    data = ImageSet(
        rng.integers(0, 256, size=(images, 32, 32, 3), dtype=np.uint8),
        rng.integers(0, 10, size=images).astype(np.int64),
        CIFAR10_CLASSES,
    )
    g = torch.Generator().manual_seed(0)
    covariance = LowRankCovariance.fit(torch.randn(200, 3, 32, 32, generator=g) * torch.rand(3, 32, 32, generator=g), k)
    profile = ThreatProfile(
        covariance, info.name, model.info.weights_hash, "cifar10", "train", (), {}, "nonzero", 200, 200, 0
    )
    return model, data, profile


def results(path: Path) -> list[dict]:
    return sorted(({k: v for k, v in r.items() if k != "seconds"} for r in read_records(path)), key=lambda r: r["key"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--n0", type=int, default=100)
    parser.add_argument("--queries", type=int, default=100, help="Square queries per image")
    parser.add_argument("--batch", type=int, default=400)
    parser.add_argument("--chunk-size", type=int, default=4)
    add_results_option(parser)
    args = parser.parse_args()
    torch.set_num_threads(1)  # as each one-CPU Ray worker
    model, data, profile = inputs(args.images, k=10)
    spec = ExperimentSpec(
        ks=(10,),
        n0=args.n0,
        ns=(args.n,),
        attack_name="bench",
        attack=AttackConfig(eps_inf=0.1, n_queries=args.queries),
    )
    indices = list(range(args.images))
    folder = Path(tempfile.mkdtemp(prefix="bench_scale_"))

    def run(name: str, engine, chosen=indices, grid=spec) -> float:
        start = time.perf_counter()
        engine(model, data, chosen, profile, grid, RecordStore(folder / f"{name}.jsonl"), batch_size=args.batch)
        return time.perf_counter() - start

    warm_up = dataclasses.replace(spec, n0=10, ns=(10,))
    run("warm-up in-process", run_experiment, indices[:2], warm_up)  # first-call costs, as the workers' warm-up
    times = {"in-process": run("in-process", run_experiment)}
    warm_ups: dict[str, float] = {}
    for workers in (1, 2):
        connect(None, num_cpus=workers)
        on_ray = lambda *a, **k: run_experiment_on_ray(*a, options=RayOptions(chunk_size=args.chunk_size), **k)  # noqa: E731
        warm = run(f"warm-up {workers}", on_ray, indices[: 2 * workers], warm_up)
        times[f"Ray, {workers} worker(s)"] = run(f"ray{workers}", on_ray)
        warm_ups[f"Ray, {workers} worker(s)"] = warm
        print(f"Ray with {workers} worker(s): warm-up (start workers, import torch) {warm:.1f} s")
        ray.shutdown()

    reference = results(folder / "in-process.jsonl")
    same = all(results(folder / f"ray{w}.jsonl") == reference for w in (1, 2))
    print(
        f"{args.images} images x {len(spec.settings(profile.covariance.k))} settings, n0 {args.n0}, n {args.n}, "
        f"{args.queries} queries, batch {args.batch}, chunks of {args.chunk_size}, {len(reference)} records"
    )
    for name, seconds in times.items():
        print(f"  {name:20s} {seconds:7.1f} s  ({seconds / args.images:.2f} s/image)")
    one, two = times["Ray, 1 worker(s)"], times["Ray, 2 worker(s)"]
    print(f"Ray overhead on 1 worker: {one / times['in-process'] - 1:+.1%} (target <= +10%)")
    print(f"speed-up on 2 workers over 1: {one / two:.2f}x; over in-process: {times['in-process'] / two:.2f}x")
    print(f"records identical across engines: {same}")
    rows = [
        {
            "engine": name,
            "seconds": round(seconds, 1),
            "s/image": round(seconds / args.images, 2),
            "warm-up s (once per cluster)": round(warm_ups[name], 1) if name in warm_ups else "",
        }
        for name, seconds in times.items()
    ]
    summary = [
        {
            "Ray overhead on 1 worker": f"{one / times['in-process'] - 1:+.1%}",
            "target": "<= +10%",
            "speed-up, 2 workers over 1": f"{one / two:.2f}x",
            "speed-up, 2 workers over in-process": f"{times['in-process'] / two:.2f}x",
            "records identical across engines": same,
        }
    ]
    settings = {
        "images": args.images,
        "settings per image": len(spec.settings(profile.covariance.k)),
        "records": len(reference),
        "n0": args.n0,
        "n": args.n,
        "queries": args.queries,
        "batch": args.batch,
        "chunk size": args.chunk_size,
        "model": "ResNet-20, untrained weights, random images",
    }
    write_result(args.results, "bench_scale", settings, {"wall time per engine": rows, "summary": summary})
    shutil.rmtree(folder)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
