"""CIFAR-10 from a local folder, downloading it only when it is nowhere to be found."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Literal

import numpy as np

from dsmooth_core.data.cifar_batches import BATCHES_DIR, has_batches, read_batches
from dsmooth_core.data.errors import DataUnavailableError
from dsmooth_core.data.imageset import ImageSet
from dsmooth_core.data.paths import DATA_DIR_ENV, data_dir

Split = Literal["train", "test"]
NPZ_DIR = "cifar10"


def load_cifar10(split: Split, root: Path | None = None, download: bool = True) -> ImageSet:
    """The ``train`` or ``test`` split from ``root`` (default :func:`data_dir`).

    Looks for ``root/cifar10/<split>.npz`` (keys ``images``, ``labels``, ``classes``), then for
    torchvision's ``root/cifar-10-batches-py``. If neither exists and ``download`` is true, the
    official archive is fetched into ``root``; a failed download leaves nothing behind.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root) if root is not None else data_dir()
    train = split == "train"
    npz = root / NPZ_DIR / f"{split}.npz"
    batches = root / BATCHES_DIR
    if npz.is_file():
        return _read_npz(npz)
    if not has_batches(batches, train):
        if not download:
            raise DataUnavailableError(_missing(split, npz, batches, "downloading is switched off"))
        _download(root, npz, batches, split)
    return ImageSet(*read_batches(batches, train))


def _read_npz(path: Path) -> ImageSet:
    try:
        with np.load(path, allow_pickle=False) as archive:
            images = archive["images"]
            labels = archive["labels"]
            classes = tuple(str(c) for c in archive["classes"])
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must be integers, got {labels.dtype}")
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be RGB (N, H, W, 3), got shape {images.shape}")
        return ImageSet(images, labels.astype(np.int64), classes)
    except Exception as exc:  # zero-byte, truncated or bit-flipped archives fail in many ways (zip, zlib, numpy)
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise DataUnavailableError(
            f"{path} is not a valid CIFAR-10 file (expected uint8 'images' (N, 32, 32, 3), "
            f"'labels' and 'classes'): {detail}"
        ) from exc


def _download(root: Path, npz: Path, batches: Path, split: str) -> None:
    """Fetch with torchvision into a scratch folder inside ``root``; move into place only on success."""
    created_root = not root.exists()
    scratch: Path | None = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".cifar10-download-", dir=root))
        import torchvision  # imported on demand: only the download needs it

        torchvision.datasets.CIFAR10(str(scratch), train=split == "train", download=True)
        _move_missing(scratch / BATCHES_DIR, batches)
    except Exception as exc:
        raise DataUnavailableError(_missing(split, npz, batches, f"the download failed: {exc}")) from exc
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        if created_root and root.is_dir() and not any(root.iterdir()):
            root.rmdir()


def _move_missing(source: Path, target: Path) -> None:
    """Move the fresh files into ``target``, keeping any files already there."""
    if not target.exists():
        shutil.move(str(source), str(target))
        return
    for item in source.iterdir():
        if not (target / item.name).exists():
            shutil.move(str(item), str(target / item.name))


def _missing(split: str, npz: Path, batches: Path, why: str) -> str:
    return (
        f"CIFAR-10 ({split}) is not available: neither {npz} nor {batches} exists, and {why}. "
        f"Point {DATA_DIR_ENV} at a folder holding cifar10/train.npz and cifar10/test.npz (or "
        f"torchvision's {BATCHES_DIR}), or connect to the internet so it can be downloaded."
    )
