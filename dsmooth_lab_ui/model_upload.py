"""Bring your own model: upload a model file, state what it expects, probe it, and select it.

The uploaded model is kept in the session by its identity (``ModelInfo.identity``: weights, program
code, normalization, input size, classes, architecture), so loading it again keeps the probed copy,
and it is selected like a registry model (``ModelChoice.upload``): every page uses it through
``resources.current_model``, and every result is keyed by that identity. On any failure the previous
model stays selected. A Cohen-format checkpoint fills the fields in itself when it is chosen.
"""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st
import torch

from dsmooth_core.models import ARCHITECTURE_NAMES, CIFAR10_CLASSES, Normalized
from dsmooth_core.models.cohen_checkpoint import COHEN_ARCHITECTURES, COHEN_SOURCE
from dsmooth_core.models.info import file_sha256
from dsmooth_core.models.model_file import (
    NORMALIZATION_PRESETS,
    SELF_NORMALIZING,
    TRUST_REASON,
    ModelFileOptions,
    cohen_statement,
    load_model_file,
    probe,
)
from dsmooth_core.models.user import ExportedNet
from dsmooth_lab_ui import programs, resources, state

# Streamlit refuses larger files itself (server.maxUploadSize in .streamlit/config.toml): 300 MB, because
# Cohen et al.'s ImageNet checkpoints with their optimizer state are about 205 MB.
PROBE_IMAGES = 8
NO_ARCHITECTURE = "none: TorchScript, torch.export or Cohen-format file"
# Cohen et al.'s checkpoints are named checkpoint.pth.tar
FILE_TYPES = ("pt", "pth", "pt2", "ts", "bin", "tar")
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
    identity: str  # ModelInfo.identity: what every result of this model is keyed by


def _cohen_arch(model: Normalized) -> str | None:
    """The ``arch`` of a model read from a Cohen-format checkpoint (its source starts ``cohen:<arch>``)."""
    head = model.info.source.split(" ", 1)[0]
    return head.split(":", 1)[1] if head.startswith(f"{COHEN_SOURCE}:") else None


def file_format(model: Normalized) -> str:
    arch = _cohen_arch(model)
    if arch is not None:
        return f"Cohen-format checkpoint ({arch})"
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


def load_upload(file_name: str, data: bytes, options: ModelFileOptions) -> str:
    """Load, probe and keep an uploaded model; returns its identity. Raises the library's errors.

    The file is loaded each time: only the loaded model knows its identity (a TorchScript file's
    code, the normalization and input size stated, the weights). A model the session already has
    keeps its probed copy.
    """
    model = load_model_file(data, options, name=file_name, device=resources.device())
    identity = resources.model_key(model)
    models: dict[str, tuple[Normalized, ModelCard]] = st.session_state.setdefault(state.UPLOADED_MODELS, {})
    if identity in models:
        return identity
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
        sha256=file_sha256(data),
        parameters=sum(p.numel() for p in model.net.parameters()),
        input_shape=tuple(model.info.input_shape),
        class_names=tuple(names),
        normalization=_normalization(model, options),
        probe_predictions=tuple(names[i] for i in predicted),
        probe_note=note,
        identity=identity,
    )
    models[identity] = (model, card)
    return identity


def _normalization(model: Normalized, options: ModelFileOptions) -> str:
    if _cohen_arch(model) is None:
        return options.normalization
    return f"the checkpoint's ({model.info.dataset}: mean {model.info.mean}, std {model.info.std})"


def _prefill_from_checkpoint() -> None:
    """``on_change`` of the uploader: a Cohen-format checkpoint states its own input, classes and normalization."""
    upload = st.session_state.get("mu_file")
    arch = cohen_statement(upload.getvalue()) if upload is not None else None
    st.session_state["mu_cohen"] = None if arch is None else arch.arch
    if arch is None:
        return
    st.session_state["mu_arch"] = NO_ARCHITECTURE
    st.session_state["mu_size"] = ",".join(map(str, arch.input_shape))
    st.session_state["mu_classes"] = arch.dataset
    st.session_state["mu_norm"] = SELF_NORMALIZING


def _checkpoint_note(arch_name: str) -> str:
    arch = COHEN_ARCHITECTURES[arch_name]
    return (
        f"Cohen-format checkpoint of {arch.arch} for {arch.dataset}: the fields below are filled in from it. "
        f"Its normalization (mean {arch.mean}, std {arch.std}) is applied inside the model, so noise stays in "
        "[0, 1] pixel units."
    )


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
        identity = load_upload(upload.name, upload.getvalue(), _options())
    except Exception as exc:  # the library's messages say what is wrong with the file
        state.put(state.MODEL_UPLOAD_ERROR, f"{upload.name}: {exc} The previous model stays selected.")
        return
    state.put(state.MODEL, state.ModelChoice(upload.name, upload=identity))
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
        f"sha256 `{card.sha256}` · identity `{card.identity[:16]}` (weights, code, normalization, input size, "
        "classes: any change is another model)  \n"
        f"Probe on {card.probe_note}; predicted: {', '.join(card.probe_predictions)}"
    )


def upload_section() -> None:
    """The expander on the Model & image page."""
    choice: state.ModelChoice = state.get(state.MODEL)
    limit_mb = st.get_option("server.maxUploadSize")
    with st.expander("Use your own model", expanded=choice is not None and choice.upload is not None):
        st.caption(
            f"A state dict of one of the architectures above (read as weights only), a checkpoint in Cohen et "
            f"al.'s format ({', '.join(COHEN_ARCHITECTURES)}; architecture, classes and normalization come "
            f"from the file), or a TorchScript or torch.export (.pt2) file, at most {limit_mb} MB. The "
            "model takes a batch (B, C, H, W) and returns logits (B, classes)."
        )
        st.file_uploader("Model file", type=list(FILE_TYPES), key="mu_file", on_change=_prefill_from_checkpoint)
        cohen = st.session_state.get("mu_cohen")
        if cohen is not None and st.session_state.get("mu_file") is not None:
            st.info(_checkpoint_note(cohen), icon=":material/info:")
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
