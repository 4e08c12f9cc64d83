"""The bundled threat profiles read and described from their own records, for the About and Threat profile pages.

Why: the numbers that say what a bundled profile is (its threat, how many images fitted and tuned
it, its knobs, what it certified on held-out images) live in the profile file's metadata. A page
that typed them would silently drift from the file when the profile is rebuilt; these functions
read them from the ``ThreatProfile`` instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dsmooth_core import LowRankCovariance
from dsmooth_core.attacks import PRESETS, AttackConfig
from dsmooth_core.profiles import ThreatProfile
from dsmooth_core.tuning import axis_ratio
from dsmooth_lab_ui import resources

SPLIT_WORDS = {"train": "training", "test": "test"}


def read(path: Path) -> tuple[ThreatProfile | None, str | None]:
    """A bundled profile, or None with the reason (not shipped with this copy, or unreadable)."""
    if not path.is_file():
        return None, f"The bundled profile {path.name} does not ship with this copy."
    try:
        return resources.load_profile_file(path), None
    except (ValueError, OSError, KeyError) as exc:
        return None, f"The bundled profile {path.name} could not be read: {exc}"


def preset_name(attack: Mapping[str, Any]) -> str | None:
    """The name of the attack preset a profile's attack settings equal, if any."""
    try:
        config = AttackConfig.from_dict(dict(attack))
    except (TypeError, ValueError):
        return None
    return next((name for name, preset in PRESETS.items() if preset == config), None)


def eps_text(eps: float) -> str:
    """An l_inf radius as 'n/255' when it is a whole number of grey levels (as presets are), else as is."""
    levels = eps * 255
    return f"{round(levels)}/255" if abs(levels - round(levels)) < 1e-6 else f"{eps:g}"


def threat_text(attack: Mapping[str, Any]) -> str:
    """'the *reachable* threat (Square at eps_inf = 2/255, then FGSM projected back into that ball)'."""
    preset = preset_name(attack)
    if attack.get("fgsm") is None:
        fgsm = "no FGSM step"
    elif attack.get("project_linf"):
        fgsm = "then FGSM projected back into that ball"
    else:
        fgsm = f"then an {attack['fgsm']} FGSM step of {attack['eps_fgsm']:g}"
    named = f"the *{preset}* threat" if preset else "the threat"
    return f"{named} (Square at eps_inf = {eps_text(attack['eps_inf'])}, {fgsm})"


def knobs_text(cov: LowRankCovariance) -> str:
    """'det normalization, k = 100, no shrinkage': the setting a covariance is used at."""
    shrinkage = "no shrinkage" if cov.shrinkage == 0 else f"shrinkage {cov.shrinkage:g}"
    return f"{cov.normalization} normalization, k = {cov.k}, {shrinkage}"


def short_knobs_text(cov: LowRankCovariance) -> str:
    """'det, k = 100': a button-sized name of the setting."""
    return f"{cov.normalization}, k = {cov.k}"


def bundled_caption(tuned: ThreatProfile | None, paper: ThreatProfile | None) -> str:
    """The Threat profile page's note on the bundled profiles that could be read."""
    parts = []
    if tuned is not None:
        record = tuned.tuning
        fitted = len(tuned.indices) if record is None else len(record["fitting_indices"])
        chosen = "" if record is None else f", chosen on {len(record['tuning_indices'])} held-out ones"
        parts.append(
            f"**Tuned** (the default): fitted to {threat_text(tuned.attack)} on {images_text(tuned, fitted)} of "
            f"{tuned.dataset}, its normalization, rank and shrinkage ({knobs_text(tuned.covariance)}){chosen}, as "
            "docs/REPRODUCTION.md reports."
        )
    if paper is not None:
        parts.append(
            f"**Paper's setting**: {knobs_text(paper.covariance)}, as the DSmooth paper defines it, fitted to "
            f"{threat_text(paper.attack)} on {images_text(paper, len(paper.indices))}."
        )
    if not parts:
        return "The bundled profiles could not be read."
    model = (tuned or paper).model_name
    return f"Threat profiles that ship with the bundled model ({model}). " + " ".join(parts)


def images_text(profile: ThreatProfile, count: int) -> str:
    return f"{count} {SPLIT_WORDS.get(profile.split, profile.split)} images"


def tuned_text(file_name: str, profile: ThreatProfile) -> str:
    """The About page's line on the tuned profile: its threat, fit, knobs and held-out score."""
    cov = profile.covariance
    head = f"the bundled profile `{file_name}`, fitted to {threat_text(profile.attack)}"
    knobs = (
        f"**{cov.normalization}** normalization, **k = {cov.k}**, **shrinkage {cov.shrinkage:g}** "
        f"(axis ratio {axis_ratio(cov):.3g})"
    )
    record = profile.tuning
    if record is None:
        return f"{head} on {images_text(profile, len(profile.indices))}: {knobs}. Its file carries no tuning record."
    choice = record["choice"]
    return (
        f"{head} on {images_text(profile, len(record['fitting_indices']))}, its knobs chosen on "
        f"{len(record['tuning_indices'])} more at sigma = {record['sigma']:g}: {knobs}. It certified "
        f"{choice['certified']} of those {choice['images']} held-out images."
    )


def paper_text(file_name: str, paper: ThreatProfile, tuned: ThreatProfile | None) -> str:
    """The About page's line on the paper's setting, with how that setting scored in the tuned profile's table."""
    cov = paper.covariance
    same_images = tuned is not None and set(tuned.indices) == set(paper.indices)
    fitted_on = f"all {len(paper.indices)} of those images" if same_images else images_text(paper, len(paper.indices))
    text = (
        f"`{file_name}`, {knobs_text(cov)} (axis ratio {axis_ratio(cov):.3g}), fitted on {fitted_on}. Along the "
        f"top threat direction its noise's standard deviation is sqrt(mu_max) = {cov.mu_max**0.5:.3g} times that "
        "of isotropic noise at the same sigma"
    )
    row = same_setting_row(tuned, cov)
    if row is None or tuned is None or tuned.tuning is None:
        return text + "."
    return (
        f"{text}. The same setting, fitted on the {len(tuned.tuning['fitting_indices'])} images, certified "
        f"{row['certified']} and abstained on {row['abstained']} of the {row['images']} held-out ones."
    )


def same_setting_row(tuned: ThreatProfile | None, cov: LowRankCovariance) -> Mapping[str, Any] | None:
    """The row of the tuned profile's table at ``cov``'s normalization, k and shrinkage, if it was tried."""
    if tuned is None or tuned.tuning is None:
        return None
    knobs = (cov.normalization, cov.k, cov.shrinkage)
    return next(
        (row for row in tuned.tuning["table"] if (row["normalization"], row["k"], row["shrinkage"]) == knobs), None
    )
