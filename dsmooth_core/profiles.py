"""Threat profiles: DSmooth's covariance fitted to real attack perturbations (docs/MATH.md sections 3, 5).

A profile records what produced it (model, data split and indices, attack) because a covariance is
only meaningful for the model it was attacked on, and a certificate only holds for images that were
not part of the calibration set: that is checked here, not left to the caller.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from dsmooth_core.attacks import AttackConfig, square_then_fgsm
from dsmooth_core.covariance import LowRankCovariance
from dsmooth_core.data import ImageSet, balanced_subset
from dsmooth_core.device import generator_for
from dsmooth_core.progress import ProgressCallback
from dsmooth_core.tuning import TuningGrid, split_calibration, tune_covariance

Keep = Literal["successful", "nonzero"]


class ProfileMismatchError(ValueError):
    """The profile was made for another model, input shape or overlapping images."""


@dataclass(frozen=True, eq=False)
class ThreatProfile:
    covariance: LowRankCovariance
    model_name: str
    model_hash: str
    dataset: str
    split: str
    indices: tuple[int, ...]
    attack: dict[str, Any]
    keep: Keep
    n_attacked: int
    n_kept: int
    seed: int
    # When DSmooth's knobs were tuned: the fitting and tuning indices (both inside ``indices``), the
    # tuning table and the choice; see :class:`Tuning`.
    tuning: dict[str, Any] | None = None
    # ModelInfo.identity of the model attacked (weights, code, normalization, input size, classes);
    # "" in profiles written before it was recorded, which are matched by ``model_hash`` (weights) alone
    model_identity: str = ""

    def metadata(self) -> dict[str, Any]:
        tuned = {} if self.tuning is None else {"tuning": dict(self.tuning)}
        identity = {"model_identity": self.model_identity} if self.model_identity else {}
        return {
            "kind": "threat-profile",
            "model_name": self.model_name,
            "model_hash": self.model_hash,
            **identity,
            "dataset": self.dataset,
            "split": self.split,
            "indices": list(self.indices),
            "attack": dict(self.attack),
            "keep": self.keep,
            "n_attacked": self.n_attacked,
            "n_kept": self.n_kept,
            "seed": self.seed,
            **tuned,
        }

    def summary(self) -> dict[str, Any]:
        """What a reader needs to judge the profile, without the index list."""
        meta = {key: value for key, value in self.metadata().items() if key != "indices"}
        return {**meta, **self.covariance.summary()}

    def save(self, path: str | Path) -> None:
        replace(self.covariance, metadata=self.metadata()).save(path)

    @classmethod
    def load(cls, path: str | Path) -> ThreatProfile:
        """Read and hash-check a profile file (once: the covariance is the profile's)."""
        return cls.from_covariance(LowRankCovariance.load(path), path)

    @classmethod
    def from_covariance(cls, covariance: LowRankCovariance, path: str | Path) -> ThreatProfile:
        """The profile a loaded covariance file holds; refused when the file has no profile metadata."""
        meta = covariance.metadata
        if meta.get("kind") != "threat-profile":
            raise ValueError(f"{path} holds a covariance but no threat-profile metadata")
        try:
            return cls(
                covariance=covariance,
                model_name=_typed(meta, "model_name", str),
                model_hash=_typed(meta, "model_hash", str),
                dataset=_typed(meta, "dataset", str),
                split=_typed(meta, "split", str),
                indices=tuple(_typed({"index": i}, "index", int) for i in _typed(meta, "indices", list)),
                attack=_typed(meta, "attack", dict),
                keep=_typed(meta, "keep", str),
                n_attacked=_typed(meta, "n_attacked", int),
                n_kept=_typed(meta, "n_kept", int),
                seed=_typed(meta, "seed", int),
                tuning=_typed(meta, "tuning", dict) if "tuning" in meta else None,
                model_identity=_typed(meta, "model_identity", str) if "model_identity" in meta else "",
            )
        except (KeyError, TypeError) as exc:
            what = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            raise ValueError(f"{path} has malformed threat-profile metadata: {what}") from None

    def check_matches(self, model: nn.Module) -> None:
        """Refuse to use this profile with a model it was not made for.

        A profile that records the model's identity needs the same identity (weights, program code,
        normalization, input size, class list, architecture); an older one the same weights.
        """
        info = model.info
        if tuple(info.input_shape) != tuple(self.covariance.shape):
            raise ProfileMismatchError(
                f"this threat profile is for inputs of shape {self.covariance.shape}, "
                f"the model takes {info.input_shape}"
            )
        if self.model_identity and info.identity != self.model_identity:
            raise ProfileMismatchError(
                f"this threat profile was built on model '{self.model_name}' (identity {self.model_identity[:12]}), "
                f"not on '{info.name}' (identity {info.identity[:12]}): the weights, normalization, input size, "
                "classes or program differ; build a profile for this model"
            )
        if info.weights_hash != self.model_hash:
            raise ProfileMismatchError(
                f"this threat profile was built on model '{self.model_name}' "
                f"(weights {self.model_hash[:12]}), not on '{info.name}' (weights {info.weights_hash[:12]}); "
                "build a profile for this model"
            )

    def check_disjoint(self, dataset: str, split: str, indices: list[int] | tuple[int, ...]) -> None:
        """Refuse to certify images the covariance was calibrated on (the certificate would leak)."""
        if (dataset, split) != (self.dataset, self.split):
            return
        overlap = sorted(set(indices) & set(self.indices))
        if overlap:
            shown = ", ".join(map(str, overlap[:5])) + (" ..." if len(overlap) > 5 else "")
            raise ProfileMismatchError(
                f"{len(overlap)} image(s) to certify were used to calibrate this profile "
                f"({dataset} {split}: {shown}); use images outside the calibration split"
            )


def check_usable(
    profile: ThreatProfile,
    model: nn.Module,
    input_shape: tuple[int, ...],
    dataset: str | None = None,
    split: str | None = None,
    indices: Sequence[int] = (),
) -> None:
    """The one decision whether ``profile`` may shape DSmooth's noise for ``model`` on these images.

    Refused (:class:`ProfileMismatchError`, with the reason) when it was built on another model, is for
    another input shape, or calibrated on any of ``indices`` of ``dataset``'s ``split``.
    """
    profile.check_matches(model)
    if tuple(profile.covariance.shape) != tuple(input_shape):
        raise ProfileMismatchError(
            f"the profile is for inputs {tuple(profile.covariance.shape)}, the images are {tuple(input_shape)}"
        )
    if dataset is not None and split is not None and len(indices):
        profile.check_disjoint(dataset, split, [int(i) for i in indices])


@dataclass(frozen=True)
class Tuning:
    """Hold out a share of the calibration images to choose DSmooth's normalization, k and shrinkage.

    The rest is attacked and fitted; the held-out images are certified under every setting of ``grid``
    at ``sigma`` (docs/MATH.md section 3). Test images are never involved.
    """

    sigma: float
    share: float = 0.2
    grid: TuningGrid = field(default_factory=TuningGrid)
    n0: int = 100
    n: int = 500
    alpha: float = 0.001
    seed: int = 0
    prune: bool = False  # stop a setting once it cannot win (same choice, fewer forwards; see tune_covariance)


@dataclass(frozen=True)
class Calibration:
    """What picks the calibration images and the profile fitted to their attacks (the model aside).

    Frozen and hashable, so it is the cache key of a profile in the app; with the model's weights
    hash and the subset's indices it gives the identity of the profile file on disk.
    """

    size: int  # a class-balanced subset of this many images
    attack: AttackConfig
    k: int  # directions fitted (clamped to the rank of the data)
    split: str = "train"
    subset_seed: int = 0  # draws the subset
    keep: Keep = "successful"
    seed: int = 0  # seeds the attack
    dataset: str = "cifar10"
    tuning: Tuning | None = None  # choose DSmooth's knobs on held-out calibration images

    def __post_init__(self) -> None:
        if self.keep not in ("successful", "nonzero"):
            raise ValueError(f"keep must be 'successful' or 'nonzero', got {self.keep!r}")

    def indices(self, labels: np.ndarray) -> list[int]:
        """The class-balanced subset of a split with these ``labels``."""
        return [int(i) for i in balanced_subset(labels, self.size, self.subset_seed)]

    def identity(self, model_identity: str, indices: list[int] | tuple[int, ...]) -> str:
        """A short hash of everything that determines the profile (``model_identity``: ModelInfo.identity)."""
        key = [model_identity, self.dataset, self.split, [int(i) for i in indices], self.attack.to_dict()]
        key += [self.k, self.keep, self.seed]
        if self.tuning is not None:  # untuned calibrations keep the identity they always had
            key.append(asdict(self.tuning))
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]

    def cache_path(self, cache_dir: str | Path, model_identity: str, labels: np.ndarray) -> Path:
        """Where :func:`calibrate` keeps this calibration's profile for a model (its ``ModelInfo.identity``)."""
        return Path(cache_dir) / f"profile-{self.identity(model_identity, self.indices(labels))}.pt"


def _typed(meta: dict[str, Any], name: str, kind: type) -> Any:
    """A metadata field of the expected type (a profile file may come from anywhere)."""
    value = meta[name]
    if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
        raise TypeError(f"field {name} must be a {kind.__name__}, got {type(value).__name__} {value!r}"[:200])
    return value


def build_profile(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    calibration: Calibration,
    *,
    indices: list[int] | tuple[int, ...],
    batch_size: int | None = None,
    progress: ProgressCallback | None = None,
) -> ThreatProfile:
    """Attack the calibration ``images`` (at ``indices`` of the split) and fit the covariance of those kept."""
    if len(indices) != len(images):
        raise ValueError(f"{len(indices)} indices given for {len(images)} calibration images")
    keep = calibration.keep
    generator = generator_for(model, calibration.seed)
    result = square_then_fgsm(
        model, images, labels, calibration.attack, generator=generator, progress=progress, batch_size=batch_size
    )
    # A zero perturbation (an image misclassified before any attack, with FGSM off) is no sample of the
    # threat, so it is never kept, even when it counts as a success.
    changed = result.perturbation.flatten(1).abs().amax(dim=1) > 0
    mask = changed & result.success if keep == "successful" else changed
    kept = result.perturbation[mask.to(result.perturbation.device)]
    if len(kept) < 2:
        raise ValueError(
            f"only {len(kept)} of {len(images)} attacks gave a perturbation to keep ({keep}); "
            "attack more images, raise the budget, or keep all non-zero perturbations"
        )
    return ThreatProfile(
        covariance=LowRankCovariance.fit(kept.cpu(), calibration.k),
        model_name=model.info.name,
        model_hash=model.info.weights_hash,
        model_identity=model.info.identity,
        dataset=calibration.dataset,
        split=calibration.split,
        indices=tuple(int(i) for i in indices),
        attack=calibration.attack.to_dict(),
        keep=keep,
        n_attacked=len(images),
        n_kept=len(kept),
        seed=calibration.seed,
    )


def calibrate(
    model: nn.Module,
    data: ImageSet,
    calibration: Calibration,
    *,
    cache_dir: str | Path | None = None,
    batch_size: int | None = None,
    progress: ProgressCallback | None = None,
) -> ThreatProfile:
    """Pick the calibration subset of ``data`` (the split ``calibration.split``) and build its profile.

    With ``cache_dir`` the profile is built once per identity and loaded from its file afterwards.
    """
    path = calibration.cache_path(cache_dir, model.info.identity, data.labels) if cache_dir else None
    if path is not None and path.exists():
        profile = ThreatProfile.load(path)
        profile.check_matches(model)
        return profile
    indices = calibration.indices(data.labels)
    if calibration.tuning is None:
        images, labels = data.tensor(indices), torch.from_numpy(data.labels[indices])
        profile = build_profile(
            model, images, labels, calibration, indices=indices, batch_size=batch_size, progress=progress
        )
    else:
        profile = _tuned_profile(model, data, calibration, indices, batch_size, progress)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        profile.save(temporary)
        temporary.replace(path)
    return profile


def _tuned_profile(
    model: nn.Module,
    data: ImageSet,
    calibration: Calibration,
    indices: list[int],
    batch_size: int | None,
    progress: ProgressCallback | None,
) -> ThreatProfile:
    """Fit on one part of the calibration subset, tune on the other; the profile covers both parts."""
    tuning = calibration.tuning
    assert tuning is not None
    fitted, held_out = fit_on_part(model, data, calibration, indices, tuning.share, tuning.seed, batch_size, progress)
    return tune_profile(model, data, fitted, held_out, tuning, batch_size=batch_size, progress=progress)


def fit_on_part(
    model: nn.Module,
    data: ImageSet,
    calibration: Calibration,
    indices: list[int],
    held_out_share: float,
    seed: int,
    batch_size: int | None = None,
    progress: ProgressCallback | None = None,
) -> tuple[ThreatProfile, list[int]]:
    """The profile fitted on the calibration subset ``indices`` less a held-out share, and that share
    (``split_calibration``): tuning must judge a profile on images it was not fitted to."""
    fitting, held_out = split_calibration(indices, held_out_share, seed)
    fitted = build_profile(
        model,
        data.tensor(fitting),
        torch.from_numpy(data.labels[fitting]),
        calibration,
        indices=fitting,
        batch_size=batch_size,
        progress=progress,
    )
    return fitted, held_out


def tune_profile(
    model: nn.Module,
    data: ImageSet,
    fitted: ThreatProfile,
    held_out: list[int],
    tuning: Tuning,
    *,
    batch_size: int | None = None,
    progress: ProgressCallback | None = None,
) -> ThreatProfile:
    """``fitted`` (a profile of the fitting part) with the knobs ``tuning`` chooses on the ``held_out`` images
    of ``data``; the result covers both parts. One fit serves several tunings (one per sigma)."""
    result = tune_covariance(
        model,
        fitted.covariance,
        data.tensor(held_out),
        data.labels[held_out].tolist(),
        sigma=tuning.sigma,
        grid=tuning.grid,
        n0=tuning.n0,
        n=tuning.n,
        alpha=tuning.alpha,
        batch_size=batch_size or 500,
        seed=tuning.seed,
        prune=tuning.prune,
        progress=progress,
    )
    fitting = list(fitted.indices)
    record = {"fitting_indices": fitting, "tuning_indices": held_out, **result.to_dict()}
    indices = tuple(sorted([*fitting, *held_out]))
    return replace(fitted, covariance=result.apply(fitted.covariance), indices=indices, tuning=record)
