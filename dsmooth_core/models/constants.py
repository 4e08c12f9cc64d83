"""Class names and normalisation statistics shared by the CIFAR-10 models."""

from __future__ import annotations

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
CIFAR10_INPUT_SHAPE: tuple[int, int, int] = (3, 32, 32)

# Per-channel statistics of the CIFAR-10 training set on [0, 1] (shared/data README); the bundled
# model was trained with these.
CIFAR10_MEAN: tuple[float, float, float] = (0.4913, 0.4821, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2452, 0.2428, 0.2606)

# The statistics chenyaofo/pytorch-cifar-models trained with (conf/cifar10.conf of
# chenyaofo/image-classification-codebase); its published weights expect exactly these.
HUB_CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
HUB_CIFAR10_STD: tuple[float, float, float] = (0.2023, 0.1994, 0.2010)
