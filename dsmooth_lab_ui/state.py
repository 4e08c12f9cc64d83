"""Session-state keys and the records kept in them, so results survive page switches.

Every record carries the identity of what produced it (the model's identity, the image's id, the
settings), so a page can tell a result that belongs to the current model and image from a stale one.
Keys are built by :func:`dsmooth_core.settings.result_key` over these identities, nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import streamlit as st
import torch

from dsmooth_core import Certificate, SmoothingNoise
from dsmooth_core.attacks import AttackResult
from dsmooth_core.covariance import LowRankCovariance
from dsmooth_core.profiles import ThreatProfile
from dsmooth_core.settings import TORCH_FORWARD, CertifySettings, ProfileShape, result_key

# ---------------------------------------------------------------- keys
MODEL = "dsl_model"  # ModelChoice
MODEL_ERROR = "dsl_model_error"  # str: why the last model switch failed (the previous model stays)
IMAGE = "dsl_image"  # ImageChoice | None
IMAGE_ERROR = "dsl_image_error"  # str: why the last image choice failed (the previous image stays)
UPLOAD_SEEN = "dsl_upload_seen"  # file id of the upload already processed
UPLOAD_NOTES = "dsl_upload_notes"  # (image id, notes): how an upload was read (first frame used, bits scaled)
ATTACK = "dsl_attack"  # AttackRecord | None
PROFILE = "dsl_profile"  # ProfileChoice | None
PROFILE_ERROR = "dsl_profile_error"
PROFILE_NOTE = "dsl_profile_note"  # str: e.g. the requested rank k was clamped to the data's rank
PROFILE_DEFAULT_TRIED = "dsl_profile_default_tried"
CERTIFY = "dsl_certify"  # CertifyRecord | None
NOISE_VOTES = "dsl_noise_votes"  # dict: the last vote count of the Noise explorer
X_MEMO = "dsl_x_memo"  # (result_key(model, image), model input tensor)
UPLOADED_MODELS = "dsl_uploaded_models"  # dict model identity -> (model, card): this session's uploaded models
MODEL_UPLOAD_ERROR = "dsl_model_upload_error"  # str: why the last model upload failed (the model stays)
AUDIT = "dsl_audit"  # dict method -> AuditView: audits of the current certificates


@dataclass(frozen=True)
class ModelChoice:
    """A registry model by name; ``pretrained=False`` uses untrained weights (to try code paths offline).

    ``upload`` is the identity (``ModelInfo.identity``) of a model uploaded in this session (then
    ``name`` is its file name).
    """

    name: str
    pretrained: bool = True
    upload: str | None = None


@dataclass(frozen=True, eq=False)
class ImageChoice:
    """The image being studied, as loaded (display pixels), with its label if known.

    ``label`` indexes the classes of ``label_space`` (a data set name, e.g. ``cifar10``); it is used
    only with models of that data set. ``dataset``/``split``/``index`` locate the image in a data set,
    which lets DSmooth refuse images that were part of the profile's calibration set.
    """

    image_id: str
    source: str
    caption: str
    pixels: np.ndarray  # (H, W, 3) uint8
    label: int | None = None
    label_name: str | None = None
    label_space: str | None = None
    dataset: str | None = None
    split: str | None = None
    index: int | None = None

    @cached_property
    def identity(self) -> str:
        """The image by id and content: an id alone may name other pixels (a data folder that changed)."""
        return result_key(self.image_id, torch.from_numpy(np.ascontiguousarray(self.pixels)))


@dataclass(frozen=True, eq=False)
class ProfileChoice:
    """A threat profile with the shape (normalization, rank, shrinkage) chosen for it (no refit)."""

    profile: ThreatProfile
    source: str
    shape: ProfileShape

    @property
    def k(self) -> int:
        return self.shape.k

    @property
    def shrinkage(self) -> float:
        return self.shape.shrinkage

    @property
    def normalization(self) -> str:
        return self.shape.normalization

    @cached_property
    def covariance(self) -> LowRankCovariance:
        return self.shape.apply(self.profile.covariance)

    @cached_property
    def content_hash(self) -> str:
        return self.covariance.content_hash()

    def describe(self) -> str:
        p = self.profile
        return (
            f"{self.source}: {p.dataset} {p.split}, {p.n_kept}/{p.n_attacked} perturbations, k = {self.k}, "
            f"shrinkage = {self.shrinkage:g}, {self.normalization}-normalized St"
        )


@dataclass(frozen=True, eq=False)
class AttackRecord:
    """One Square + FGSM run on the current image: the library's result for a batch of one, on the CPU.

    ``model_key`` is the model's identity (``resources.model_key``); ``forward`` the engine that answered
    Square's queries (``backends.forward_name``).
    """

    model_key: str
    image_id: str
    label: int
    label_is_prediction: bool
    config: dict[str, Any]
    seed: int
    result: AttackResult
    forward: str = TORCH_FORWARD

    @property
    def perturbation(self) -> torch.Tensor:
        """The image's perturbation (C,H,W)."""
        return self.result.perturbation[0]


@dataclass(frozen=True, eq=False)
class AttackedPredictions:
    """PREDICT at the attacked image x + delta per method (display name -> class, ABSTAIN = -1), and the
    successful attack it was run for (a later attack on the image makes it stale)."""

    attack: AttackRecord
    predictions: dict[str, int]


@dataclass(eq=False)
class CertifyRecord:
    """The last certification run: per method its settings, the noise used and its certificate.

    ``model_key`` is the model's identity; ``settings`` maps each method key to the settings it was
    certified with; ``profile`` and ``profile_hash`` say which threat profile, shaped how, made
    DSmooth's noise (None when no method used one). ``forward`` names the engine of the model's forward.
    """

    model_key: str
    model_name: str
    image_id: str
    settings: dict[str, CertifySettings]
    label: int | None
    profile: str | None = None
    profile_hash: str | None = None
    results: list[tuple[SmoothingNoise, Certificate]] = field(default_factory=list)
    attacked: AttackedPredictions | None = None  # when the image's attack fooled the base model
    forward: str = "torch"  # the engine that ran the model's forward (dsmooth_core.backends.forward_name)


def init() -> None:
    """Defaults for a new session (the model is the bundled one; the image is chosen on page 1)."""
    from dsmooth_core.models import DEFAULT_MODEL

    defaults: dict[str, Any] = {
        MODEL: ModelChoice(DEFAULT_MODEL),
        MODEL_ERROR: None,
        IMAGE: None,
        IMAGE_ERROR: None,
        UPLOAD_SEEN: None,
        ATTACK: None,
        PROFILE: None,
        PROFILE_ERROR: None,
        PROFILE_DEFAULT_TRIED: False,
        CERTIFY: None,
    }
    for key, value in defaults.items():
        if key not in st.session_state:
            st.session_state[key] = value


def get(key: str, default: Any = None) -> Any:
    return st.session_state.get(key, default)


def put(key: str, value: Any) -> None:
    st.session_state[key] = value
