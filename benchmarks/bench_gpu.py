"""Certification speed on a CUDA device: the README's GPU figures, in one command.

Certifies the bundled ResNet-20 at n0 = 100, n = 100,000 with RandSmooth, LSmooth and DSmooth on 20
CIFAR-10 test images (random images, with a note, when DSMOOTH_DATA_DIR holds no CIFAR-10), then one
ImageNet-size input with a torchvision ResNet-50 of random weights. For each it prints seconds per
image, the model's raw forward rate at the same batch size, the share of certify's time spent drawing
noise, and peak GPU memory. Targets (issue 16): under 0.5 s per CIFAR-10 image for every method.
Without CUDA it says so and exits with status 0 (nothing to measure).
Run: ``PYTHONPATH=. .venv/bin/python benchmarks/bench_gpu.py`` (or ``benchmarks/run_gpu_checks.sh``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import TypeVar

import torch

from dsmooth_core import LowRankCovariance, bundled, certify
from dsmooth_core.data import DataUnavailableError, data_dir, load_cifar10
from dsmooth_core.device import generator_for, model_device
from dsmooth_core.layout import in_fastest_layout, input_format
from dsmooth_core.models import DEFAULT_MODEL, ModelInfo, ModelUnavailableError, load_model, wrap
from dsmooth_core.noise import METHODS, SmoothingNoise, make_noise
from dsmooth_core.profiles import ThreatProfile

T = TypeVar("T")
BUNDLED_PROFILE = bundled.PROFILE
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    """Wall seconds of ``fn()`` with the GPU's queue drained on both sides, and its result."""
    torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    torch.cuda.synchronize()
    return time.perf_counter() - start, result


def seconds(fn: Callable[[], object]) -> float:
    return timed(fn)[0]


def cifar_images(count: int) -> tuple[torch.Tensor, str]:
    """``count`` class-spread test images, or random pixels when CIFAR-10 is not on disk."""
    try:
        data = load_cifar10("test", data_dir(), download=False)
    except DataUnavailableError as exc:
        note = f"random images: {str(exc).split('. ')[0]} (set DSMOOTH_DATA_DIR)"
        return torch.rand(count, 3, 32, 32, generator=torch.Generator().manual_seed(0)), note
    step = max(len(data.labels) // count, 1)
    return data.tensor(list(range(0, step * count, step))), f"CIFAR-10 test images 0, {step}, ..."


def bundled_model(device: torch.device) -> tuple[torch.nn.Module, str]:
    try:
        return load_model(DEFAULT_MODEL, device), "bundled weights"
    except ModelUnavailableError:
        return load_model(DEFAULT_MODEL, device, pretrained=False), "untrained weights (bundled file missing)"


def cifar_covariance() -> tuple[LowRankCovariance, str]:
    if BUNDLED_PROFILE.is_file():
        return ThreatProfile.load(BUNDLED_PROFILE).covariance, "bundled threat profile"
    return random_covariance((3, 32, 32), 100), "random covariance (bundled profile missing)"


def random_covariance(shape: tuple[int, ...], k: int) -> LowRankCovariance:
    g = torch.Generator().manual_seed(0)
    perturbations = torch.randn(k + 20, *shape, generator=g) * torch.rand(shape, generator=g)
    return LowRankCovariance.fit(perturbations, k=k)


def forward_rate(model: torch.nn.Module, shape: tuple[int, ...], batch: int, total: int) -> float:
    """Samples per second of the bare forward in the model's layout (one reused input buffer)."""
    x = torch.rand(batch, *shape, device=model_device(model)).contiguous(memory_format=input_format(model))

    @torch.inference_mode()
    def run() -> None:
        for start in range(0, total, batch):
            model(x[: min(batch, total - start)]).argmax(1)

    with torch.inference_mode():
        model(x)  # warm-up: cuDNN picks its kernels on the first batch
    return total / seconds(run)


def noise_seconds(noise: SmoothingNoise, shape: tuple[int, ...], batch: int, total: int, device: torch.device) -> float:
    """Time to draw ``total`` samples on the device alone, in certify's batches."""
    generator = generator_for(device, 1)

    def run() -> None:
        for start in range(0, total, batch):
            noise.sample(min(batch, total - start), shape, generator, device)

    noise.sample(batch, shape, generator, device)  # warm-up
    return seconds(run)


def measure(
    label: str,
    model: torch.nn.Module,
    images: torch.Tensor,
    noises: dict[str, SmoothingNoise],
    n0: int,
    n: int,
    batch: int,
) -> None:
    shape = tuple(images.shape[1:])
    rate = forward_rate(model, shape, batch, n0 + n)
    print(f"\n{label}: {len(images)} image(s) of shape {shape}, n0 = {n0}, n = {n:,}, batch {batch}")
    print(f"  raw forward: {rate:,.0f} samples/s ({(n0 + n) / rate:.3f} s per image at this n)")
    for name, noise in noises.items():
        certify(model, images[0], noise, 10, batch, 0.001, batch, generator_for(model, 0))  # warm-up
        torch.cuda.reset_peak_memory_stats()
        times, abstained = [], 0
        for index, x in enumerate(images):
            run = partial(certify, model, x, noise, n0, n, 0.001, batch, generator_for(model, index))
            elapsed, cert = timed(run)
            times.append(elapsed)
            abstained += cert.abstained
        peak = torch.cuda.max_memory_allocated() / 2**30
        per_image = statistics.mean(times)
        share = noise_seconds(noise, shape, batch, n0 + n, model_device(model)) / per_image
        print(
            f"  {name:10s}: {per_image:7.3f} s/image (median {statistics.median(times):.3f}), "
            f"{(n0 + n) / per_image:,.0f} samples/s = {(n0 + n) / per_image / rate:.2f} of the forward, "
            f"noise {share:.0%} of the time, peak {peak:.2f} GiB, abstained {abstained}/{len(images)}"
        )


def main(device_name: str = "cuda") -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=20, help="CIFAR-10 images to certify")
    parser.add_argument("--n0", type=int, default=100)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=10_000, help="CIFAR-10 batch size")
    parser.add_argument("--imagenet-images", type=int, default=1, help="0 skips the ResNet-50 part")
    parser.add_argument("--imagenet-batch", type=int, default=500)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench_gpu: no CUDA device on this machine; nothing measured (run it where a GPU is available).")
        return 0
    device = torch.device(device_name)
    print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")

    model, weights_note = bundled_model(device)
    images, data_note = cifar_images(args.images)
    covariance, cov_note = cifar_covariance()
    print(f"ResNet-20: {weights_note}; {data_note}; DSmooth: {cov_note}, k = {covariance.k}")
    noises = {m: make_noise(m, 0.25, covariance) for m in METHODS}
    measure("ResNet-20 on CIFAR-10", model, images, noises, args.n0, args.n, args.batch)

    if args.imagenet_images:
        import torchvision

        shape = (3, 224, 224)
        info = ModelInfo("resnet50", "imagenet", shape, tuple(f"class {i}" for i in range(1000)), "untrained",
                         mean=IMAGENET_MEAN, std=IMAGENET_STD)  # fmt: skip
        net = torchvision.models.resnet50(weights=None)
        resnet50 = in_fastest_layout(wrap(net, info).to(device))
        inputs = torch.rand(args.imagenet_images, *shape, generator=torch.Generator().manual_seed(0))
        big_covariance = random_covariance(shape, 50)
        big = {m: make_noise(m, 0.25, big_covariance) for m in METHODS}
        print("\nResNet-50 (random weights) on random ImageNet-size inputs; DSmooth: random covariance, k = 50")
        measure("ResNet-50, ImageNet size", resnet50, inputs, big, args.n0, args.n, args.imagenet_batch)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
