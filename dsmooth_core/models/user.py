"""Loading a model a user brings: a state dict for a known architecture, TorchScript or torch.export.

State dicts are read with ``weights_only=True``, so a file that would run code when unpickled is
refused. TorchScript and torch.export files are programs (PyTorch's security policy says to treat
them as code), so they are loaded only when the caller vouches for them with ``trust_code=True``.
"""

from __future__ import annotations

import io
import math
import pickle
import zipfile
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

from dsmooth_core.contract import ModelContractError, probe
from dsmooth_core.layout import in_fastest_layout
from dsmooth_core.models.architectures import (
    ARCHITECTURES,
    Architecture,
    build_architecture,
    default_class_names,
    get_architecture,
)
from dsmooth_core.models.errors import ModelLoadError
from dsmooth_core.models.info import ModelInfo, file_sha256
from dsmooth_core.models.normalized import Normalized, wrap
from dsmooth_core.models.state_dicts import check_archive, check_finite, load_strict, program_kind, unwrap_state_dict

UPLOAD_SOURCE = "upload"
DEFAULT_INPUT_SHAPE: tuple[int, int, int] = (3, 32, 32)
_NOT_A_MODEL = (
    "not a TorchScript, torch.export or state-dict file. Save a model with "
    "torch.save(model.state_dict(), path), torch.jit.save(torch.jit.script(model), path) or "
    "torch.export.save(program, path)"
)
_CODE_FORMATS = {"torchscript": "TorchScript", "export": "torch.export"}


class ExportedNet(nn.Module):
    """Holds the module of a ``torch.export`` program, whose train/eval behaviour was fixed at export."""

    def __init__(self, program: torch.export.ExportedProgram) -> None:
        super().__init__()
        self.program_module = program.module()

    def train(self, mode: bool = True) -> ExportedNet:
        # An exported graph cannot switch modes (it raises if asked), so only the flag is recorded.
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.program_module(x)


def load_user_model(
    data: bytes | str | Path,
    *,
    architecture: str | None = None,
    input_shape: tuple[int, int, int] | None = None,
    class_names: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    name: str = "uploaded model",
    trust_code: bool = False,
) -> Normalized:
    """Load a user's model, check it runs, and wrap it like the registry's models.

    The model must take ``[0, 1]`` pixels ``(B, C, H, W)`` for any batch size B; give ``mean`` and
    ``std`` if it expects normalised input instead. A state dict needs ``architecture`` (a name from
    ``ARCHITECTURE_NAMES``). ``input_shape`` defaults to the architecture's, then to a torch.export
    program's example input, then to (3, 32, 32); ``class_names`` default to the architecture's data
    set when the output count matches, else "class 0", "class 1", ...
    """
    payload = data if isinstance(data, bytes) else Path(data)
    if isinstance(payload, Path) and not payload.is_file():
        raise ModelLoadError(f"model file {payload} does not exist")
    try:
        arch = get_architecture(architecture) if architecture else None
    except ValueError as exc:
        raise ModelLoadError(str(exc)) from None
    kind = _file_kind(payload)
    if kind in _CODE_FORMATS and not trust_code:
        raise ModelLoadError(
            f"This is a {_CODE_FORMATS[kind]} file. Such files are programs and can run code when loaded "
            "or run, so they are loaded only from sources you trust (trust_code=True). Otherwise save "
            "a state dict, torch.save(model.state_dict(), path), and choose its architecture."
        )
    example_shape = None
    # a program's outputs depend on its code as well as its weights: the file's hash names both
    code_hash = file_sha256(payload) if kind in _CODE_FORMATS else ""
    if kind == "torchscript":
        net = _load_torchscript(payload)
    elif kind == "export":
        net, example_shape = _load_export(payload)
    else:
        net = _load_state_dict_net(payload, arch)
    shape = input_shape or (arch.input_shape if arch else None) or example_shape or DEFAULT_INPUT_SHAPE
    channels = shape[0]
    mean_t = tuple(float(v) for v in mean) if mean is not None else (0.0,) * channels
    std_t = tuple(float(v) for v in std) if std is not None else (1.0,) * channels
    net.eval()
    check_finite(net.state_dict(), "The model")
    num_classes = _probe(net, shape, mean_t, std_t, name)
    names, dataset = _class_names(class_names, arch, num_classes)
    architecture_name = arch.name if kind == "state_dict" and arch else _CODE_FORMATS.get(kind, "")
    info = ModelInfo(
        name,
        dataset,
        tuple(shape),
        names,
        UPLOAD_SOURCE,
        mean=mean_t,
        std=std_t,
        architecture=architecture_name,
        code_hash=code_hash,
    )
    model = wrap(net, info)
    # a state dict builds one of our architectures, safe to convert; programs keep their saved layout
    return in_fastest_layout(model) if kind == "state_dict" else model


def _open(payload: bytes | Path) -> io.BytesIO | Path:
    return io.BytesIO(payload) if isinstance(payload, bytes) else payload


def _file_kind(payload: bytes | Path) -> str:
    """Tell the formats apart from the zip layout each ``torch.*.save`` writes (damaged zips refused)."""
    if not zipfile.is_zipfile(_open(payload)):
        return "state_dict"  # possibly torch.save's legacy format; torch.load decides
    check_archive(payload, "The model file")
    kind = program_kind(payload)
    if kind is not None:
        return {"torch.export": "export", "TorchScript": "torchscript"}[kind]
    with zipfile.ZipFile(_open(payload)) as archive:
        names = archive.namelist()
    if any(n.endswith("data.pkl") for n in names):
        return "state_dict"
    raise ModelLoadError(f"The file is a zip archive but {_NOT_A_MODEL}.")


def _load_state_dict_net(payload: bytes | Path, arch: Architecture | None) -> nn.Module:
    try:
        obj = torch.load(_open(payload), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        unsafe = [line.strip() for line in str(exc).splitlines() if "Unsupported global" in line]
        detail = f" ({unsafe[0]})" if unsafe else ""
        raise ModelLoadError(
            f"Refused: the file is {_NOT_A_MODEL}. Pickled Python objects are never loaded, since "
            f"they could run code{detail}."
        ) from None
    except Exception as exc:  # torch's weights-only reader fails on foreign bytes with many error types
        raise ModelLoadError(f"The file is {_NOT_A_MODEL} ({type(exc).__name__}: {exc}).") from None
    state = unwrap_state_dict(obj)
    check_finite(state, "The weights file")
    if arch is None:
        raise ModelLoadError(
            "This is a state dict, which holds weights but no architecture: choose the architecture "
            f"it belongs to ({', '.join(ARCHITECTURES)})."
        )
    net = build_architecture(arch.name)
    load_strict(net, state, arch.name)
    return net


def _load_torchscript(payload: bytes | Path) -> nn.Module:
    try:
        return torch.jit.load(_open(payload), map_location="cpu")
    except (RuntimeError, ValueError) as exc:
        raise ModelLoadError(f"The TorchScript file could not be loaded: {exc}") from None


def _load_export(payload: bytes | Path) -> tuple[nn.Module, tuple[int, int, int] | None]:
    try:
        program = torch.export.load(_open(payload))
        net = ExportedNet(program)
    except Exception as exc:  # the .pt2 reader raises many types on malformed archives
        raise ModelLoadError(f"The torch.export file could not be loaded: {exc}") from None
    args = program.example_inputs[0] if program.example_inputs else ()
    first = args[0] if args else None
    shape = tuple(first.shape[1:]) if isinstance(first, torch.Tensor) and first.dim() == 4 else None
    return net, shape


class _Standardized(nn.Module):
    """The loaded net behind its stated input normalization, as the model the lab will call."""

    def __init__(self, net: nn.Module, mean: torch.Tensor, std: torch.Tensor, name: str) -> None:
        super().__init__()
        self.net, self.mean, self.std = net, mean, std
        self.info = SimpleNamespace(name=name)  # how the contract's messages name the model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def _probe(net: nn.Module, shape: tuple[int, ...], mean: tuple[float, ...], std: tuple[float, ...], name: str) -> int:
    """The model contract's probe (two batch sizes, (batch, classes) finite logits) at load time; returns its
    number of classes. Two sizes catch a torch.export program traced with a fixed batch size, which would
    otherwise load and then fail inside certify.
    """
    finite = all(math.isfinite(v) for v in (*mean, *std))
    if len(shape) != 3 or len(mean) != shape[0] or len(std) != shape[0] or not finite or min(std) <= 0:
        raise ModelLoadError(
            f"input shape {shape} must be (C, H, W), with C finite mean and C finite positive std values; "
            f"got mean {mean}, std {std}"
        )
    m, s = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
    standardized = _Standardized(net, m, s, name)
    try:
        return probe(standardized, shape)
    except ModelContractError as exc:
        raise ModelLoadError(str(exc)) from None


def _class_names(
    given: Sequence[str] | None, arch: Architecture | None, num_classes: int
) -> tuple[tuple[str, ...], str]:
    """Class names and the data set they imply (``custom`` unless they are an architecture's own)."""
    if given is not None:
        names = tuple(str(n) for n in given)
        if len(names) != num_classes:
            raise ModelLoadError(f"{len(names)} class names given but the model has {num_classes} outputs")
        return names, "custom"
    if arch is not None:
        names = default_class_names(arch)
        if len(names) == num_classes:
            return names, arch.dataset
    return tuple(f"class {i}" for i in range(num_classes)), "custom"
