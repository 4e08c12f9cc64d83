"""Throughput of ``certify`` against the raw batched forward pass of the same model.

For a ResNet-20 on CIFAR-10-sized inputs, prints samples per second for each method and the ratio
to the bare forward at the same batch size. Target on CPU: ratio >= 0.95 for every method.
Run: ``.venv/bin/python benchmarks/bench_certify.py [--n 4000] [--batch 400] [--device cpu]``.
"""

from __future__ import annotations

import argparse
import time

import torch

from dsmooth_core import LowRankCovariance, certify
from dsmooth_core.models import (
    CIFAR10_CLASSES,
    CIFAR10_MEAN,
    CIFAR10_STD,
    ModelInfo,
    build_architecture,
    wrap,
)
from dsmooth_core.noise import make_noise


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--n0", type=int, default=100)
    parser.add_argument("--batch", type=int, default=400)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    info = ModelInfo(
        "resnet20", "cifar10", (3, 32, 32), CIFAR10_CLASSES, "untrained", mean=CIFAR10_MEAN, std=CIFAR10_STD
    )
    model = wrap(build_architecture("resnet20"), info).to(device)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 32, 32, generator=g)
    perturbations = torch.randn(500, 3, 32, 32, generator=g) * torch.rand(3, 32, 32, generator=g)
    covariance = LowRankCovariance.fit(perturbations, k=args.k)
    total = args.n0 + args.n
    batches = [torch.rand(min(args.batch, total - s), 3, 32, 32, device=device) for s in range(0, total, args.batch)]

    @torch.inference_mode()
    def raw_forward() -> None:
        for batch in batches:
            model(batch).argmax(1)

    raw_forward()  # warm-up
    raw = total / best_time(raw_forward, args.repeats)
    print(f"device {device}, threads {torch.get_num_threads()}, n0+n = {total}, batch {args.batch}")
    print(f"raw forward: {raw:,.0f} samples/s")
    for method in ("randsmooth", "lsmooth", "dsmooth"):
        noise = make_noise(method, 0.25, covariance)
        gen = torch.Generator(device=device).manual_seed(1)

        def run(noise=noise, gen=gen) -> None:
            certify(model, x, noise, args.n0, args.n, 0.001, args.batch, gen)

        run()
        rate = total / best_time(run, args.repeats)
        print(f"{noise.method:10s} ({noise.metric:11s}): {rate:,.0f} samples/s, ratio to raw forward {rate / raw:.3f}")


if __name__ == "__main__":
    main()
