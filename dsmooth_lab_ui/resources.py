"""Caching wrappers around ``dsmooth_core``: models, data, profiles and the long computations.

Rules: ``st.cache_resource`` for shared, read-only objects (models, data sets, profiles);
``st.cache_data`` for results, keyed only on small values (names, numbers, seeds, hashes). Big
objects (the model, the image tensor, the noise) are passed as ``_``-prefixed arguments, which
Streamlit does not hash; the keys that precede them identify them (model key = name + weights hash,
image id, profile content hash). The long computations (attack, certify, votes, profile building)
run as background jobs: see ``dsmooth_lab_ui.jobs`` and ``dsmooth_lab_ui.tasks``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import streamlit as st
import torch
from PIL import Image

from dsmooth_core import bundled, pick_device
from dsmooth_core.batch_size import suggested_batch_size
from dsmooth_core.data import (
    DataUnavailableError,
    ImageSet,
    balanced_subset,
    data_dir,
    load_cifar10,
    load_imagenet_sample,
)
from dsmooth_core.experiments import load_experiment_model
from dsmooth_core.models import BUNDLED_WEIGHTS, DEFAULT_MODEL, ModelUnavailableError, prepare_image
from dsmooth_core.profiles import ThreatProfile
from dsmooth_lab_ui import compute, state

BUNDLED_PROFILE = bundled.PROFILE
BUNDLED_PAPER_PROFILE = bundled.PAPER_PROFILE
GALLERY_SEED = 0


def file_stamp(path: Path) -> str:
    """Changes when the file changes, so caches pick up a new file (e.g. freshly trained weights)."""
    try:
        info = path.stat()
    except OSError:
        return "missing"
    return f"{info.st_mtime_ns}-{info.st_size}"


# ---------------------------------------------------------------- device and models
@st.cache_resource(show_spinner=False)
def device() -> torch.device:
    return pick_device()


@st.cache_resource(show_spinner="Loading the model ...", max_entries=3)
def _model(name: str, pretrained: bool, device_name: str, stamp: str) -> torch.nn.Module:
    # untrained weights come from a fixed seed, as in the CLI, so records and profiles line up with its runs
    return load_experiment_model(name, device_name, pretrained=pretrained)


def get_model(choice: state.ModelChoice) -> torch.nn.Module:
    """Load (once) the chosen model on the best device; raises the library's errors."""
    if choice.upload is not None:
        uploaded = (state.get(state.UPLOADED_MODELS) or {}).get(choice.upload)
        if uploaded is None:
            raise ModelUnavailableError(
                f"the uploaded model {choice.name} is not in this session any more: upload it again"
            )
        return uploaded[0]
    stamp = file_stamp(BUNDLED_WEIGHTS) if choice.name == DEFAULT_MODEL else ""
    return _model(choice.name, choice.pretrained, str(device()), stamp)


def current_model() -> torch.nn.Module | None:
    """The session's model, or ``None`` (with the reason in ``MODEL_ERROR``) when it cannot be loaded."""
    choice = state.get(state.MODEL)
    if choice is None:
        return None
    try:
        return get_model(choice)
    except Exception as exc:  # the library's messages say what to do (offline, missing weights)
        state.put(state.MODEL_ERROR, str(exc))
        return None


@st.cache_resource(show_spinner=False, max_entries=3)
def suggested_batch(model_key: str, _model: torch.nn.Module) -> int:
    """A certify batch size that fits the device's free memory (measured once per model)."""
    return suggested_batch_size(_model, tuple(_model.info.input_shape))


def model_key(model: torch.nn.Module) -> str:
    info = model.info
    return f"{info.name}@{info.weights_hash[:16]}"


# ---------------------------------------------------------------- data
@st.cache_resource(show_spinner="Loading CIFAR-10 ...", max_entries=2)
def _cifar10(split: str, root: str, stamp: str) -> ImageSet:
    return load_cifar10(split, Path(root), download=False)


def cifar10_stamp(split: str) -> str:
    """Changes whenever either form of a CIFAR-10 split in the data folder does (a cache key part)."""
    root = data_dir()
    return file_stamp(root / "cifar10" / f"{split}.npz") + file_stamp(root / "cifar-10-batches-py")


def cifar10(split: str = "test") -> tuple[ImageSet | None, str | None]:
    """The split when it is on disk (never downloads), else ``None`` and the library's message."""
    root = data_dir()
    stamp = cifar10_stamp(split)
    try:
        return _cifar10(split, str(root), stamp), None
    except DataUnavailableError as exc:
        return None, str(exc)


def download_cifar10() -> str | None:
    """Fetch CIFAR-10 (both splits) when online; returns an error message or ``None``."""
    try:
        for split in ("test", "train"):
            load_cifar10(split, download=True)
    except DataUnavailableError as exc:
        return str(exc)
    _cifar10.clear()
    return None


@st.cache_data(show_spinner=False, max_entries=4)
def gallery_order(split: str, root: str, stamp: str, size: int, _labels: np.ndarray) -> np.ndarray:
    """A seeded class-interleaved order of the whole split, for browsing every class at once."""
    return balanced_subset(_labels, size, GALLERY_SEED)


def cifar_gallery_order(images: ImageSet, split: str = "test") -> np.ndarray:
    root = data_dir()
    # the largest balanced size: every class contributes as many as the smallest class has
    per_class = int(np.bincount(images.labels).min())
    stamp = cifar10_stamp(split)
    return gallery_order(split, str(root), stamp, per_class * len(images.classes), images.labels)


@st.cache_data(show_spinner=False, max_entries=2)
def imagenet_sample(root: str) -> list[tuple[str, int, str]]:
    return [(str(item.path), item.label, item.class_name) for item in load_imagenet_sample(Path(root))]


def imagenet_items() -> tuple[list[tuple[str, int, str]], str | None]:
    try:
        return imagenet_sample(str(data_dir())), None
    except DataUnavailableError as exc:
        return [], str(exc)


@st.cache_data(show_spinner=False, max_entries=8)
def read_image_file(path: str, stamp: str) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def model_input(model: torch.nn.Module, choice: state.ImageChoice) -> torch.Tensor:
    """The image at the model's input size, (C,H,W) in [0, 1] (memoised per model and image)."""
    key = (model_key(model), choice.image_id)
    memo = state.get(state.X_MEMO)
    if memo is not None and memo[0] == key:
        return memo[1]
    x = prepare_image(Image.fromarray(choice.pixels), model.info)
    state.put(state.X_MEMO, (key, x))
    return x


def effective_label(model: torch.nn.Module, choice: state.ImageChoice) -> int | None:
    """The image's true label when it is in the model's class space, else ``None``."""
    if choice.label is None or choice.label_space != model.info.dataset:
        return None
    return choice.label if 0 <= choice.label < len(model.info.class_names) else None


# ---------------------------------------------------------------- profiles
@st.cache_resource(show_spinner="Loading the threat profile ...", max_entries=4)
def _profile_file(path: str, stamp: str) -> ThreatProfile:
    return ThreatProfile.load(path)


def load_profile_file(path: Path) -> ThreatProfile:
    return _profile_file(str(path), file_stamp(path))


@st.cache_data(show_spinner=False, max_entries=8)
def profile_bytes(content_hash: str, n_indices: int, _profile: ThreatProfile) -> bytes:
    """The profile as the file ThreatProfile.save writes, for a download button."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "profile.pt"
        _profile.save(path)
        return path.read_bytes()


def bundled_profile_available() -> bool:
    return BUNDLED_PROFILE.is_file()


def bundled_paper_profile_available() -> bool:
    return BUNDLED_PAPER_PROFILE.is_file()


# ---------------------------------------------------------------- cached results
@st.cache_data(show_spinner=False, max_entries=256)
def probabilities(model_key: str, image_id: str, _model: torch.nn.Module, _x: torch.Tensor) -> np.ndarray:
    return compute.class_probabilities(_model, _x)


def data_dir_note() -> str:
    env = os.environ.get("DSMOOTH_DATA_DIR")
    return f"data folder {data_dir()}" + ("" if env else " (set DSMOOTH_DATA_DIR to use another)")
