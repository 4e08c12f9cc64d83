"""The Model & image page's image pickers: the CIFAR-10 test gallery, the ImageNet sample and uploads.

Why a module: each is a panel of its own (filters, pages and a grid of images; a preview; a file
with its notes and an optional true class); the page only chooses which one to show. The offline
sample gallery's picker is ``gallery.picker``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import streamlit as st

from dsmooth_core.data import MAX_UPLOAD_BYTES, UploadError, read_upload
from dsmooth_lab_ui import choices, resources, state
from dsmooth_lab_ui.images import upscale

GALLERY_COLS = 8
GALLERY_ROWS = 3
UPLOAD_TYPES = ["png", "jpg", "jpeg", "gif", "bmp", "webp", "tif", "tiff", "ppm"]
UPLOAD_KEEP_SIDE = 1024  # uploads are stored at most this large (the models take 32 or 224 px)


def cifar_gallery() -> None:
    images, error = resources.cifar10("test")
    if images is None:
        st.warning(error, icon=":material/cloud_off:")
        if st.button("Download CIFAR-10 (needs internet)"):
            with st.spinner("Downloading CIFAR-10 ..."):
                failure = resources.download_cifar10()
            if failure:
                st.error(failure)
            else:
                st.rerun()
        st.caption("Or use the sample gallery (offline), upload an image, or use the ImageNet sample.")
        return
    st.caption(
        f"{len(images):,} test images from {resources.data_dir_note()}. Images in the shared offline copy "
        "went through JPEG compression (about 30 dB PSNR), so accuracies are a little below published ones."
    )
    filters = ["All classes (interleaved)", *images.classes]
    c1, c2, c3 = st.columns([2, 1, 2], vertical_alignment="bottom")
    chosen = c1.selectbox("Class", filters, key="gallery_class", persist_state="session")
    if chosen == filters[0]:
        order = resources.cifar_gallery_order(images)
    else:
        order = np.flatnonzero(images.labels == images.classes.index(chosen))
    per_page = GALLERY_COLS * GALLERY_ROWS
    n_pages = max(1, -(-len(order) // per_page))
    if st.session_state.get("gallery_page", 1) > n_pages:  # a class filter with fewer pages
        st.session_state["gallery_page"] = n_pages
    page_no = c2.number_input(
        f"Page (of {n_pages})",
        min_value=1,
        max_value=n_pages,
        key="gallery_page",
        persist_state="session",
    )
    with c3:
        j1, j2 = st.columns([2, 1], vertical_alignment="bottom")
        jump = j1.number_input(
            "Or test image index", min_value=0, max_value=len(images) - 1, value=0, key="gallery_jump"
        )
        j2.button("Use it", key="gallery_jump_go", on_click=choices.select_cifar, args=(int(jump),))
    current = state.get(state.IMAGE)
    current_id = current.image_id if current else None
    shown = order[(int(page_no) - 1) * per_page : int(page_no) * per_page]
    for row in range(GALLERY_ROWS):
        cols = st.columns(GALLERY_COLS)
        for col, index in zip(cols, shown[row * GALLERY_COLS : (row + 1) * GALLERY_COLS], strict=False):
            index = int(index)
            selected = current_id == f"cifar10-test:{index}"
            with col:
                st.image(
                    upscale(images.images[index], 3),
                    caption=f"#{index} {images.classes[images.labels[index]]}",
                )
                st.button(
                    "Selected" if selected else "Select",
                    key=f"pick_{index}",
                    type="primary" if selected else "secondary",
                    on_click=choices.select_cifar,
                    args=(index,),
                    width="stretch",
                )


def imagenet_picker() -> None:
    items, error = resources.imagenet_items()
    if not items:
        st.warning(error, icon=":material/cloud_off:")
        return
    st.caption(
        f"{len(items)} ImageNet validation-style images (one per 10 classes) from "
        f"{resources.data_dir_note()}. Their labels are ImageNet classes: they count as true labels only for "
        "ImageNet models."
    )
    names = [f"{name} ({label})" for _, label, name in items]
    pick = st.selectbox("ImageNet sample image", range(len(items)), format_func=lambda i: names[i], key="inet_pick")
    path, label, name = items[pick]
    col1, col2 = st.columns([1, 3], vertical_alignment="bottom")
    col1.image(resources.read_image_file(path, resources.file_stamp(Path(path))), width=160)
    col2.button("Use this image", key="inet_use", on_click=choices.select_imagenet, args=(path, label, name))


def upload_picker(model) -> None:
    """An uploaded image becomes the current one; a file that is not an image leaves the current one."""
    size = "" if model is None else f" ({model.info.input_shape[-1]}x{model.info.input_shape[-2]} pixels)"
    st.caption(
        f"PNG, JPEG, GIF, BMP, WebP, TIFF or PPM, at most {MAX_UPLOAD_BYTES // 2**20} MB. The image is "
        f"resized to the model's input{size}."
    )
    upload = st.file_uploader("Upload an image", type=UPLOAD_TYPES, key="upload_file")
    if upload is not None and upload.file_id != state.get(state.UPLOAD_SEEN):
        data = upload.getvalue()
        try:
            img, notes = read_upload(data)
        except UploadError as exc:
            state.put(state.IMAGE_ERROR, f"{upload.name}: {exc} The previous image stays selected.")
        else:
            img.thumbnail((UPLOAD_KEEP_SIDE, UPLOAD_KEEP_SIDE))
            state.put(state.IMAGE, choices.upload_choice(upload.name, data, np.asarray(img)))
            state.put(state.IMAGE_ERROR, None)
            state.put(state.UPLOAD_NOTES, (state.get(state.IMAGE).image_id, notes))
        state.put(state.UPLOAD_SEEN, upload.file_id)
    image = state.get(state.IMAGE)
    noted = state.get(state.UPLOAD_NOTES)
    if image is not None and noted and noted[0] == image.image_id:
        for note in noted[1]:
            st.info(note, icon=":material/info:")
    if image is not None and image.source == "upload" and model is not None:
        classes = list(model.info.class_names)
        options = [None, *range(len(classes))]
        current = image.label if image.label_space == model.info.dataset else None
        picked = st.selectbox(
            "True class of the upload (optional; the attack otherwise targets the model's own prediction)",
            options,
            index=options.index(current) if current in options else 0,
            format_func=lambda i: "unknown" if i is None else classes[i],
            key=f"upload_label_{image.image_id}",
        )
        if picked != current:
            state.put(
                state.IMAGE,
                dataclasses.replace(
                    image,
                    label=picked,
                    label_name=None if picked is None else classes[picked],
                    label_space=None if picked is None else model.info.dataset,
                ),
            )
