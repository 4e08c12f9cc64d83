"""Every architecture the registry knows, built untrained, plus where its published weights live."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dsmooth_core.models.cifar_resnet import CIFAR_RESNET_BLOCKS, cifar_resnet
from dsmooth_core.models.constants import CIFAR10_CLASSES, CIFAR10_INPUT_SHAPE
from dsmooth_core.models.errors import ModelUnavailableError

HUB_REPO = "chenyaofo/pytorch-cifar-models"
HUB_REF = "master"  # naming the branch spares torch.hub a network probe for the default branch
_RELEASES = f"https://github.com/{HUB_REPO}/releases/download"

# Published CIFAR-10 weights (README of chenyaofo/pytorch-cifar-models); the hex suffix is the
# sha256 prefix that torch.hub verifies.
CIFAR10_WEIGHT_URLS: dict[str, str] = {
    "resnet20": f"{_RELEASES}/resnet/cifar10_resnet20-4118986f.pt",
    "resnet32": f"{_RELEASES}/resnet/cifar10_resnet32-ef93fc4d.pt",
    "resnet44": f"{_RELEASES}/resnet/cifar10_resnet44-2a3cabcb.pt",
    "resnet56": f"{_RELEASES}/resnet/cifar10_resnet56-187c023a.pt",
    "vgg11_bn": f"{_RELEASES}/vgg/cifar10_vgg11_bn-eaeebf42.pt",
    "vgg13_bn": f"{_RELEASES}/vgg/cifar10_vgg13_bn-c01e4a43.pt",
    "vgg16_bn": f"{_RELEASES}/vgg/cifar10_vgg16_bn-6ee7ea24.pt",
    "vgg19_bn": f"{_RELEASES}/vgg/cifar10_vgg19_bn-57191229.pt",
    "mobilenetv2_x0_5": f"{_RELEASES}/mobilenetv2/cifar10_mobilenetv2_x0_5-ca14ced9.pt",
    "mobilenetv2_x0_75": f"{_RELEASES}/mobilenetv2/cifar10_mobilenetv2_x0_75-a53c314e.pt",
    "mobilenetv2_x1_0": f"{_RELEASES}/mobilenetv2/cifar10_mobilenetv2_x1_0-fe6a5b48.pt",
    "mobilenetv2_x1_4": f"{_RELEASES}/mobilenetv2/cifar10_mobilenetv2_x1_4-3bbbd6e2.pt",
    "shufflenetv2_x0_5": f"{_RELEASES}/shufflenetv2/cifar10_shufflenetv2_x0_5-1308b4e9.pt",
    "shufflenetv2_x1_0": f"{_RELEASES}/shufflenetv2/cifar10_shufflenetv2_x1_0-98807be3.pt",
    "shufflenetv2_x1_5": f"{_RELEASES}/shufflenetv2/cifar10_shufflenetv2_x1_5-296694dd.pt",
    "shufflenetv2_x2_0": f"{_RELEASES}/shufflenetv2/cifar10_shufflenetv2_x2_0-ec31611c.pt",
    "repvgg_a0": f"{_RELEASES}/repvgg/cifar10_repvgg_a0-ef08a50e.pt",
    "repvgg_a1": f"{_RELEASES}/repvgg/cifar10_repvgg_a1-38d2431b.pt",
    "repvgg_a2": f"{_RELEASES}/repvgg/cifar10_repvgg_a2-09488915.pt",
}
TORCHVISION_IMAGENET: tuple[str, ...] = ("resnet50", "resnet152", "wide_resnet50_2", "wide_resnet101_2")
IMAGENET_INPUT_SHAPE: tuple[int, int, int] = (3, 224, 224)


@dataclass(frozen=True)
class Architecture:
    """Where an architecture's code comes from: ``"local"``, ``"hub"`` (chenyaofo) or ``"torchvision"``."""

    name: str
    dataset: str
    code: str
    input_shape: tuple[int, int, int]


def _catalogue() -> dict[str, Architecture]:
    entries = [Architecture(n, "cifar10", "local", CIFAR10_INPUT_SHAPE) for n in CIFAR_RESNET_BLOCKS]
    entries += [
        Architecture(n, "cifar10", "hub", CIFAR10_INPUT_SHAPE)
        for n in CIFAR10_WEIGHT_URLS
        if n not in CIFAR_RESNET_BLOCKS
    ]
    entries += [Architecture(n, "imagenet", "torchvision", IMAGENET_INPUT_SHAPE) for n in TORCHVISION_IMAGENET]
    return {a.name: a for a in entries}


ARCHITECTURES: dict[str, Architecture] = _catalogue()
ARCHITECTURE_NAMES: tuple[str, ...] = tuple(ARCHITECTURES)


def hub_repo_dir() -> Path:
    """Where torch.hub keeps its copy of the chenyaofo repository's code."""
    owner, repo = HUB_REPO.split("/")
    return Path(torch.hub.get_dir()) / f"{owner}_{repo}_{HUB_REF}"


def get_architecture(name: str) -> Architecture:
    """Look an architecture up, with the valid names in the error."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}") from None


def default_class_names(arch: Architecture) -> tuple[str, ...]:
    """The class names of the data set the architecture's published weights were trained on."""
    if arch.dataset == "cifar10":
        return CIFAR10_CLASSES
    import torchvision  # imported on demand: it adds seconds to start-up for CIFAR-only use

    return tuple(torchvision.models.get_model_weights(arch.name).DEFAULT.meta["categories"])


def build_architecture(name: str) -> nn.Module:
    """The bare network (no normalisation) with untrained weights."""
    arch = get_architecture(name)
    if arch.code == "local":
        return cifar_resnet(name)
    if arch.code == "torchvision":
        import torchvision  # imported on demand: it adds seconds to start-up for CIFAR-only use

        return torchvision.models.get_model(name, weights=None)
    return _build_from_hub(name)


def _build_from_hub(name: str) -> nn.Module:
    """Get the chenyaofo model code through torch.hub (cached after the first download)."""
    try:
        return torch.hub.load(
            f"{HUB_REPO}:{HUB_REF}",
            f"cifar10_{name}",
            pretrained=False,
            trust_repo=True,
            skip_validation=True,
            verbose=False,
        )
    except (OSError, RuntimeError, ImportError, zipfile.BadZipFile) as exc:
        raise ModelUnavailableError(
            f"{name} needs the model code of github.com/{HUB_REPO}, which is not in the torch hub "
            f"cache ({hub_repo_dir()}) and could not be downloaded ({exc}). Connect to the internet "
            f"once, or unpack the repository's {HUB_REF} branch into that folder."
        ) from exc
