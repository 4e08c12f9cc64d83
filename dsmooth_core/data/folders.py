"""Labelled image folders: torchvision's ImageFolder layout or a flat folder with ``labels.csv``."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import NamedTuple

from dsmooth_core.data.errors import DataUnavailableError
from dsmooth_core.data.paths import data_dir

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"})
LABELS_CSV = "labels.csv"
IMAGENET_SAMPLE_DIR = "imagenet_sample"
# Columns that may carry the class name, most specific first.
_NAME_COLUMNS = ("name", "torchvision_category", "class_name", "name_in_filename", "wnid")


class LabelledImage(NamedTuple):
    """An image file with its class index (the model's output index) and class name."""

    path: Path
    label: int
    class_name: str


def load_image_folder(path: Path | str) -> list[LabelledImage]:
    """List the labelled images of ``path``.

    With a ``labels.csv`` (columns ``filename``, ``class_index`` and a name column such as ``name``)
    the listed files are used in the file's order. Otherwise each subfolder is a class, numbered in
    sorted order as torchvision's ImageFolder does.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise DataUnavailableError(f"image folder {folder} does not exist")
    if (folder / LABELS_CSV).is_file():
        return _from_csv(folder)
    return _from_subfolders(folder)


def load_imagenet_sample(root: Path | None = None) -> list[LabelledImage]:
    """The ImageNet sample at ``root/imagenet_sample`` (default root: :func:`data_dir`)."""
    return load_image_folder((Path(root) if root is not None else data_dir()) / IMAGENET_SAMPLE_DIR)


def _from_csv(folder: Path) -> list[LabelledImage]:
    csv_path = folder / LABELS_CSV
    with csv_path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        if "filename" not in columns or "class_index" not in columns:
            raise DataUnavailableError(f"{csv_path} needs 'filename' and 'class_index' columns, has {columns}")
        name_column = next((c for c in _NAME_COLUMNS if c in columns), "class_index")
        items = []
        for line, row in enumerate(reader, start=2):
            image = folder / row["filename"]
            if not image.is_file():
                raise DataUnavailableError(f"{csv_path} line {line} lists {row['filename']}, which is missing")
            try:
                label = int(row["class_index"])
            except ValueError:
                raise DataUnavailableError(f"{csv_path} line {line}: class_index is not an integer") from None
            items.append(LabelledImage(image, label, row[name_column]))
    if not items:
        raise DataUnavailableError(f"{csv_path} lists no images")
    return items


def _from_subfolders(folder: Path) -> list[LabelledImage]:
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataUnavailableError(
            f"{folder} has neither class subfolders nor a {LABELS_CSV}; expected one of the two layouts"
        )
    items = [
        LabelledImage(image, index, class_dir.name)
        for index, class_dir in enumerate(classes)
        for image in sorted(class_dir.iterdir())
        if image.is_file() and image.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not items:
        raise DataUnavailableError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found under {folder}")
    return items
