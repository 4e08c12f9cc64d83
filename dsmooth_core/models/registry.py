"""The models offered by name: the bundled default, published CIFAR-10 nets and torchvision ImageNet nets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from dsmooth_core import bundled
from dsmooth_core.contract import first_line
from dsmooth_core.layout import in_fastest_layout
from dsmooth_core.models.architectures import (
    ARCHITECTURES,
    CIFAR10_WEIGHT_URLS,
    HUB_REPO,
    build_architecture,
    default_class_names,
    hub_repo_dir,
)
from dsmooth_core.models.constants import (
    CIFAR10_CLASSES,
    CIFAR10_INPUT_SHAPE,
    CIFAR10_MEAN,
    CIFAR10_STD,
    HUB_CIFAR10_MEAN,
    HUB_CIFAR10_STD,
)
from dsmooth_core.models.errors import ModelLoadError, ModelUnavailableError
from dsmooth_core.models.info import ModelInfo
from dsmooth_core.models.normalized import Normalized, wrap
from dsmooth_core.models.state_dicts import check_archive, check_finite, load_strict, program_kind, unwrap_state_dict
from dsmooth_core.models.weights import fetch_state_dict, is_cached

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum

DEFAULT_MODEL = "bundled-resnet20"
BUNDLED_WEIGHTS = bundled.WEIGHTS
BUNDLED_CARD = bundled.CARD
UNTRAINED = "untrained"


@dataclass(frozen=True)
class ModelSpec:
    """One selectable model; ``needs_download`` is true when its weights or code are not cached yet."""

    name: str
    dataset: str
    description: str
    needs_download: bool
    architecture: str


def _model_name(arch: str) -> str:
    return f"{ARCHITECTURES[arch].dataset}_{arch}"


MODEL_NAMES: tuple[str, ...] = (DEFAULT_MODEL, *(_model_name(a) for a in ARCHITECTURES))
_ARCH_OF: dict[str, str] = {DEFAULT_MODEL: "resnet20", **{_model_name(a): a for a in ARCHITECTURES}}


def available_models() -> list[ModelSpec]:
    """Every model :func:`load_model` accepts, bundled default first."""
    return [_spec(name) for name in MODEL_NAMES]


def _spec(name: str) -> ModelSpec:
    arch = ARCHITECTURES[_ARCH_OF[name]]
    if name == DEFAULT_MODEL:
        description = "ResNet-20 trained for this project on CIFAR-10 (ships with the app)"
        return ModelSpec(name, arch.dataset, description, False, arch.name)
    if arch.code == "torchvision":
        weights = _torchvision_weights(arch.name)
        description = f"{arch.name} on ImageNet, torchvision weights {weights}"
        return ModelSpec(name, arch.dataset, description, not is_cached(weights.url), arch.name)
    url = CIFAR10_WEIGHT_URLS[arch.name]
    cached = is_cached(url) and (arch.code == "local" or hub_repo_dir().is_dir())
    description = f"{arch.name} on CIFAR-10, published weights of {HUB_REPO}"
    return ModelSpec(name, arch.dataset, description, not cached, arch.name)


def load_model(
    name: str, device: str | torch.device = "cpu", pretrained: bool = True, weights: str | Path | None = None
) -> Normalized:
    """An eval-mode, gradient-free model taking ``[0, 1]`` pixels.

    ``pretrained=False`` gives untrained weights (no download of weights; the chenyaofo models
    still need their code), which is enough to exercise code paths offline. ``weights`` is a state
    dict file of the same architecture (e.g. one written by ``train``) used instead of the model's
    own weights, with the model's input normalization; the model is then named after the file.
    """
    if name not in _ARCH_OF:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    arch = ARCHITECTURES[_ARCH_OF[name]]
    if weights is not None:
        model = load_model(name, device, pretrained=False)
        source = _load_weights_file(model.net, Path(weights), arch.name)
        info = dataclasses.replace(model.info, name=Path(weights).stem, source=source, weights_hash="")
        return in_fastest_layout(wrap(model.net, info).to(device))  # the new wrapper's buffers start on the CPU
    net = build_architecture(arch.name)
    if name == DEFAULT_MODEL:
        source = _load_bundled(net) if pretrained else UNTRAINED
        info = ModelInfo(
            name,
            arch.dataset,
            CIFAR10_INPUT_SHAPE,
            CIFAR10_CLASSES,
            source,
            mean=CIFAR10_MEAN,
            std=CIFAR10_STD,
            architecture=arch.name,
        )
    elif arch.code == "torchvision":
        info = _load_torchvision(name, arch.name, net, pretrained)
    else:
        if pretrained:
            load_strict(net, fetch_state_dict(CIFAR10_WEIGHT_URLS[arch.name]), arch.name)
        source = f"hub:{HUB_REPO}" if pretrained else UNTRAINED
        info = ModelInfo(
            name,
            arch.dataset,
            CIFAR10_INPUT_SHAPE,
            CIFAR10_CLASSES,
            source,
            mean=HUB_CIFAR10_MEAN,
            std=HUB_CIFAR10_STD,
            architecture=arch.name,
        )
    return in_fastest_layout(wrap(net, info).to(device))


def _load_weights_file(net: nn.Module, path: Path, arch_name: str) -> str:
    if not path.is_file():
        raise ModelUnavailableError(f"weights file {path} does not exist")
    load_state_dict_file(net, path, arch_name)
    return f"file:{path.name}"


def _load_bundled(net: nn.Module) -> str:
    if not BUNDLED_WEIGHTS.is_file():
        raise ModelUnavailableError(
            f"The bundled model has not been trained yet: {BUNDLED_WEIGHTS} (with its model card "
            f"{BUNDLED_CARD.name}) is missing. Pick another model, or train it and save its state dict there."
        )
    load_state_dict_file(net, BUNDLED_WEIGHTS, "resnet20")
    return "bundled"


def load_state_dict_file(net: nn.Module, path: Path, arch_name: str) -> None:
    """Read a state dict with ``weights_only=True`` (a file that would run code is refused) into ``net``.

    The zip's checksums are verified first and the weights must be finite, so damaged weights never load.
    """
    check_archive(path, str(path))
    kind = program_kind(path)
    if kind is not None:
        raise ModelLoadError(
            f"{path} is a {kind} program, not a state dict; save the weights with "
            "torch.save(model.state_dict(), path), or load the program as a user model"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch's weights-only reader fails on foreign bytes with many error types
        raise ModelUnavailableError(f"{path} could not be read safely as a state dict: {first_line(exc)}") from exc
    if not isinstance(state, dict):
        raise ModelUnavailableError(f"{path} holds a {type(state).__name__}, not a state dict")
    tensors = unwrap_state_dict(state)
    check_finite(tensors, str(path))
    load_strict(net, tensors, arch_name)


def _torchvision_weights(arch: str) -> WeightsEnum:
    import torchvision  # imported on demand: it adds seconds to start-up for CIFAR-only use

    return torchvision.models.get_model_weights(arch).DEFAULT


def _load_torchvision(name: str, arch: str, net: nn.Module, pretrained: bool) -> ModelInfo:
    weights = _torchvision_weights(arch)
    if pretrained:
        load_strict(net, fetch_state_dict(weights.url), arch)
    preset = weights.transforms()
    crop = preset.crop_size[0]
    return ModelInfo(
        name,
        "imagenet",
        (3, crop, crop),
        default_class_names(ARCHITECTURES[arch]),
        f"torchvision:{weights}" if pretrained else UNTRAINED,
        mean=tuple(preset.mean),
        std=tuple(preset.std),
        resize_size=preset.resize_size[0],
        architecture=arch,
    )
