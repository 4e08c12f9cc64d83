"""Bring your own model: upload a model file, state what it expects, probe it, and select it.

The uploaded model is kept in the session by file checksum and stated options, so switching back
to it costs nothing, and it is selected like a registry model (``ModelChoice.upload``): every page
uses it through ``resources.current_model``. On any failure the previous model stays selected.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import streamlit as st
import torch

from dsmooth_core.models import ARCHITECTURE_NAMES, CIFAR10_CLASSES, Normalized
from dsmooth_core.models.model_file import (
    NORMALIZATION_PRESETS,
    SELF_NORMALIZING,
    TRUST_REASON,
    ModelFileOptions,
    file_sha256,
    load_model_file,
    probe,
)
from dsmooth_core.models.user import ExportedNet
from dsmooth_lab_ui import programs, resources, state

# Streamlit refuses larger files itself (server.maxUploadSize in .streamlit/config.toml).
MAX_MODEL_MB = 200
PROBE_IMAGES = 8
NO_ARCHITECTURE = "none: a TorchScript or torch.export file"
CUSTOM = "custom"
CLASS_CHOICES = ("cifar10", "imagenet", CUSTOM)
NORMALIZATION_CHOICES = (SELF_NORMALIZING, *NORMALIZATION_PRESETS, CUSTOM)


@dataclass(frozen=True)
class ModelCard:
    """What the user sees before using an uploaded model."""

    file_name: str
    file_format: str
    sha256: str
    parameters: int
    input_shape: tuple[int, ...]
    class_names: tuple[str, ...]
    normalization: str
    probe_predictions: tuple[str, ...]
    probe_note: str


def file_format(model: Normalized) -> str:
    if isinstance(model.net, torch.jit.ScriptModule):
        return "TorchScript"
    if isinstance(model.net, ExportedNet):
        return "torch.export (.pt2)"
    return "state dict"


def _probe_batch(model: Normalized) -> tuple[torch.Tensor, list[int] | None, str]:
    """A few CIFAR-10 test images when the model takes them (labels too if its classes are CIFAR-10's),
    else seeded random images; and what they are, for the card."""
    images, _ = resources.cifar10("test")
    if images is not None and tuple(model.info.input_shape) == (3, 32, 32):
        step = max(1, len(images) // PROBE_IMAGES)
        indices = list(range(0, step * PROBE_IMAGES, step))[: len(images)]
        labels = [int(images.labels[i]) for i in indices]
        cifar = model.info.class_names == CIFAR10_CLASSES
        return images.tensor(indices), labels if cifar else None, f"{len(indices)} CIFAR-10 test images"
    shape = tuple(model.info.input_shape)
    batch = torch.rand((PROBE_IMAGES, *shape), generator=torch.Generator().manual_seed(0))
    return batch, None, f"{PROBE_IMAGES} random images"


def upload_key(sha256: str, options: ModelFileOptions) -> str:
    """The session cache key: the file's checksum and what the user stated about it."""
    stated = hashlib.sha256(repr(options).encode()).hexdigest()[:8]
    return f"{sha256[:16]}-{stated}"


def load_upload(file_name: str, data: bytes, options: ModelFileOptions) -> str:
    """Load, probe and keep an uploaded model; returns its key. Raises the library's errors."""
    sha256 = file_sha256(data)
    key = upload_key(sha256, options)
    models: dict[str, tuple[Normalized, ModelCard]] = st.session_state.setdefault(state.UPLOADED_MODELS, {})
    if key in models:
        return key
    model = load_model_file(data, options, name=file_name, device=resources.device())
    programs.remember(model, data)  # a torch.export program goes to the job's worker as this file
    batch, labels, note = _probe_batch(model)
    predicted = probe(model, batch).tolist()
    names = model.info.class_names
    if labels is not None:
        correct = sum(p == t for p, t in zip(predicted, labels, strict=True))
        note += f": {correct} of {len(labels)} correct"
    card = ModelCard(
        file_name=file_name,
        file_format=file_format(model),
        sha256=sha256,
        parameters=sum(p.numel() for p in model.net.parameters()),
        input_shape=tuple(model.info.input_shape),
        class_names=tuple(names),
        normalization=options.normalization,
        probe_predictions=tuple(names[i] for i in predicted),
        probe_note=note,
    )
    models[key] = (model, card)
    return key


def _options() -> ModelFileOptions:
    arch = st.session_state.get("mu_arch", NO_ARCHITECTURE)
    classes = st.session_state.get("mu_classes", "cifar10")
    norm = st.session_state.get("mu_norm", SELF_NORMALIZING)
    return ModelFileOptions(
        architecture=None if arch == NO_ARCHITECTURE else arch,
        input_size=st.session_state.get("mu_size") or None,
        classes=st.session_state.get("mu_class_names", "") if classes == CUSTOM else classes,
        normalization=st.session_state.get("mu_mean_std", "") if norm == CUSTOM else norm,
        trust_code=bool(st.session_state.get("mu_trust")),
    )


def _use_upload() -> None:
    """``on_click`` of the load button: load the upload, or keep the current model and say why."""
    upload = st.session_state.get("mu_file")
    if upload is None:
        return
    try:
        key = load_upload(upload.name, upload.getvalue(), _options())
    except Exception as exc:  # the library's messages say what is wrong with the file
        state.put(state.MODEL_UPLOAD_ERROR, f"{upload.name}: {exc} The previous model stays selected.")
        return
    state.put(state.MODEL, state.ModelChoice(upload.name, upload=key))
    state.put(state.MODEL_UPLOAD_ERROR, None)
    state.put(state.MODEL_ERROR, None)


def _back_to_registry() -> None:
    state.put(state.MODEL, state.ModelChoice(st.session_state["model_select"], not st.session_state["model_untrained"]))


def show_card(card: ModelCard) -> None:
    classes = ", ".join(card.class_names[:10]) + (" ..." if len(card.class_names) > 10 else "")
    st.markdown(
        f"**Model card** · `{card.file_name}` ({card.file_format})  \n"
        f"Parameters: {card.parameters:,} · input {card.input_shape} in [0, 1] pixels · "
        f"normalization: {card.normalization}  \n"
        f"{len(card.class_names)} classes: {classes}  \n"
        f"sha256 `{card.sha256}`  \n"
        f"Probe on {card.probe_note}; predicted: {', '.join(card.probe_predictions)}"
    )


def upload_section() -> None:
    """The expander on the Model & image page."""
    choice: state.ModelChoice = state.get(state.MODEL)
    with st.expander("Use your own model", expanded=choice is not None and choice.upload is not None):
        st.caption(
            f"A state dict of one of the architectures above (read as weights only), or a TorchScript or "
            f"torch.export (.pt2) file, at most {MAX_MODEL_MB} MB. The model takes a batch (B, C, H, W) and "
            "returns logits (B, classes)."
        )
        st.file_uploader("Model file", type=["pt", "pth", "pt2", "ts", "bin"], key="mu_file")
        c1, c2 = st.columns(2)
        c1.selectbox(
            "Architecture (state dicts only)",
            [NO_ARCHITECTURE, *ARCHITECTURE_NAMES],
            key="mu_arch",
            persist_state="session",
        )
        c2.text_input("Input size C,H,W", value="3,32,32", key="mu_size", persist_state="session")
        c3, c4 = st.columns(2)
        classes = c3.selectbox("Classes", CLASS_CHOICES, key="mu_classes", persist_state="session")
        if classes == CUSTOM:
            c3.text_input("Class names, comma-separated", key="mu_class_names", persist_state="session")
        norm = c4.selectbox(
            "Input normalization",
            NORMALIZATION_CHOICES,
            key="mu_norm",
            persist_state="session",
            help="'self': the model normalizes [0, 1] pixels itself. A preset or mean/std: the app applies it.",
        )
        if norm == CUSTOM:
            c4.text_input("mean/std as m1,m2,m3/s1,s2,s3", key="mu_mean_std", persist_state="session")
        # Not kept across pages: trust is given to the file at hand, each time.
        st.checkbox("I trust this file: it is code", key="mu_trust", help=TRUST_REASON)
        st.caption(TRUST_REASON)
        st.button(
            "Load, probe and use this model",
            key="mu_load",
            on_click=_use_upload,
            disabled=st.session_state.get("mu_file") is None,
            icon=":material/upload_file:",
        )
        error = state.get(state.MODEL_UPLOAD_ERROR)
        if error:
            st.error(error, icon=":material/error:")
        if choice is not None and choice.upload is not None:
            uploaded = (state.get(state.UPLOADED_MODELS) or {}).get(choice.upload)
            if uploaded is not None:
                show_card(uploaded[1])
            st.button("Back to the registry model", key="mu_back", on_click=_back_to_registry)
