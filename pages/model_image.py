"""Page 1: choose the model and the image; see the base model's prediction."""

from __future__ import annotations

import streamlit as st

from dsmooth_core.models import DEFAULT_MODEL, available_models
from dsmooth_lab_ui import gallery, image_sources, model_upload, nav, prediction_view, resources, state

SOURCES = ("CIFAR-10 test set", "ImageNet sample", "Upload", "Sample gallery (offline)")


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


def image_section(model) -> None:
    st.subheader("Image")
    images, _ = resources.cifar10("test")
    st.session_state.setdefault("image_source", SOURCES[0] if images is not None else SOURCES[3])
    source = st.radio("Source", SOURCES, key="image_source", horizontal=True, persist_state="session")
    if source == SOURCES[0]:
        image_sources.cifar_gallery()
    elif source == SOURCES[1]:
        image_sources.imagenet_picker()
    elif source == SOURCES[2]:
        image_sources.upload_picker(model)
    else:
        gallery.picker()
    error = state.get(state.IMAGE_ERROR)
    if error:
        st.error(error, icon=":material/broken_image:")


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
    prediction_view.prediction_section(current_model)
    if state.get(state.IMAGE) is not None:
        st.divider()
        nav.link(nav.ATTACK, "Next: attack this image")
