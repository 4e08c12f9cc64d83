"""The offline sample gallery (package data in dsmooth_core/assets/gallery), for machines without CIFAR-10.

Why: a newcomer without a data folder should see an image and be able to attack and certify it at
once. The pictures are freely licensed samples from scikit-image (see dsmooth_core/assets/gallery/SOURCE.md),
not CIFAR-10 images: the shared CIFAR-10 files may not be committed. Each carries its CIFAR-10
class when one applies; the others have no label, so the app works with the model's prediction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache

import numpy as np
import streamlit as st
from PIL import Image

from dsmooth_core import bundled
from dsmooth_core.models import CIFAR10_CLASSES
from dsmooth_lab_ui import state
from dsmooth_lab_ui.images import upscale

FOLDER = bundled.GALLERY
SOURCE = "sample gallery"


@dataclass(frozen=True)
class Sample:
    file: str
    caption: str
    cifar10_class: str | None
    licence: str


@cache
def samples() -> tuple[Sample, ...]:
    """The gallery's entries, in the order of gallery.json."""
    entries = json.loads((FOLDER / "gallery.json").read_text())
    return tuple(Sample(e["file"], e["caption"], e["cifar10_class"], e["licence"]) for e in entries)


@cache
def pixels(file: str) -> np.ndarray:
    with Image.open(FOLDER / file) as img:
        pixels = np.asarray(img.convert("RGB"))
    pixels.setflags(write=False)
    return pixels


def choice(sample: Sample) -> state.ImageChoice:
    """The sample as the session's image (labelled only when it has a CIFAR-10 class)."""
    label = CIFAR10_CLASSES.index(sample.cifar10_class) if sample.cifar10_class else None
    what = sample.cifar10_class or "no CIFAR-10 class"
    return state.ImageChoice(
        image_id=f"gallery:{sample.file}",
        source=SOURCE,
        caption=f"sample: {sample.caption} ({what})",
        pixels=pixels(sample.file),
        label=label,
        label_name=sample.cifar10_class,
        label_space="cifar10" if label is not None else None,
    )


def select(index: int) -> None:
    """``on_click`` of a gallery button."""
    state.put(state.IMAGE, choice(samples()[index]))
    state.put(state.IMAGE_ERROR, None)


def picker() -> None:
    """The gallery on the Model & image page: every sample with a Select button."""
    st.caption(
        "Freely licensed sample pictures that ship with the app (scikit-image's CC0 / public-domain samples, "
        "cut to 32x32; see dsmooth_core/assets/gallery/SOURCE.md). They are not CIFAR-10 images: only those with a "
        "CIFAR-10 class carry a true label; for the others the attack targets the model's own prediction. "
        "Set DSMOOTH_DATA_DIR to a folder with CIFAR-10 to browse the real test set."
    )
    current = state.get(state.IMAGE)
    current_id = current.image_id if current else None
    cols = st.columns(len(samples()))
    for index, (col, sample) in enumerate(zip(cols, samples(), strict=True)):
        selected = current_id == f"gallery:{sample.file}"
        with col:
            what = sample.cifar10_class or "no class"
            st.image(upscale(pixels(sample.file), 3), caption=f"{sample.caption} ({what})")
            st.button(
                "Selected" if selected else "Select",
                key=f"sample_{index}",
                type="primary" if selected else "secondary",
                on_click=select,
                args=(index,),
                width="stretch",
            )
