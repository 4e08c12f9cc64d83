"""Throughput of ``certify`` against the raw batched forward pass of the same model.

For a ResNet-20 on CIFAR-10-sized inputs, prints samples per second for each method and two ratios:
to the bare forward of the model as given (contiguous) and to the bare forward in the best layout
(``channels_last``, the layout ``certify`` runs in, ``dsmooth_core.layout``). Target on CPU: ratio to
the best layout >= 0.95 for every method.
Writes the table to ``benchmarks/results/bench_certify-<time>.json`` (``docs/PERFORMANCE.md``).
Run: ``make bench``, or
``PYTHONPATH=. .venv/bin/python benchmarks/bench_certify.py [--n 4000] [--batch 500] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import torch
from bench_results import add_results_option, write_result

from dsmooth_core import LowRankCovariance, certify
from dsmooth_core.compiled import compiled_forward
from dsmooth_core.device import generator_for
from dsmooth_core.layout import in_fastest_layout
from dsmooth_core.models import (
    CIFAR10_CLASSES,
    CIFAR10_MEAN,
    CIFAR10_STD,
    ModelInfo,
    build_architecture,
    wrap,
)
from dsmooth_core.noise import make_noise


def timed(fn) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


@torch.inference_mode()
def _forward(model: torch.nn.Module, batches: list[torch.Tensor]) -> None:
    for batch in batches:
        model(batch).argmax(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--n0", type=int, default=100)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    parser.add_argument("--compile", action="store_true", help="also time certify with the compiled forward")
    add_results_option(parser)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    info = ModelInfo(
        "resnet20", "cifar10", (3, 32, 32), CIFAR10_CLASSES, "untrained", mean=CIFAR10_MEAN, std=CIFAR10_STD
    )
    given = wrap(build_architecture("resnet20"), info).to(device)  # contiguous, as built
    model = in_fastest_layout(wrap(build_architecture("resnet20"), info).to(device))
    model.load_state_dict(given.state_dict())  # the same weights in the layout the lab loads models in
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 32, 32, generator=g)
    perturbations = torch.randn(500, 3, 32, 32, generator=g) * torch.rand(3, 32, 32, generator=g)
    covariance = LowRankCovariance.fit(perturbations, k=args.k)
    total = args.n0 + args.n
    # One input buffer reused for every batch: the most favourable case for the bare forward.
    buffer = torch.rand(args.batch, 3, 32, 32, device=device)
    batches = [buffer[: min(args.batch, total - s)] for s in range(0, total, args.batch)]
    fast_batches = [b.contiguous(memory_format=torch.channels_last) for b in batches]

    @torch.inference_mode()
    def forward_as_given() -> None:
        for batch in batches:
            given(batch).argmax(1)

    @torch.inference_mode()
    def forward_best_layout() -> None:
        for batch in fast_batches:
            model(batch).argmax(1)

    runs = {"raw forward, as given": forward_as_given, "raw forward, best layout": forward_best_layout}
    for method in ("randsmooth", "lsmooth", "dsmooth"):
        noise = make_noise(method, 0.25, covariance)
        gen = generator_for(model, 1)
        runs[f"{noise.name} ({noise.metric})"] = partial(
            certify, model, x, noise, args.n0, args.n, 0.001, args.batch, gen
        )
    if args.compile:  # compiled once, for the full batches, during the warm-up below
        fast = compiled_forward(model, args.batch)
        runs["compiled forward, best layout"] = partial(_forward, fast, fast_batches)
        for method in ("randsmooth", "lsmooth", "dsmooth"):
            noise = make_noise(method, 0.25, covariance)
            runs[f"{noise.name} compiled"] = partial(
                certify, fast, x, noise, args.n0, args.n, 0.001, args.batch, generator_for(model, 1)
            )
    warm_up = {}
    for name, run in runs.items():  # warm-up; for a compiled run this includes the compilation
        warm_up[name] = timed(run)
        print(f"warm-up {name}: {warm_up[name]:.1f} s", flush=True)
    # Interleave the timings so that a busy or throttled machine slows every contender alike;
    # each round's ratio compares runs made seconds apart, and the median round is reported.
    rounds = [{name: timed(run) for name, run in runs.items()} for _ in range(args.repeats)]
    print(
        f"device {device}, threads {torch.get_num_threads()}, n0+n = {total}, batch {args.batch}, {args.repeats} rounds"
    )
    print(f"{'':28s}  {'samples/s':>10s}  {'/ as given':>10s}  {'/ best layout':>13s}")
    rows = []
    for name in runs:
        rate = total / statistics.median(r[name] for r in rounds)
        given_ratio = statistics.median(r["raw forward, as given"] / r[name] for r in rounds)
        best_ratio = statistics.median(r["raw forward, best layout"] / r[name] for r in rounds)
        print(f"{name:28s}  {rate:10,.0f}  {given_ratio:10.3f}  {best_ratio:13.3f}")
        rows.append(
            {
                "run": name,
                "samples/s": round(rate),
                "/ forward as given": round(given_ratio, 3),
                "/ forward in best layout": round(best_ratio, 3),
                "first run s": round(warm_up[name], 1),
            }
        )
    settings = {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "n0 + n": total,
        "batch": args.batch,
        "k": args.k,
        "rounds": args.repeats,
        "model": "ResNet-20, untrained weights, CIFAR-10 input size",
    }
    notes = [
        "ratio = certify's samples/s over the raw forward's, median of interleaved rounds",
        "first run s: the untimed warm-up run (with --compile, the compiled runs' includes the compilation)",
        "target on CPU: every method >= 0.95 of the forward in the best layout",
    ]
    write_result(args.results, "bench_certify", settings, {"certify against the bare forward": rows}, notes)


if __name__ == "__main__":
    main()
