"""Choosing the model, the image and the profile: callbacks and the session's defaults."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import streamlit as st

from dsmooth_core.data import ImageSet
from dsmooth_core.models import DEFAULT_MODEL
from dsmooth_core.profiles import ProfileMismatchError, ThreatProfile, check_usable
from dsmooth_core.settings import ProfileShape
from dsmooth_lab_ui import gallery, lesson_defaults, resources, state

IMAGE_DEFAULT_TRIED = "dsl_image_default_tried"


def cifar_choice(images: ImageSet, index: int, split: str = "test") -> state.ImageChoice:
    label = int(images.labels[index])
    name = images.classes[label]
    return state.ImageChoice(
        image_id=f"cifar10-{split}:{index}",
        source="CIFAR-10",
        caption=f"CIFAR-10 {split} #{index} ({name})",
        pixels=images.images[index],
        label=label,
        label_name=name,
        label_space="cifar10",
        dataset="cifar10",
        split=split,
        index=int(index),
    )


def select_cifar(index: int) -> None:
    """``on_click`` of a gallery button."""
    images, error = resources.cifar10("test")
    if images is None:
        state.put(state.IMAGE_ERROR, error)
        return
    state.put(state.IMAGE, cifar_choice(images, int(index)))
    state.put(state.IMAGE_ERROR, None)


def select_imagenet(path: str, label: int, name: str) -> None:
    try:
        pixels = resources.read_image_file(path, resources.file_stamp(Path(path)))
    except OSError as exc:
        state.put(state.IMAGE_ERROR, f"Cannot read {path}: {exc}")
        return
    state.put(
        state.IMAGE,
        state.ImageChoice(
            image_id=f"imagenet-sample:{Path(path).name}",
            source="ImageNet sample",
            caption=f"ImageNet sample {Path(path).name} ({name})",
            pixels=pixels,
            label=int(label),
            label_name=name,
            label_space="imagenet",
            dataset="imagenet",
            split="sample",
            index=None,
        ),
    )
    state.put(state.IMAGE_ERROR, None)


def upload_choice(name: str, data: bytes, pixels: np.ndarray) -> state.ImageChoice:
    digest = hashlib.sha256(data).hexdigest()[:16]
    return state.ImageChoice(
        image_id=f"upload:{digest}",
        source="upload",
        caption=f"upload {name} ({pixels.shape[1]}x{pixels.shape[0]})",
        pixels=pixels,
    )


def default_image() -> state.ImageChoice:
    """Every page's first image: the guided lesson's measured pick (``lesson_defaults``), on which the three
    methods' radii differ. CIFAR-10 test #``CIFAR_INDEX`` when the data holds it, else the gallery sample."""
    images, _ = resources.cifar10("test")
    if images is not None and len(images.labels) > lesson_defaults.CIFAR_INDEX:
        return cifar_choice(images, lesson_defaults.CIFAR_INDEX)
    return gallery.choice(next(s for s in gallery.samples() if s.file == lesson_defaults.GALLERY_FILE))


def ensure_defaults() -> None:
    """Default image (:func:`default_image`) and default profile (bundled)."""
    if state.get(state.IMAGE) is None and not state.get(IMAGE_DEFAULT_TRIED):
        state.put(IMAGE_DEFAULT_TRIED, True)
        state.put(state.IMAGE, default_image())
    if state.get(state.PROFILE) is None and not state.get(state.PROFILE_DEFAULT_TRIED):
        state.put(state.PROFILE_DEFAULT_TRIED, True)
        choice = state.get(state.MODEL)
        if choice is not None and choice.name == DEFAULT_MODEL and resources.bundled_profile_available():
            try:
                profile = resources.load_profile_file(resources.BUNDLED_PROFILE)
            except (ValueError, OSError, KeyError) as exc:
                state.put(state.PROFILE_ERROR, f"The bundled profile could not be read: {exc}")
            else:
                use_profile(profile, "bundled profile (tuned)")


def use_profile(profile: ThreatProfile, source: str) -> None:
    """Make ``profile`` current with the rank, shrinkage and normalization it was saved with (tuned or not)."""
    choice = state.ProfileChoice(profile, source, ProfileShape.of(profile.covariance))
    state.put(state.PROFILE, choice)
    state.put(state.PROFILE_ERROR, None)
    state.put(state.PROFILE_NOTE, None)
    for key in ("profile_k", "profile_shrinkage", "profile_normalization"):
        st.session_state.pop(key, None)


def usable_profile(
    model, x_shape, image: state.ImageChoice | None = None
) -> tuple[state.ProfileChoice | None, str | None]:
    """The current profile if DSmooth may use it with this model and image, else the reason why not.

    The decision is the library's (:func:`dsmooth_core.profiles.check_usable`). With ``image``, an
    image that was part of the calibration set is refused too (the certificate would leak test
    information).
    """
    choice: state.ProfileChoice | None = state.get(state.PROFILE)
    if choice is None:
        return None, "no threat profile yet"
    try:
        check_usable(choice.profile, model, tuple(x_shape), *calibration_place(image))
    except ProfileMismatchError as exc:
        return None, str(exc)
    return choice, None


def calibration_place(image: state.ImageChoice | None) -> tuple[str | None, str | None, tuple[int, ...]]:
    """Where ``image`` lies in a data set, as ``check_usable`` takes it (nothing for an image from elsewhere)."""
    if image is None or image.dataset is None or image.index is None:
        return None, None, ()
    return image.dataset, image.split or "", (image.index,)
