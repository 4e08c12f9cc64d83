"""Throughput of the forward backends, and of ``certify`` on each, for the bundled ResNet-20.

For each thread count, prints images per second of the raw batched forward on torch eager as given
(contiguous), torch ``channels_last`` (the layout the lab loads models in, ``dsmooth_core.layout``),
ONNX Runtime (``dsmooth_core.backends``) and, with ``--compile``, ``torch.compile``; then ``certify``'s
samples per second for every method on each backend, against the best torch forward and against its
own backend's forward. Targets on CPU (issue 23): certify on onnxruntime >= 1.8x the best torch
forward, and >= 0.95 of onnxruntime's own forward.
Writes the tables to ``benchmarks/results/bench_certify-<time>.json`` (``docs/PERFORMANCE.md``).
Run: ``make bench``, or
``PYTHONPATH=. .venv/bin/python benchmarks/bench_certify.py [--n 4000] [--batch 500] [--threads 1 2]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch
from bench_results import add_results_option, write_result

from dsmooth_core import LowRankCovariance, certify
from dsmooth_core.backends import OnnxForward, inference_model
from dsmooth_core.compiled import compiled_forward
from dsmooth_core.device import generator_for
from dsmooth_core.models import DEFAULT_MODEL, build_architecture, load_model, wrap
from dsmooth_core.noise import make_noise

METHODS = ("randsmooth", "lsmooth", "dsmooth")
BEST_TORCH = ("torch eager, as given", "torch channels_last", "torch.compile, channels_last")


def timed(fn: Callable[[], object]) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def ratio(rounds: list[dict[str, float]], name: str, reference: str) -> float:
    """Median over rounds of ``name``'s rate over ``reference``'s: runs seconds apart, so load shifts both alike."""
    return statistics.median(r[reference] / r[name] for r in rounds)


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
    parser.add_argument("--threads", type=int, nargs="+", default=[0], help="CPU thread counts (0: torch's default)")
    parser.add_argument("--compile", action="store_true", help="also time the torch.compile forward")
    add_results_option(parser)
    args = parser.parse_args()
    device = torch.device(args.device)
    model = load_model(DEFAULT_MODEL, device)  # channels_last on a CPU or CUDA device, as the lab loads it
    given = wrap(build_architecture("resnet20"), model.info).to(device)  # contiguous, as built
    given.load_state_dict(model.state_dict())
    forwards: dict[str, torch.nn.Module] = {"torch eager, as given": given, "torch channels_last": model}
    notes = ["rates and per-round ratios are medians of interleaved rounds, so load slows every contender alike"]
    if device.type == "cpu":
        fast, note = inference_model(model, "onnxruntime")
        print(note)
        if isinstance(fast, OnnxForward):
            forwards["onnxruntime"] = fast
        notes.append(f"onnxruntime: {note}")
    if args.compile:  # compiled once, for the full batches, during the warm-up below
        forwards["torch.compile, channels_last"] = compiled_forward(model, args.batch)

    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 32, 32, generator=g)
    perturbations = torch.randn(500, 3, 32, 32, generator=g) * torch.rand(3, 32, 32, generator=g)
    covariance = LowRankCovariance.fit(perturbations, k=args.k)
    total = args.n0 + args.n
    # One input buffer reused for every batch: the most favourable case for the bare forward.
    buffer = torch.rand(args.batch, 3, 32, 32, device=device)
    batches = [buffer[: min(args.batch, total - s)] for s in range(0, total, args.batch)]
    layouts = {name: torch.channels_last if "channels_last" in name else torch.contiguous_format for name in forwards}
    runs: dict[str, Callable[[], object]] = {
        name: partial(_forward, m, [b.contiguous(memory_format=layouts[name]) for b in batches])
        for name, m in forwards.items()
    }
    certifying = {"torch": model, **{k: v for k, v in forwards.items() if k in ("onnxruntime", BEST_TORCH[2])}}
    noises = {method: make_noise(method, 0.25, covariance) for method in METHODS}
    for backend, m in certifying.items():
        for method, noise in noises.items():
            gen = generator_for(model, 1)
            runs[f"certify {method} on {backend}"] = partial(
                certify, m, x, noise, args.n0, args.n, 0.001, args.batch, gen
            )

    forward_rows, certify_rows = [], []
    for threads in args.threads:
        if threads:
            torch.set_num_threads(threads)
        for name, run in runs.items():  # warm-up (and the compilation, with --compile)
            print(f"threads {torch.get_num_threads()}, warm-up {name}: {timed(run):.1f} s", flush=True)
        rounds = [{name: timed(run) for name, run in runs.items()} for _ in range(args.repeats)]
        rate = {name: total / statistics.median(r[name] for r in rounds) for name in runs}
        best = max((name for name in forwards if name in BEST_TORCH), key=rate.__getitem__)
        for name in forwards:
            forward_rows.append(
                {
                    "threads": torch.get_num_threads(),
                    "forward": name,
                    "images/s": round(rate[name]),
                    "/ torch channels_last": round(ratio(rounds, name, "torch channels_last"), 2),
                }
            )
        for backend in certifying:
            own = {"torch": "torch channels_last"}.get(backend, backend)
            for method, noise in noises.items():
                name = f"certify {method} on {backend}"
                certify_rows.append(
                    {
                        "threads": torch.get_num_threads(),
                        "backend": backend,
                        "method": f"{noise.name} ({noise.metric})",
                        "samples/s": round(rate[name]),
                        "/ best torch forward": round(ratio(rounds, name, best), 2),
                        "/ its backend's forward": round(ratio(rounds, name, own), 3),
                    }
                )
        print(f"device {device}, threads {torch.get_num_threads()}, n0+n = {total}, batch {args.batch}")
        for row in (*forward_rows, *certify_rows):
            if row["threads"] == torch.get_num_threads():
                print("  " + ", ".join(f"{key} {value}" for key, value in row.items() if key != "threads"))
    settings = {
        "device": str(device),
        "threads": ", ".join(str(row["threads"]) for row in forward_rows[:: len(forwards)]),
        "n0 + n": total,
        "batch": args.batch,
        "k": args.k,
        "rounds": args.repeats,
        "model": "the bundled ResNet-20 (trained), CIFAR-10 input size",
    }
    notes += [
        "targets on CPU: certify on onnxruntime >= 1.8x the best torch forward, >= 0.95 of its own backend's forward",
    ]
    tables = {"raw batched forward": forward_rows, "certify against the forwards": certify_rows}
    write_result(args.results, "bench_certify", settings, tables, notes)


if __name__ == "__main__":
    main()
