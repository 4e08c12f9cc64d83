"""Checkpoints in the format of Cohen et al. (2019, github.com/locuslab/smoothing) and the work that reuses it.

Their training script saves ``{"epoch", "arch", "state_dict", "optimizer"}``, where ``state_dict``
is that of ``nn.Sequential(NormalizeLayer(mean, std), net)``: every key starts with ``1.`` (the
net), and with ``1.module.`` when the net was wrapped in ``nn.DataParallel`` (their ImageNet
ResNet-50). Their ``NormalizeLayer`` keeps its statistics as plain attributes, so the file holds
none; they are fixed per data set in their code and restored here, in front of the net as
:class:`~dsmooth_core.models.normalized.Normalized`, so noise is still added in pixel units as
they certified. The file is read by the caller with ``weights_only=True``; the optimizer entry is
plain tensors and numbers, which that reader accepts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from dsmooth_core.models.architectures import ARCHITECTURES, default_class_names
from dsmooth_core.models.cifar_resnet import cifar_resnet_of_depth
from dsmooth_core.models.constants import CIFAR10_CLASSES
from dsmooth_core.models.errors import ModelLoadError
from dsmooth_core.models.state_dicts import check_finite, load_strict

# ModelInfo.source of a model read from such a checkpoint starts with this.
COHEN_SOURCE = "cohen"
# Statistics of their datasets.py (the CIFAR-10 ones coincide with chenyaofo's HUB_CIFAR10_*).
COHEN_CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
COHEN_CIFAR10_STD: tuple[float, float, float] = (0.2023, 0.1994, 0.2010)
COHEN_IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
COHEN_IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
# Their ImageNet test images: shorter side resized to 256, then a 224 centre crop.
COHEN_IMAGENET_RESIZE = 256
_NET_PREFIX = "1."  # the net's index after the NormalizeLayer in their nn.Sequential
_SEQUENTIAL_PREFIXES = ("0.", _NET_PREFIX)
_PARALLEL_PREFIX = "module."
_BN_COUNTER = "num_batches_tracked"


def _resnet50() -> nn.Module:
    import torchvision  # imported on demand: it adds seconds to start-up for CIFAR-only use

    return torchvision.models.resnet50(weights=None)


@dataclass(frozen=True)
class CohenArchitecture:
    """One ``arch`` value of their checkpoints and what their code fixes for it."""

    arch: str
    dataset: str
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize_size: int | None
    build: Callable[[], nn.Module]

    def class_names(self) -> tuple[str, ...]:
        """CIFAR-10's classes, or ImageNet's in the sorted-synset order their ImageFolder used."""
        if self.dataset == "cifar10":
            return CIFAR10_CLASSES
        return default_class_names(ARCHITECTURES["resnet50"])


def _cifar(arch: str, depth: int) -> CohenArchitecture:
    shape, mean, std = (3, 32, 32), COHEN_CIFAR10_MEAN, COHEN_CIFAR10_STD
    return CohenArchitecture(arch, "cifar10", shape, mean, std, None, lambda: cifar_resnet_of_depth(depth))


_IMAGENET_RESNET50 = CohenArchitecture(
    "resnet50", "imagenet", (3, 224, 224), COHEN_IMAGENET_MEAN, COHEN_IMAGENET_STD, COHEN_IMAGENET_RESIZE, _resnet50
)
COHEN_ARCHITECTURES: dict[str, CohenArchitecture] = {
    a.arch: a for a in (_cifar("cifar_resnet20", 20), _cifar("cifar_resnet110", 110), _IMAGENET_RESNET50)
}
_SUPPORTED = ", ".join(COHEN_ARCHITECTURES)


def is_cohen_checkpoint(obj: object) -> bool:
    """Whether a loaded file is a dict with an ``arch`` name and the ``state_dict`` of a two-layer Sequential.

    The key layout matters: other training scripts (pytorch/examples' ImageNet one) save ``arch`` and
    ``state_dict`` too, for a bare net, whose keys do not start with ``0.``/``1.``; those stay plain
    state dicts, loaded with a stated architecture and normalization.
    """
    if not isinstance(obj, Mapping):
        return False
    state = obj.get("state_dict")
    if not isinstance(state, Mapping) or not isinstance(obj.get("arch"), str):
        return False
    keys = [str(k) for k in state]
    return any(k.startswith(_NET_PREFIX) for k in keys) and all(k.startswith(_SEQUENTIAL_PREFIXES) for k in keys)


def cohen_architecture(checkpoint: Mapping[str, object]) -> CohenArchitecture:
    """The architecture the checkpoint names, or a refusal that lists the names supported."""
    arch = checkpoint["arch"]
    if arch not in COHEN_ARCHITECTURES:
        raise ModelLoadError(
            f"checkpoint 'arch' {arch!r} is not supported; Cohen-format checkpoints may be {_SUPPORTED}"
        )
    return COHEN_ARCHITECTURES[str(arch)]


def cohen_net(checkpoint: Mapping[str, object], arch: CohenArchitecture) -> nn.Module:
    """The bare net of ``arch`` (normalization not included) with the checkpoint's weights, loaded strictly."""
    net = arch.build()
    state = _net_state(checkpoint["state_dict"], arch.arch, net)  # type: ignore[arg-type]
    check_finite(state, "The checkpoint")
    try:
        load_strict(net, state, arch.arch)
    except ModelLoadError as exc:
        raise ModelLoadError(f"{exc} (Cohen-format checkpoints may be {_SUPPORTED})") from None
    return net


def _net_state(state: Mapping[str, object], arch: str, net: nn.Module) -> dict[str, torch.Tensor]:
    """The net's own keys: their ``1.`` (and DataParallel's ``module.``) prefixes stripped."""
    outside = sorted(str(k) for k in state if not str(k).startswith(_NET_PREFIX))
    if outside:
        shown = ", ".join(outside[:4]) + (" ..." if len(outside) > 4 else "")
        raise ModelLoadError(
            f"the {arch} checkpoint's state_dict has keys outside the net ({shown}); Cohen et al.'s "
            f"nn.Sequential(NormalizeLayer, net) saves only the net's, as '1.<name>' (Cohen-format "
            f"checkpoints may be {_SUPPORTED})"
        )
    tensors = {str(k)[len(_NET_PREFIX) :]: v for k, v in state.items()}
    if all(k.startswith(_PARALLEL_PREFIX) for k in tensors):
        tensors = {k[len(_PARALLEL_PREFIX) :]: v for k, v in tensors.items()}
    not_tensors = sorted(k for k, v in tensors.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise ModelLoadError(
            f"the {arch} checkpoint's state_dict holds entries that are not tensors: {not_tensors[:4]}"
        )
    # Files saved by PyTorch before 0.4.1 lack every BatchNorm step counter, which inference never reads.
    if not any(k.endswith(_BN_COUNTER) for k in tensors):
        tensors |= {k: v for k, v in net.state_dict().items() if k.endswith(_BN_COUNTER)}
    return tensors  # type: ignore[return-value]
