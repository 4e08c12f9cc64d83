"""Page 1: choose the model and the image; see the base model's prediction."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import streamlit as st

from dsmooth_core.contract import NonFiniteLogitsError
from dsmooth_core.data import MAX_UPLOAD_BYTES, UploadError, read_upload
from dsmooth_core.models import DEFAULT_MODEL, available_models
from dsmooth_lab_ui import choices, figures, gallery, model_upload, nav, resources, state
from dsmooth_lab_ui.images import to_uint8, upscale

GALLERY_COLS = 8
GALLERY_ROWS = 3
UPLOAD_TYPES = ["png", "jpg", "jpeg", "gif", "bmp", "webp", "tif", "tiff", "ppm"]
UPLOAD_KEEP_SIDE = 1024  # uploads are stored at most this large (the models take 32 or 224 px)
SOURCES = ("CIFAR-10 test set", "ImageNet sample", "Upload", "Sample gallery (offline)")
PNG_NOTE = "Download any chart as PNG with the camera icon in its toolbar (top right of the chart)."


def _switch_model() -> None:
    """``on_change`` of the model controls: load the new model, or keep the old one and say why."""
    current: state.ModelChoice = state.get(state.MODEL)
    wanted = state.ModelChoice(st.session_state["model_select"], not st.session_state.get("model_untrained"))
    try:
        resources.get_model(wanted)
    except Exception as exc:  # the library explains (offline, weights missing, hub code missing)
        state.put(state.MODEL_ERROR, f"Could not load {wanted.name}: {exc} The previous model stays selected.")
        if current.upload is None:
            st.session_state["model_select"] = current.name
            st.session_state["model_untrained"] = not current.pretrained
        return
    state.put(state.MODEL, wanted)
    state.put(state.MODEL_ERROR, None)


def model_section() -> object | None:
    st.subheader("Model")
    specs = available_models()
    by_name = {s.name: s for s in specs}
    current: state.ModelChoice = state.get(state.MODEL)
    st.session_state.setdefault("model_select", current.name)
    st.session_state.setdefault("model_untrained", not current.pretrained)

    def label(name: str) -> str:
        spec = by_name[name]
        tags = ["default, ships with the app"] if name == DEFAULT_MODEL else []
        if spec.needs_download:
            tags.append("needs a download")
        return f"{name} ({spec.dataset}" + (", " + ", ".join(tags) if tags else "") + ")"

    left, right = st.columns([3, 1], vertical_alignment="bottom")
    left.selectbox(
        "Model",
        [s.name for s in specs],
        key="model_select",
        format_func=label,
        on_change=_switch_model,
        help="Models marked 'needs a download' fetch their weights the first time (internet required).",
    )
    right.toggle(
        "Untrained weights",
        key="model_untrained",
        on_change=_switch_model,
        help="Exercise a model's code paths offline. Its predictions and certificates mean nothing.",
    )
    model_upload.upload_section()
    error = state.get(state.MODEL_ERROR)
    if error:
        st.error(error, icon=":material/error:")
    model = resources.current_model()
    if model is None:
        st.error(state.get(state.MODEL_ERROR) or "No model could be loaded.", icon=":material/error:")
        return None
    info = model.info
    spec = by_name.get(info.name)
    st.caption(
        (spec.description + ". " if spec else "")
        + f"Data set {info.dataset}, input {tuple(info.input_shape)}, {info.num_classes} classes, "
        f"source {info.source}, weights sha256 {info.weights_hash[:16]}..., normalisation inside the model "
        f"(mean {info.mean}, std {info.std}): it takes [0, 1] pixels."
    )
    if info.source == "untrained":
        st.warning("Untrained weights: the predictions below are meaningless.", icon=":material/warning:")
    return model


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
    st.caption(
        f"PNG, JPEG, GIF, BMP, WebP, TIFF or PPM, at most {MAX_UPLOAD_BYTES // 2**20} MB. The image is "
        "resized to the model's input (CIFAR-10 models: 32x32)."
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


def image_section(model) -> None:
    st.subheader("Image")
    images, _ = resources.cifar10("test")
    st.session_state.setdefault("image_source", SOURCES[0] if images is not None else SOURCES[3])
    source = st.radio("Source", SOURCES, key="image_source", horizontal=True, persist_state="session")
    if source == SOURCES[0]:
        cifar_gallery()
    elif source == SOURCES[1]:
        imagenet_picker()
    elif source == SOURCES[2]:
        upload_picker(model)
    else:
        gallery.picker()
    error = state.get(state.IMAGE_ERROR)
    if error:
        st.error(error, icon=":material/broken_image:")


def prediction_section(model) -> None:
    image: state.ImageChoice | None = state.get(state.IMAGE)
    st.subheader("Prediction of the base model")
    if image is None:
        st.info("Choose an image above (or upload one) to see the model's prediction.", icon=":material/info:")
        return
    x = resources.model_input(model, image)
    try:
        probs = resources.probabilities(resources.model_key(model), image.image_id, model, x)
    except NonFiniteLogitsError as exc:  # a "nan%" prediction would look like a result
        st.error(f"No prediction for this image: {exc}", icon=":material/error:")
        return
    classes = model.info.class_names
    label = resources.effective_label(model, image)
    top = int(np.argmax(probs))
    left, right = st.columns([1, 2])
    with left:
        st.image(upscale(to_uint8(x), max(1, 192 // x.shape[-1])), caption=f"{image.caption}, as the model sees it")
        st.metric("Predicted class", classes[top], f"{probs[top]:.1%} softmax probability", delta_color="off")
        if label is None:
            st.caption("True label unknown for this model: the attack will target the model's prediction.")
        elif top == label:
            st.success(f"Correct: the true class is {classes[label]}.", icon=":material/check_circle:")
        else:
            st.warning(f"Wrong: the true class is {classes[label]}.", icon=":material/close:")
    with right:
        st.plotly_chart(
            figures.probability_bar(classes, probs, true_label=label),
            key="probability_chart",
            width="stretch",
        )
        st.caption(PNG_NOTE)


nav.ensure_app()
st.title("Model & image")
st.write(
    "Pick the classifier to smooth and the image to certify. Everything afterwards (attack, noise, "
    "certificates) uses these two; the sidebar shows what is selected."
)
current_model = model_section()
st.divider()
image_section(current_model)
if current_model is not None:
    st.divider()
    prediction_section(current_model)
    if state.get(state.IMAGE) is not None:
        st.divider()
        nav.link(nav.ATTACK, "Next: attack this image")
