"""A user's model file plus what the user states about it, shared by the CLI's --model-file and the app's upload.

The file alone does not say which pixels the model expects or what its classes are, so the user
states them: input size, class names (or a preset) and the input normalization (a preset, explicit
mean/std, or "self" when the model normalizes its own input). Loading itself is
:func:`~dsmooth_core.models.user.load_user_model`; this module turns the statements into its
arguments, fingerprints the file and checks the loaded model on real images.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from dsmooth_core.models.architectures import ARCHITECTURES, TORCHVISION_IMAGENET, default_class_names
from dsmooth_core.models.constants import CIFAR10_CLASSES, CIFAR10_INPUT_SHAPE, CIFAR10_MEAN, CIFAR10_STD
from dsmooth_core.models.errors import ModelLoadError
from dsmooth_core.models.info import file_sha256
from dsmooth_core.models.normalized import Normalized
from dsmooth_core.models.user import load_user_model

# torchvision's ImageNet statistics, which its published weights expect.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
SELF_NORMALIZING = "self"
NORMALIZATION_PRESETS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": (CIFAR10_MEAN, CIFAR10_STD),
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
}
CLASS_PRESETS = ("cifar10", "imagenet")
# Largest model file accepted: the biggest registry model (wide_resnet101_2) is about 500 MB.
MAX_FILE_BYTES = 600 * 2**20
TRUST_REASON = (
    "TorchScript and torch.export files are programs: loading or running one can execute code its "
    "author wrote. Tick this only for files from a source you trust; a state dict (weights only) needs no trust."
)


@dataclass(frozen=True)
class ModelFileOptions:
    """What the user states about a model file; strings as typed, so the CLI and the app share the parsing."""

    architecture: str | None = None  # a registry architecture, required for a state dict
    input_size: str | None = None  # "C,H,W"; None: the architecture's, the .pt2's example, or 3,32,32
    classes: str | None = None  # "cifar10", "imagenet" or comma-separated names; None: from the architecture
    normalization: str = SELF_NORMALIZING  # "self", a preset, or "m1,m2,m3/s1,s2,s3"
    trust_code: bool = False


def _floats(text: str, what: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ModelLoadError(f"{what} must be comma-separated numbers, got {text!r}") from None


def parse_input_size(text: str | None) -> tuple[int, int, int] | None:
    """'3,32,32' -> (3, 32, 32); None stays None."""
    if text is None or not text.strip():
        return None
    try:
        size = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        size = ()
    if len(size) != 3 or min(size) < 1:
        raise ModelLoadError(f"the input size must be C,H,W (three positive integers), got {text!r}")
    return size  # type: ignore[return-value]


def parse_classes(text: str | None) -> tuple[str, ...] | None:
    """A preset's class names, or the comma-separated names given; None stays None."""
    if text is None or not text.strip():
        return None
    key = text.strip().lower()
    if key == "cifar10":
        return CIFAR10_CLASSES
    if key == "imagenet":
        return default_class_names(ARCHITECTURES[TORCHVISION_IMAGENET[0]])
    names = tuple(name.strip() for name in text.split(","))
    if len(names) < 2 or not all(names):
        raise ModelLoadError(f"give a preset ({', '.join(CLASS_PRESETS)}) or at least two comma-separated class names")
    return names


def parse_normalization(text: str | None) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """(mean, std) the model expects its input normalized with; (None, None) when it normalizes itself."""
    key = (text or SELF_NORMALIZING).strip().lower()
    if key == SELF_NORMALIZING:
        return None, None
    if key in NORMALIZATION_PRESETS:
        return NORMALIZATION_PRESETS[key]
    if "/" not in key:
        raise ModelLoadError(
            f"normalization must be {SELF_NORMALIZING!r}, {' or '.join(map(repr, NORMALIZATION_PRESETS))}, "
            f"or mean/std as 'm1,m2,m3/s1,s2,s3'; got {text!r}"
        )
    mean_text, std_text = key.split("/", 1)
    return _floats(mean_text, "the mean"), _floats(std_text, "the std")


def load_model_file(
    data: bytes | Path, options: ModelFileOptions, name: str, device: str | torch.device = "cpu"
) -> Normalized:
    """Load a user's model file as stated by ``options``; every problem is a :class:`ModelLoadError`.

    A model with CIFAR-10's input size and class names is marked as a CIFAR-10 model, so the
    commands and pages that work on CIFAR-10 accept it.
    """
    size = len(data) if isinstance(data, bytes) else (Path(data).stat().st_size if Path(data).is_file() else None)
    if size == 0:
        raise ModelLoadError("the model file is empty (0 bytes)")
    if size is not None and size > MAX_FILE_BYTES:
        raise ModelLoadError(f"the model file has {size / 2**20:.0f} MB; at most {MAX_FILE_BYTES // 2**20} MB")
    mean, std = parse_normalization(options.normalization)
    model = load_user_model(
        data,
        architecture=options.architecture or None,
        input_shape=parse_input_size(options.input_size),
        class_names=parse_classes(options.classes),
        mean=mean,
        std=std,
        name=name,
        trust_code=options.trust_code,
    )
    source = f"file:{name} sha256:{file_sha256(data)}"
    dataset = "cifar10" if _is_cifar10(model) else model.info.dataset
    model.info = dataclasses.replace(model.info, source=source, dataset=dataset)
    return model.to(device)


def _is_cifar10(model: Normalized) -> bool:
    return model.info.input_shape == CIFAR10_INPUT_SHAPE and model.info.class_names == CIFAR10_CLASSES


def probe(model: Normalized, images: torch.Tensor) -> torch.Tensor:
    """Predicted classes of a few real ``[0, 1]`` images; refuses outputs of the wrong shape or NaN."""
    device = next((t.device for t in (*model.parameters(), *model.buffers())), torch.device("cpu"))
    try:
        with torch.no_grad():
            logits = model(images.to(device))
    except Exception as exc:  # user code may raise anything
        raise ModelLoadError(f"the model failed on {len(images)} test images: {exc}") from None
    expected = (len(images), model.info.num_classes)
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != expected:
        found = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ModelLoadError(f"the model returned outputs of shape {found} on the test images; expected {expected}")
    if not torch.isfinite(logits).all():
        raise ModelLoadError("the model returned NaN or infinite outputs on the test images")
    return logits.argmax(dim=1).cpu()
