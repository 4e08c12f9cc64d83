"""Reading torchvision's ``cifar-10-batches-py`` folder without trusting arbitrary pickles.

The official batches are pickles of numpy arrays and lists. They are read with an unpickler that
can only rebuild numpy arrays, so a tampered file in the data folder cannot run code.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from dsmooth_core.data.errors import DataUnavailableError

BATCHES_DIR = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILES = ("test_batch",)
META_FILE = "batches.meta"

_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(0))[0]  # numpy's array-rebuilding function
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}") from None


def _read(path: Path) -> dict[str, object]:
    try:
        obj = _ArrayUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except (OSError, EOFError, ValueError, TypeError, pickle.UnpicklingError) as exc:
        raise DataUnavailableError(f"{path} is not a readable CIFAR-10 batch file: {exc}") from exc
    if not isinstance(obj, dict):
        raise DataUnavailableError(f"{path} is not a CIFAR-10 batch file (found {type(obj).__name__})")
    return {k.decode() if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def has_batches(folder: Path, train: bool) -> bool:
    """Whether ``folder`` holds the batch files of the split and the class names."""
    names = (*(TRAIN_FILES if train else TEST_FILES), META_FILE)
    return all((folder / n).is_file() for n in names)


def read_batches(folder: Path, train: bool) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Images ``(N, 32, 32, 3)`` uint8, labels int64 and class names from the batch files."""
    images, labels = [], []
    for name in TRAIN_FILES if train else TEST_FILES:
        entry = _read(folder / name)
        try:
            data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            batch_labels = np.asarray(entry["labels"], dtype=np.int64)
        except (KeyError, ValueError) as exc:
            raise DataUnavailableError(f"{folder / name} lacks valid 'data'/'labels': {exc}") from exc
        if len(batch_labels) != len(data):
            raise DataUnavailableError(f"{folder / name} has {len(data)} images but {len(batch_labels)} labels")
        images.append(data.transpose(0, 2, 3, 1))
        labels.append(batch_labels)
    names = _read(folder / META_FILE).get("label_names")
    if not isinstance(names, list):
        raise DataUnavailableError(f"{folder / META_FILE} lacks 'label_names'")
    classes = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    return np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels), classes
