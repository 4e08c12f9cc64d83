"""Every page's state as a link: the shareable inputs of each page live in the URL's query parameters.

Why: a teacher who sets up a telling case hands it out as a link; opening it in a fresh browser
reproduces the page and, after the same button, the same numbers. Each page declares which inputs are
shared (``PAGES``: groups of query parameters per page path from ``nav``); ``restore`` reads them once
when a page opens, ``sync`` writes them after every run, so the address bar always holds the link.
A bad or stale value (unknown model, index out of range, sigma <= 0, garbage) is dropped with a
one-line note and the default stays: a link never raises. Uploads (model, image, profile file) cannot
travel in a link; the link says so and the opener gets the default.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode

import streamlit as st

from dsmooth_core.attacks import PRESETS, AttackConfig
from dsmooth_core.attacks.support import WHOLE_IMAGE, Support
from dsmooth_core.errors import InputRefused
from dsmooth_core.models import MODEL_NAMES
from dsmooth_core.noise import METHOD_CLASSES
from dsmooth_core.settings import ProfileShape
from dsmooth_lab_ui import choices, gallery, nav, resources, state, widgets, world_2d, world_2d_view

LAST_PAGE = "dsl_links_page"  # the page of the last run: a different one now means the page just opened
NOTES = "dsl_links_notes"  # (page path, notes) from the last restore, shown while that page stays open
PAGE_PARAM = nav.PAGE_PARAM
DRAWN = "dsl_links_drawn"  # the page whose Copy-link control this run drew (app.py then draws none)
WRITTEN = "dsl_links_written"  # the query parameters sync wrote last: still in the URL after a page switch
UPLOAD = "upload"  # the value a link carries for a model, image or profile that cannot be shared
MAX_DRAWS = 10_000_000  # a link asking for more noise draws than this is a typo, not a lesson
MAX_SEED = 2**53 - 1  # the largest integer a number widget holds exactly (a JavaScript number)

# The pages' own option strings (their radios), mirrored here; tests/test_links.py checks they match.
IMAGE_SOURCES = {"cifar10": "CIFAR-10 test set", "imagenet": "ImageNet sample", "gallery": "Sample gallery (offline)"}
PROFILE_SOURCES = {"bundled": "Bundled profile", "built": "Build from calibration images"}
TUNED_SOURCE = "bundled profile (tuned)"
PAPER_SOURCE = "bundled profile (paper's setting)"
AGAIN = "upload it again on the Model & image page (the default is used until then)"
REBUILD = (
    "The link's threat profile was built from calibration images: press 'Build the profile' on the Threat "
    "profile page to rebuild it with the link's settings (DSmooth has no profile until then)."
)
NOISE_SIGMAS = (0.0, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0)  # pages/noise_explorer.py SIGMA_CHOICES
METHOD_NAMES = {key: cls.name for key, cls in METHOD_CLASSES.items()}  # URL key -> the multiselect's name


class Group(Protocol):
    """Some of a page's shareable inputs: the query parameters it owns, read back and written out."""

    names: tuple[str, ...]

    def restore(self, params: Mapping[str, str]) -> list[str]:
        """Put the valid values of ``params`` into the session; one note per value dropped."""
        ...

    def values(self) -> dict[str, str]:
        """The session's current values, as query-parameter strings (absent ones left out)."""
        ...


# ---------------------------------------------------------------- parsers: str -> value, ValueError when bad
def integer(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError("not a whole number") from None
        if (low is not None and value < low) or (high is not None and value > high):
            raise ValueError(
                f"must lie in [{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
            )
        return value

    return parse


def number(low: float, high: float, *, open_low: bool = False, open_high: bool = False) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = _float(text)
        below = value <= low if open_low else value < low
        above = value >= high if open_high else value > high
        if not math.isfinite(value) or below or above:
            left, right = "(" if open_low else "[", ")" if open_high else "]"
            raise ValueError(f"must lie in {left}{low:g}, {high:g}{right}")
        return value

    return parse


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError("not a number") from None


def one_of(options: Iterable[Any]) -> Callable[[str], Any]:
    by_text = {_text(option): option for option in options}

    def parse(text: str) -> Any:
        if text not in by_text:
            raise ValueError(f"must be one of {', '.join(by_text)}")
        return by_text[text]

    return parse


def float_of(options: Iterable[float]) -> Callable[[str], float]:
    """One of ``options``, however the number is written (0.5, .5, 5e-1)."""
    allowed = tuple(options)

    def parse(text: str) -> float:
        value = _float(text)
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(f'{v:g}' for v in allowed)}")
        return allowed[allowed.index(value)]

    return parse


def flag(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be 1 or 0")


def several(item: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    """A comma-separated list, each entry parsed by ``item`` (duplicates dropped, order kept)."""

    def parse(text: str) -> list[Any]:
        out: list[Any] = []
        for part in filter(None, (p.strip() for p in text.split(","))):
            value = item(part)
            if value not in out:
                out.append(value)
        return out

    return parse


def support(text: str) -> Support:
    """Which pixels a threat moves, as ``support_text`` writes it: ``whole``, or ``TOP,LEFT,SIDE/GRID/OUTSIDE``
    (the window part empty for the whole image)."""
    if text == "whole":
        return WHOLE_IMAGE
    try:
        window, grid, outside = text.split("/")
        box = tuple(int(v) for v in window.split(",")) if window else None
        return Support(window=box, grid=int(grid), outside=float(outside))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not a threat support (whole, or TOP,LEFT,SIDE/GRID/OUTSIDE): {exc}") from None


def _support_text(value: Support) -> str:
    if value.whole_image:
        return "whole"
    window = "" if value.window is None else _text(value.window)
    return f"{window}/{value.grid}/{_text(value.outside)}"


def _text(value: Any) -> str:
    """A value as it goes into a URL: floats in full (repr), so a number comes back bit for bit."""
    if isinstance(value, Support):
        return _support_text(value)
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return ",".join(_text(v) for v in value)
    return str(value)


def _dropped(name: str, text: str, why: str) -> str:
    shown = text if len(text) <= 40 else text[:37] + "..."
    return f"The link's {name} = {shown!r} was ignored ({why}); the default is used."


# ---------------------------------------------------------------- groups of plain widget values
@dataclass(frozen=True)
class Param:
    """One widget's value in the URL: query-parameter ``name``, session-state ``key``, how to read and write it."""

    name: str
    key: str
    parse: Callable[[str], Any]
    format: Callable[[Any], str] = _text


@dataclass(frozen=True)
class Fields:
    """Widget values restored one by one; ``check`` may veto a combination (e.g. n0 > n)."""

    params: tuple[Param, ...]
    check: Callable[[dict[str, Any]], list[str]] | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def restore(self, params: Mapping[str, str]) -> list[str]:
        notes, parsed = [], {}
        for p in self.params:
            if p.name not in params:
                continue
            try:
                parsed[p.name] = p.parse(params[p.name])
            except ValueError as exc:
                notes.append(_dropped(p.name, params[p.name], str(exc)))
        if self.check is not None:
            notes += self.check(parsed)  # drops what it refuses from ``parsed``
        for p in self.params:
            if p.name in parsed:
                st.session_state[p.key] = parsed[p.name]
        return notes

    def values(self) -> dict[str, str]:
        return {
            p.name: p.format(st.session_state[p.key]) for p in self.params if st.session_state.get(p.key) is not None
        }


# The attack widgets' fields: URL name -> (widget field of ``widgets.attack_settings``, parser).
ATTACK_FIELDS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "eps_inf": ("eps_inf", number(0.0, 1.0, open_low=True)),
    "queries": ("n_queries", integer(1, 1_000_000)),
    "p_init": ("p_init", number(0.0, 1.0, open_low=True)),
    "fgsm": ("fgsm", one_of(widgets.FGSM_CHOICES)),
    "eps_fgsm": ("eps_fgsm", number(0.0, 1000.0)),
    "project": ("project_linf", flag),
    "support": ("support", support),  # a structured preset's, kept when another field makes it custom
}


@dataclass(frozen=True)
class Attack:
    """The attack settings of ``widgets.attack_settings`` under a widget ``prefix``, URL names under ``name_prefix``.

    Restored as a whole: the preset's values, then the link's fields over them; a combination the
    library refuses (``AttackConfig``) leaves the preset's values.
    """

    prefix: str
    name_prefix: str
    default_preset: str
    overrides: tuple[tuple[str, Any], ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return (f"{self.name_prefix}preset", *(self.name_prefix + field for field in ATTACK_FIELDS))

    def _start(self, preset: str) -> dict[str, Any]:
        if preset in PRESETS:
            return widgets._widget_values(PRESETS[preset])
        return {**widgets._widget_values(PRESETS[self.default_preset]), **dict(self.overrides)}

    def restore(self, params: Mapping[str, str]) -> list[str]:
        if not any(name in params for name in self.names):
            return []
        notes: list[str] = []
        preset_name = f"{self.name_prefix}preset"
        preset = widgets.CUSTOM if self.overrides else self.default_preset
        if preset_name in params:
            try:
                preset = one_of([*PRESETS, widgets.CUSTOM])(params[preset_name])
            except ValueError as exc:
                notes.append(_dropped(preset_name, params[preset_name], str(exc)))
        start = self._start(preset)
        values = dict(start)
        for field, (widget_field, parse) in ATTACK_FIELDS.items():
            name = self.name_prefix + field
            if name in params:
                try:
                    values[widget_field] = parse(params[name])
                except ValueError as exc:
                    notes.append(_dropped(name, params[name], str(exc)))
        try:
            AttackConfig(**{**values, "fgsm": None if values["fgsm"] == "none" else values["fgsm"]})
        except (ValueError, TypeError) as exc:
            notes.append(f"The link's attack settings were refused ({exc}); the preset's settings are used.")
            values = start
        if preset != widgets.CUSTOM and values != start:
            preset = widgets.CUSTOM  # the link's fields differ from the named preset
        st.session_state[f"{self.prefix}preset"] = preset
        for field, value in values.items():
            st.session_state[f"{self.prefix}{field}"] = value
        return notes

    def values(self) -> dict[str, str]:
        preset = st.session_state.get(f"{self.prefix}preset")
        if preset is None:
            return {}
        out = {f"{self.name_prefix}preset": str(preset)}
        for field, (widget_field, _) in ATTACK_FIELDS.items():
            value = st.session_state.get(self.prefix + widget_field)
            if value is not None:
                out[self.name_prefix + field] = _text(value)
        return out


# ---------------------------------------------------------------- the session's records: model, image, profile
class ModelGroup:
    """The model: a registry name and whether its weights are pretrained (an upload cannot be shared)."""

    names = ("model", "pretrained")

    def restore(self, params: Mapping[str, str]) -> list[str]:
        name = params.get("model")
        if name is None:
            return []
        if name == UPLOAD:
            return [f"The link was made with an uploaded model, which a link cannot carry: {AGAIN}."]
        if name not in MODEL_NAMES:
            return [_dropped("model", name, "no such model in the registry")]
        notes, pretrained = [], True
        if "pretrained" in params:
            try:
                pretrained = flag(params["pretrained"])
            except ValueError as exc:
                notes.append(_dropped("pretrained", params["pretrained"], str(exc)))
        wanted = state.ModelChoice(name, pretrained)
        if wanted == state.get(state.MODEL):
            return notes
        try:
            resources.get_model(wanted)
        except Exception as exc:  # the library explains (offline, weights missing); the link must not raise
            return [*notes, f"The link's model {name} could not be loaded ({exc}); the current model stays."]
        state.put(state.MODEL, wanted)
        state.put(state.MODEL_ERROR, None)
        st.session_state["model_select"] = wanted.name  # the Model & image page's controls show it
        st.session_state["model_untrained"] = not wanted.pretrained
        return notes

    def values(self) -> dict[str, str]:
        choice: state.ModelChoice | None = state.get(state.MODEL)
        if choice is None:
            return {}
        if choice.upload is not None:
            return {"model": UPLOAD}
        return {"model": choice.name, "pretrained": _text(choice.pretrained)}


class ImageGroup:
    """The image by its id: ``cifar10-test:<index>``, ``imagenet-sample:<file>``, ``gallery:<file>``."""

    names = ("image",)

    def restore(self, params: Mapping[str, str]) -> list[str]:
        text = params.get("image")
        if text is None:
            return []
        current = state.get(state.IMAGE)
        if current is not None and current.image_id == text and current.source != "upload":
            return []
        kind, _, rest = text.partition(":")
        if kind == UPLOAD:
            return [f"The link was made with an uploaded image, which a link cannot carry: {AGAIN}."]
        if kind == "cifar10-test":
            return self._cifar(text, rest)
        if kind == "imagenet-sample":
            items, error = resources.imagenet_items()
            names = [Path(path).name for path, _, _ in items]
            if rest not in names:
                return [_dropped("image", text, error or "no such ImageNet sample here")]
            index = names.index(rest)
            choices.select_imagenet(*items[index])
            st.session_state["inet_pick"] = index
            return self._chosen(text, "imagenet")
        if kind == "gallery":
            files = [sample.file for sample in gallery.samples()]
            if rest not in files:
                return [_dropped("image", text, "no such sample in the gallery")]
            gallery.select(files.index(rest))
            return self._chosen(text, "gallery")
        return [_dropped("image", text, "not an image id")]

    def _cifar(self, text: str, rest: str) -> list[str]:
        images, error = resources.cifar10("test")
        if images is None:
            return [_dropped("image", text, error or "CIFAR-10 is not available here")]
        try:
            index = integer(0, len(images) - 1)(rest)
        except ValueError as exc:
            return [_dropped("image", text, f"the test index {exc}")]
        choices.select_cifar(index)
        st.session_state["gallery_jump"] = index
        return self._chosen(text, "cifar10")

    @staticmethod
    def _chosen(text: str, source: str) -> list[str]:
        error = state.get(state.IMAGE_ERROR)
        if error:
            state.put(state.IMAGE_ERROR, None)
            return [_dropped("image", text, error)]
        st.session_state["image_source"] = IMAGE_SOURCES[source]
        return []

    def values(self) -> dict[str, str]:
        image: state.ImageChoice | None = state.get(state.IMAGE)
        if image is None:
            return {}
        return {"image": UPLOAD if image.source == "upload" else image.image_id}


CALIBRATION_MAX_K = 512  # the Threat profile page's largest rank to fit
CALIBRATION = Fields(
    (
        Param("cal_split", "prof_split", one_of(["train", "test"])),
        Param("cal_n", "prof_n", integer(2, 5000)),
        Param("cal_subset_seed", "prof_subset_seed", integer(0)),
        Param("cal_k", "prof_k", integer(1, CALIBRATION_MAX_K)),
        Param("cal_keep", "prof_keep", one_of(["successful", "nonzero"])),
        Param("cal_seed", "prof_seed", integer(0)),
        Param("cal_batch", "prof_batch", integer(1, 100_000)),
        Param("tune", "prof_tune", flag),
        Param("tune_sigma", "prof_tune_sigma", number(0.01, 2.0)),
        Param("tune_share", "prof_tune_share", number(0.1, 0.5)),
        Param("tune_n", "prof_tune_n", integer(10, 10_000)),
    )
)
CALIBRATION_ATTACK = Attack("prof_", "cal_", "conventional", (("n_queries", 100),))
SHAPE_NAMES = ("norm", "k", "shrink")
PENDING_SHAPE = "dsl_links_pending_shape"  # a built profile's shape from a link, for when it is built


def _shape_fields(params: Mapping[str, str], max_k: int) -> tuple[dict[str, Any], list[str]]:
    """The link's normalization, k and shrinkage (those given and valid), and a note for each bad one."""
    parsers = {
        "normalization": ("norm", one_of(("det", "trace"))),
        "k": ("k", integer(1, max_k)),
        "shrinkage": ("shrink", number(0.0, 1.0)),
    }
    fields, notes = {}, []
    for field, (name, parse) in parsers.items():
        if name in params:
            try:
                fields[field] = parse(params[name])
            except ValueError as exc:
                notes.append(_dropped(name, params[name], str(exc)))
    return fields, notes


def _shape_values(choice: state.ProfileChoice) -> dict[str, str]:
    return {"norm": choice.normalization, "k": str(choice.k), "shrink": _text(choice.shrinkage)}


def _reshape(choice: state.ProfileChoice, fields: dict[str, Any]) -> list[str]:
    """Give the profile in use the link's shape (its own for fields not given; no refit)."""
    try:
        wanted = ProfileShape(**{**dataclasses.asdict(choice.shape), **fields})
    except InputRefused as exc:  # the parsers keep to the library's bounds; say so if one ever does not
        return [f"The link's profile shape was refused ({exc}); the profile's own shape is used."]
    if wanted != choice.shape:
        state.put(state.PROFILE, dataclasses.replace(choice, shape=wanted))
        for key in ("profile_k", "profile_shrinkage", "profile_normalization"):
            st.session_state.pop(key, None)  # the shape controls start from the profile in use
    return []


def _apply_pending_shape() -> None:
    """A link's shape for a built profile takes effect once that profile is built (any other drops it)."""
    fields = st.session_state.get(PENDING_SHAPE)
    choice: state.ProfileChoice | None = state.get(state.PROFILE)
    if not fields or choice is None:
        return
    del st.session_state[PENDING_SHAPE]
    if profile_kind(choice) == "built":
        fitted_k = choice.profile.covariance.k  # the data may allow fewer directions than the link's k
        for note in _reshape(choice, {**fields, "k": min(fields.get("k", fitted_k), fitted_k)}):
            st.warning(note, icon=":material/link_off:")


def profile_kind(choice: state.ProfileChoice | None) -> str:
    """What a link can say about the profile in use: none, tuned, paper, built, or ``upload`` (a file)."""
    if choice is None:
        return "none"
    if choice.source == TUNED_SOURCE:
        return "tuned"
    if choice.source == PAPER_SOURCE:
        return "paper"
    if choice.source.startswith("built here"):
        return "built"
    return UPLOAD


class ProfileGroup:
    """The threat profile: bundled (tuned or the paper's) with its shape, or built with its calibration settings.

    A built profile is not rebuilt by opening a link (minutes of attacks): the settings come back and
    the note says to press Build; until then DSmooth has no profile, so no other profile stands in.
    """

    names = ("profile", *SHAPE_NAMES, *CALIBRATION.names, *CALIBRATION_ATTACK.names)

    def restore(self, params: Mapping[str, str]) -> list[str]:
        kind = params.get("profile")
        if kind is None:
            return []
        if kind == "none":
            state.put(state.PROFILE, None)
            return []
        if kind == UPLOAD:
            state.put(state.PROFILE, None)
            return [
                "The link was made with a threat profile loaded from a file, which a link cannot carry: load the "
                "file on the Threat profile page (DSmooth has no profile until then)."
            ]
        if kind == "built":
            state.put(state.PROFILE, None)
            st.session_state["profile_source"] = PROFILE_SOURCES["built"]
            fields, notes = _shape_fields(params, CALIBRATION_MAX_K)
            st.session_state[PENDING_SHAPE] = fields or None  # applied when the build delivers (``opened``)
            notes += CALIBRATION.restore(params) + CALIBRATION_ATTACK.restore(params)
            return [*notes, REBUILD]
        if kind not in ("tuned", "paper"):
            return [_dropped("profile", kind, "must be tuned, paper, built, none or upload")]
        return self._bundled(kind, params)

    def _bundled(self, kind: str, params: Mapping[str, str]) -> list[str]:
        path, source = (
            (resources.BUNDLED_PROFILE, TUNED_SOURCE)
            if kind == "tuned"
            else (resources.BUNDLED_PAPER_PROFILE, PAPER_SOURCE)
        )
        try:
            profile = resources.load_profile_file(path)
        except (ValueError, OSError, KeyError) as exc:
            return [_dropped("profile", kind, f"the bundled profile could not be read: {exc}")]
        current: state.ProfileChoice | None = state.get(state.PROFILE)
        if current is None or current.profile is not profile:
            choices.use_profile(profile, source)
            current = state.get(state.PROFILE)
        st.session_state["profile_source"] = PROFILE_SOURCES["bundled"]
        fields, notes = _shape_fields(params, profile.covariance.k)
        return notes + _reshape(current, fields)

    def values(self) -> dict[str, str]:
        choice: state.ProfileChoice | None = state.get(state.PROFILE)
        kind = profile_kind(choice)
        if kind in ("tuned", "paper"):
            return {"profile": kind, **_shape_values(choice)}
        if kind == "built":
            return {"profile": kind, **_shape_values(choice), **CALIBRATION.values(), **CALIBRATION_ATTACK.values()}
        return {"profile": kind}


# ---------------------------------------------------------------- the pages' own settings
def _n0_within_n(parsed: dict[str, Any]) -> list[str]:
    if "n0" in parsed and "n" in parsed and parsed["n0"] > parsed["n"]:
        n0 = parsed.pop("n0")
        return [_dropped("n0", str(n0), f"larger than n = {parsed['n']}")]
    return []


def _names_of(keys: list[str]) -> list[str]:
    return [METHOD_NAMES[key] for key in keys]


def _keys_of(names: list[str]) -> str:
    return ",".join(key for key, name in METHOD_NAMES.items() if name in names)


CERTIFY = Fields(
    (
        Param("methods", "cert_methods", lambda text: _names_of(several(one_of(METHOD_NAMES))(text)), _keys_of),
        Param("sigma", "cert_sigma", number(0.0, 100.0, open_low=True)),
        Param("n0", "cert_n0", integer(1, MAX_DRAWS)),
        Param("n", "cert_n", integer(1, MAX_DRAWS)),
        Param("alpha", "cert_alpha", number(0.0, 1.0, open_low=True, open_high=True)),
        Param("batch", "cert_batch", integer(1, 1_000_000)),
        Param("seed", "cert_seed", integer(0, MAX_SEED)),
    ),
    check=_n0_within_n,
)
ATTACK = Attack("atk_", "", "conventional")
ATTACK_SEED = Fields((Param("seed", "atk_seed", integer(0, MAX_SEED)),))
NOISE = Fields(
    (
        Param("sigmas", "noise_sigmas", several(float_of(NOISE_SIGMAS))),
        Param("seed", "noise_seed", integer(0, MAX_SEED)),
        Param("votes_sigma", "votes_sigma", float_of(s for s in NOISE_SIGMAS if s > 0)),
        Param("draws", "votes_count", integer(10, 100_000)),
        Param("votes_batch", "votes_batch", integer(1, 1_000_000)),
        Param("votes_seed", "votes_seed", integer(0, MAX_SEED)),
    )
)
MODEL, IMAGE, PROFILE = ModelGroup(), ImageGroup(), ProfileGroup()
WORLD = Fields(
    (
        Param("data", "world_dataset", one_of(world_2d.DATASETS)),
        Param("classifier", "world_classifier", one_of(world_2d.CLASSIFIERS)),
        Param("seed", "world_seed", integer(0, 10_000)),
        Param("sigma", "world_sigma", number(0.02, 0.3)),
        Param("cov", "world_cov_mode", one_of(world_2d_view.COVARIANCE_MODES)),
        Param("angle", "world_angle", integer(-90, 90)),
        Param("ratio", "world_ratio", number(1.0, 6.0)),
        Param("eps", "world_eps", number(0.02, 0.3)),
        Param("u", "world_u", number(0.0, 1.0)),
        Param("v", "world_v", number(0.0, 1.0)),
        Param("n", "world_n", integer(100, 200_000)),
        Param("alpha", "world_alpha", float_of(world_2d_view.ALPHAS)),
        Param("cert_seed", "world_cert_seed", integer(0, 10_000)),
    )
)


def number_list(text: str) -> str:
    """One or more numbers as the Experiments page reads them (it parses and checks each itself)."""
    if not re.fullmatch(r"[0-9eE.,+\- ]{1,200}", text) or not re.search(r"[0-9]", text):
        raise ValueError("not a list of numbers")
    return text


# The records folder and the Ray address stay out: they name places on the server, not a setting to share.
EXPERIMENTS = Fields(
    (
        Param("methods", "exp_methods", several(one_of(METHOD_NAMES)), lambda keys: ",".join(keys)),
        Param("sigmas", "exp_sigmas", number_list),
        Param("ks", "exp_ks", number_list),
        Param("ns", "exp_ns", number_list),
        Param("alphas", "exp_alphas", number_list),
        Param("n0", "exp_n0", integer(1, MAX_DRAWS)),
        Param("images", "exp_size", integer(1, 100_000)),
        Param("calibration", "exp_calibration", integer(2, 100_000)),
        Param("seed", "exp_seed", integer(0, MAX_SEED)),
        Param("preset", "exp_attack", one_of(sorted(PRESETS))),
        Param("queries", "exp_queries", integer(1, 1_000_000)),
        Param("batch", "exp_batch", integer(1, 1_000_000)),
        Param("gamma", "exp_gamma", number(0.0, 0.5)),
    )
)

# Each page's shareable inputs, in restore order (the model before the image before what uses them).
PAGES: dict[str, tuple[Group, ...]] = {
    nav.MODEL_IMAGE: (MODEL, IMAGE),
    nav.ATTACK: (MODEL, IMAGE, ATTACK, ATTACK_SEED),
    nav.PROFILE: (MODEL, IMAGE, PROFILE),
    nav.NOISE: (MODEL, IMAGE, PROFILE, NOISE),
    nav.CERTIFY: (MODEL, IMAGE, PROFILE, CERTIFY),
    nav.EXPERIMENTS: (MODEL, EXPERIMENTS),
    nav.WORLD: (WORLD,),
    nav.ABOUT: (),
}


def register(page_path: str, *groups: Group) -> None:
    """Declare a page's shareable inputs (for pages added later, e.g. a lesson page with its own step)."""
    PAGES[page_path] = groups


# ---------------------------------------------------------------- the contract: restore, sync, url_for, control
def _params() -> dict[str, str]:
    return {key: st.query_params[key] for key in st.query_params}  # the last value of a repeated key


def restore(page_path: str) -> list[str]:
    """Put the page's values from the URL into the session; a note for each value dropped, never an exception."""
    params = _params()
    known = {name for groups in PAGES.values() for group in groups for name in group.names}
    unknown = sorted(set(params) - known)
    notes = [f"The link's unknown parameters were ignored: {', '.join(unknown)}."] if unknown else []
    for group in PAGES.get(page_path, ()):
        try:
            notes += group.restore(params)
        except Exception as exc:  # a group's own bug must not cost the page: say which part was dropped
            notes.append(f"Part of the link ({', '.join(group.names[:3])}) could not be used: {exc}")
    return notes


def values(page_path: str) -> dict[str, str]:
    """The page's current shareable state as query parameters."""
    out: dict[str, str] = {}
    for group in PAGES.get(page_path, ()):
        out.update(group.values())
    return out


def sync(page_path: str) -> None:
    """Write the page's current shareable state into the URL (only when it changed)."""
    wanted = values(page_path)
    st.session_state[WRITTEN] = wanted
    if _params() != wanted:
        st.query_params.from_dict(wanted)


def opened(page_path: str) -> list[str]:
    """Call once per run with the page about to run: restores the URL's values when the page has just opened.

    A page opens on a session's first run and on every page switch; on reruns of the same page the
    URL holds what ``sync`` wrote, so restoring then would only undo the user's last change. Parameters
    that are still those the previous page wrote are no link either (they could set this page's
    inputs of the same name, e.g. another page's seed).
    """
    _follow_page_param(page_path)
    _apply_pending_shape()
    st.session_state.pop(DRAWN, None)
    if st.session_state.get(LAST_PAGE) != page_path:
        st.session_state[LAST_PAGE] = page_path
        params = _params()
        notes = restore(page_path) if params and params != st.session_state.get(WRITTEN) else []
        st.session_state[NOTES] = (page_path, notes)
    shown = st.session_state.get(NOTES)
    return list(shown[1]) if shown and shown[0] == page_path else []


def path_of(page: Any) -> str:
    """The nav path (``nav.PAGES``) of the ``st.Page`` that ``st.navigation`` returned, found by its unique title."""
    return next((p.path for p in nav.PAGES if p.title == page.title), page.title)


def _follow_page_param(page_path: str) -> None:
    """Go to the page a ``page`` parameter names, with the link's other parameters (a rerun, if not there)."""
    if PAGE_PARAM not in st.query_params:
        return
    rest = {key: value for key, value in _params().items() if key != PAGE_PARAM}
    wanted = st.query_params[PAGE_PARAM]
    target = next((p.path for p in nav.PAGES if Path(p.path).stem == wanted), None)
    if target is not None and target != page_path:
        st.switch_page(target, query_params=rest)
    st.query_params.from_dict(rest)


def url_path(page_path: str) -> str:
    """The page's URL pathname, as ``st.Page`` infers it ("" for the first, default page)."""
    return "" if nav.PAGES and nav.PAGES[0].path == page_path else Path(page_path).stem


def params_for(page_path: str, **overrides: Any) -> dict[str, str]:
    """The page's current shareable state with ``overrides`` (query-parameter names) on top, for ``st.page_link``."""
    return {**values(page_path), **{name: _text(value) for name, value in overrides.items()}}


def address(page_path: str, **params: Any) -> str:
    """A relative link to the page with exactly ``params`` (query-parameter names), for clients outside a
    session (benchmarks handing each browser its settings). A name the page does not read raises here,
    so a renamed parameter cannot be dropped silently by the app."""
    known = {name for group in PAGES.get(page_path, ()) for name in group.names}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"{page_path} reads no link parameter {', '.join(unknown)}")
    query = urlencode({name: _text(value) for name, value in params.items()})
    path = url_path(page_path) or "./"
    return f"{path}?{query}" if query else path


def url_for(page_path: str, **overrides: Any) -> str:
    """A relative link to the page with the session's current state and ``overrides`` (e.g. ``sigma=0.5``)."""
    query = urlencode(params_for(page_path, **overrides))
    path = url_path(page_path) or "./"
    return f"{path}?{query}" if query else path


def unshareable(page_path: str) -> list[str]:
    """What this page's state holds that a link cannot carry (uploads)."""
    groups = PAGES.get(page_path, ())
    out = []
    if MODEL in groups and MODEL.values().get("model") == UPLOAD:
        out.append("The model is an upload: the link opens with the default model.")
    if IMAGE in groups and IMAGE.values().get("image") == UPLOAD:
        out.append("The image is an upload: the link opens with the default image.")
    if PROFILE in groups and profile_kind(state.get(state.PROFILE)) == UPLOAD:
        out.append("The threat profile was loaded from a file: the link opens without it.")
    return out


def copy_link_control(page_path: str) -> None:
    """The page's link with its copy button; states that depend on an upload say they cannot be shared.

    app.py draws it in the sidebar after every page (``sidebar_control``); a page that draws it itself,
    where it suits the page better, replaces that one.
    """
    st.session_state[DRAWN] = page_path
    relative = url_for(page_path)
    base = st.context.url  # the page's address in the user's browser, without its query
    query = urlencode(values(page_path))
    link = (f"{base}?{query}" if query else base) if base else relative
    st.markdown(":material/link: **Copy link** to this page with these settings")
    st.code(link, language=None, wrap_lines=True)
    st.caption("Opened elsewhere, it shows the same settings; the same button then gives the same numbers.")
    for note in unshareable(page_path):
        st.caption(f":material/warning: {note}")


def sidebar_control(page_path: str, container: Any) -> None:
    """app.py's Copy-link control in ``container``, after the page ran, unless the page drew its own."""
    if st.session_state.get(DRAWN) != page_path:
        with container:
            copy_link_control(page_path)
