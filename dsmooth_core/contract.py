"""The model contract, checked once per call before any certificate, attack or profile is produced.

A certificate is only as good as the votes behind it: a model left in train mode, an image of the
wrong size or a model that outputs NaN would still yield a radius, a silently wrong one. So every
entry point checks its arguments' types, runs the model in eval mode (restoring the caller's modes
after), compares the image with the model's declared input shape, and sends a small probe batch
through the model before spending any real work. Votes are then checked for finiteness batch by batch.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import nn

from dsmooth_core.device import is_out_of_memory, model_device

# How the TorchScript interpreter's errors begin (torch.jit.Error, or RuntimeError for failed operators).
_SCRIPT_FAILURE = "The following operation failed in the TorchScript interpreter."
# How far one image's logits may move between batches, as a share of their scale (at least 1): rounding,
# not dependence. Loose enough for the TF32 convolutions CUDA picks per batch size (about 1e-3 relative
# each); a batch statistic moves logits by about their own scale.
BATCH_TOLERANCE = 1e-2


class ModelContractError(ValueError):
    """The model, its input or its output breaks what certification relies on."""


class NonFiniteLogitsError(ModelContractError):
    """The model returned NaN or infinite logits, which are no vote for any class."""


class ModelRuntimeError(ModelContractError):
    """The model's own code failed while running (its message says what failed, on one line)."""


class BatchDependenceError(ModelContractError):
    """The model's logits for an image depend on the other images in its batch."""


def model_name(model: nn.Module) -> str:
    """The name a message should use for ``model``: its ModelInfo name, else its class name."""
    info = getattr(model, "info", None)
    return f"'{info.name}'" if info is not None else type(model).__name__


def first_line(exc: BaseException) -> str:
    """The exception's type and the first line of its message (torch's run to dozens of lines); for an
    error inside TorchScript code, the error itself and where, not the interpreter's traceback."""
    lines = str(exc).strip().splitlines()
    if is_script_failure(exc):
        where = next((line.strip() for line in lines if line.strip().startswith("File ")), "")
        error = lines[-1].strip().removeprefix("builtins.")
        return f"{error} (in its TorchScript code{', ' + where if where else ''})"
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def is_script_failure(exc: BaseException) -> bool:
    """Whether ``exc`` comes from the TorchScript interpreter, whose message is a traceback of the program."""
    return str(exc).startswith(_SCRIPT_FAILURE)


def check_alpha(alpha: object) -> float:
    """A failure probability: a number strictly between 0 and 1 (True is refused, not read as 1)."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise ValueError(f"alpha must lie strictly between 0 and 1, got {alpha!r}")
    return float(alpha)


def check_count(name: str, value: object) -> int:
    """A sample count or batch size: a true integer of at least 1 (50.5 or True is refused, not rounded)."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    try:
        number = operator.index(value)  # accepts int and numpy integers, refuses floats
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}") from None
    if number < 1:
        raise ValueError(f"{name} must be at least 1, got {number}")
    return number


def check_generator(generator: object) -> torch.Generator:
    """The explicit generator every random draw comes from (None would silently use the global seed)."""
    if not isinstance(generator, torch.Generator):
        found = type(generator).__name__
        raise TypeError(f"generator must be a torch.Generator (e.g. torch.Generator().manual_seed(0)), got {found}")
    return generator


def check_pixels(x: object, batched: bool = False) -> torch.Tensor:
    """A float tensor of finite pixels in [0, 1]: one image (C, H, W), or a batch (B, C, H, W) if ``batched``."""
    what = "x must be a batch (B, C, H, W)" if batched else "x must be one image of shape (C, H, W)"
    if not isinstance(x, torch.Tensor):
        hint = " (convert with torch.from_numpy(array).permute(2, 0, 1) / 255)" if hasattr(x, "__array__") else ""
        raise TypeError(f"{what} as a torch.Tensor, got {type(x).__name__}{hint}")
    if x.dim() != (4 if batched else 3) or 0 in x.shape:
        raise ValueError(f"{what} with no empty dimension, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x must hold float pixels in [0, 1], got dtype {x.dtype}")
    if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise ValueError("x must hold finite pixel values in [0, 1]")
    return x


def check_input_shape(model: nn.Module, shape: tuple[int, ...]) -> None:
    """Refuse an image whose shape differs from the one the model declares (``model.info.input_shape``)."""
    info = getattr(model, "info", None)
    declared = getattr(info, "input_shape", None)
    if declared is not None and tuple(shape) != tuple(declared):
        raise ModelContractError(
            f"model {model_name(model)} takes images of shape {tuple(declared)}, got {tuple(shape)}; "
            "resize the image to the model's input (prepare_image does this)"
        )


def check_finite_logits(model: nn.Module, logits: torch.Tensor) -> None:
    """Refuse a batch of logits with NaN or inf in it: argmax would turn them into votes for class 0."""
    finite = torch.isfinite(logits).all(dim=1)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise NonFiniteLogitsError(
            f"model {model_name(model)} returned non-finite logits (NaN or inf) for {bad} of {len(finite)} "
            "inputs; such outputs are no vote, so nothing is certified. Check the weights and the noise level."
        )


def probe(model: nn.Module, shape: tuple[int, ...], images: torch.Tensor | None = None) -> int:
    """Run two probe batches through ``model``; return its number of classes.

    The batches (sizes 2 and 3: a program traced with a fixed batch size fails on one) hold a grey
    image, a squared ramp (another mean) and the first of the caller's ``images`` (the images
    actually certified or attacked; a ramp without them) in different company and positions.
    Checks the output is finite logits of shape (batch, classes), with as many classes as the model
    declares, that the model accepts more than one batch size, and that an image's logits do not
    depend on the other images in its batch (the votes on a batch of noisy copies must be draws of
    one classifier).
    """
    device = model_device(model)
    info = getattr(model, "info", None)
    declared = getattr(info, "num_classes", None)
    grey = torch.full(shape, 0.5, device=device)
    ramp = torch.linspace(0, 1, grey.numel(), device=device).view(shape)
    used = images[0].to(device, torch.float32) if images is not None and len(images) else ramp
    small, large = (
        _probe_batch(model, torch.stack([grey, used])),
        _probe_batch(model, torch.stack([used, ramp.square(), grey])),
    )
    for size, out in ((2, small), (3, large)):
        if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != size or out.shape[1] < 2:
            found = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ModelContractError(
                f"model {model_name(model)} must return logits of shape (batch, classes) with at least 2 classes; "
                f"for a batch of {size} it returned {found}"
            )
        if declared is not None and out.shape[1] != declared:
            raise ModelContractError(
                f"model {model_name(model)} declares {declared} classes but returned {out.shape[1]} logits"
            )
        check_finite_logits(model, out)
    if small.shape[1] != large.shape[1]:
        raise ModelContractError(f"model {model_name(model)} returned a different number of logits per batch size")
    check_batch_independent(model, small, large[[2, 0]])
    return int(small.shape[1])


def _probe_batch(model: nn.Module, batch: torch.Tensor) -> object:
    try:
        with torch.no_grad():
            return model(batch)
    except Exception as exc:  # user models may raise anything; say which call failed and why
        if is_out_of_memory(exc):
            raise
        raise ModelContractError(
            f"model {model_name(model)} failed on a probe batch of shape {tuple(batch.shape)} "
            f"({first_line(exc)}). "
            "It must accept float batches (B, C, H, W) of any size B (for torch.export, mark dimension 0 "
            "as dynamic)."
        ) from exc


def check_batch_independent(model: nn.Module, one: torch.Tensor, other: torch.Tensor) -> None:
    """Refuse a model whose logits for the same images differ between two batches by more than rounding.

    The tolerance is ``BATCH_TOLERANCE`` of the logits' scale (at least 1), or 8 units of the logits'
    precision where that is coarser: batched kernels round differently for different batch sizes.
    """
    tolerance = max(BATCH_TOLERANCE, 8 * torch.finfo(one.dtype).eps) if one.is_floating_point() else BATCH_TOLERANCE
    one, other = one.double(), other.double()
    scale = max(1.0, float(one.abs().max()), float(other.abs().max()))
    gap = float((one - other).abs().max())
    if gap > tolerance * scale:
        raise BatchDependenceError(
            f"model {model_name(model)} gave the same image different logits in different batches "
            f"(by {gap:.3g}, above the {tolerance * scale:.3g} that rounding allows): its output depends on "
            "the other images in the batch (batch statistics, a batch mean, a BatchNorm kept in train mode), "
            "so votes on a batch of noisy copies would not be draws of one classifier. Make each image's "
            "logits depend on that image only."
        )


@contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """Run the body with every submodule in eval mode, then give each back the mode the caller left it in.

    In eval mode BatchNorm uses (and never updates) its running statistics and dropout is off, so the
    votes are draws of one fixed classifier and the caller's module state is untouched.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


# (id(model), image shape) -> class count, for the models an enclosing model_contract has checked
_CHECKED: ContextVar[dict[tuple[int, tuple[int, ...]], int] | None] = ContextVar("dsmooth_checked", default=None)


@contextmanager
def model_contract(model: nn.Module, image_shape: tuple[int, ...], images: torch.Tensor | None = None) -> Iterator[int]:
    """Eval mode for the body, after checking the image shape and probing the model; yields its class count.

    ``images`` (B, C, H, W), the ones the body will use, join the probe (see :func:`probe`).

    Inside an enclosing contract for the same model and shape (a loop of certify calls, tuning's
    certificates, the certify command's images) the check is not repeated, and neither is the switch
    to eval mode: the enclosing contract holds it, and the model cannot have changed in between.
    """
    key = (id(model), tuple(image_shape))
    checked = _CHECKED.get() or {}
    if key in checked:
        yield checked[key]
        return
    with evaluating(model):
        check_input_shape(model, image_shape)
        classes = probe(model, tuple(image_shape), images)
        token = _CHECKED.set({**checked, key: classes})
        try:
            yield classes
        finally:
            _CHECKED.reset(token)
