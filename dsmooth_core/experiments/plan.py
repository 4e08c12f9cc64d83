"""What an experiment certifies: methods x sigmas x ranks x sample sizes x levels, and which images.

Everything random is seeded per image (``derive_seed``), never from a shared stream, so an image's
records do not depend on which other images run in the same process: resumed and sharded runs give
the records an uninterrupted run would (for the same certification batch size).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dsmooth_core.attacks import PRESETS, AttackConfig
from dsmooth_core.data import balanced_subset
from dsmooth_core.noise import METHODS, method_class
from dsmooth_core.seeds import derive_seed as derive_seed  # the runner and the package import it from here
from dsmooth_core.settings import CertifySettings


@dataclass(frozen=True)
class Setting:
    """One certification configuration; ``k`` is DSmooth's rank and ``None`` for the other methods."""

    method: str
    sigma: float
    k: int | None
    n: int
    alpha: float

    def fields(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ExperimentSpec:
    """The grid of settings, shared by every image, and the threat they are all measured against."""

    methods: tuple[str, ...] = METHODS
    sigmas: tuple[float, ...] = (0.25,)
    ks: tuple[int, ...] = (10,)
    n0: int = 100
    ns: tuple[int, ...] = (1000,)
    alphas: tuple[float, ...] = (0.001,)
    seed: int = 0
    attack_name: str = "paper"
    attack: AttackConfig = PRESETS["paper"]

    def __post_init__(self) -> None:
        unknown = set(self.methods) - set(METHODS)
        if unknown or not self.methods:
            raise ValueError(f"methods must be among {', '.join(METHODS)}, got {list(self.methods)}")
        for name in ("sigmas", "ns", "alphas"):
            if not getattr(self, name):
                raise ValueError(f"{name} must hold at least one value")
        if any(method_class(m).needs_profile for m in self.methods) and not self.ks:
            raise ValueError("DSmooth needs at least one rank k")
        if any(k < 1 for k in self.ks):
            raise ValueError(f"ranks k must be at least 1, got {list(self.ks)}")
        for method in self.methods:  # every sigma, n and alpha checked once here, as a certify command's
            for sigma in self.sigmas:
                for n in self.ns:
                    for alpha in self.alphas:
                        self.certify_settings(Setting(method, sigma, None, n, alpha), batch=1)

    def certify_settings(self, setting: Setting, batch: int) -> CertifySettings:
        """The settings one certificate of ``setting`` is made with (validated)."""
        return CertifySettings(setting.method, setting.sigma, self.n0, setting.n, setting.alpha, batch, self.seed)

    def settings(self, max_k: int) -> list[Setting]:
        """Every setting, DSmooth's ranks clamped to ``max_k`` (the profile's rank), duplicates dropped."""
        out: list[Setting] = []
        for method in self.methods:
            ranks = sorted({min(k, max_k) for k in self.ks}) if method_class(method).needs_profile else [None]
            for sigma in self.sigmas:
                for k in ranks:
                    for n in self.ns:
                        for alpha in self.alphas:
                            setting = Setting(method, float(sigma), k, int(n), float(alpha))
                            if setting not in out:
                                out.append(setting)
        return out

    def selects(self, record: dict[str, Any]) -> bool:
        """Whether a record belongs to this grid (whatever its image or profile)."""
        return (
            record["method"] in self.methods
            and record["sigma"] in self.sigmas
            and (record["k"] is None or record["k"] in {min(k, record["profile_k"]) for k in self.ks})
            and record["n"] in self.ns
            and record["alpha"] in self.alphas
            and record["n0"] == self.n0
            and record["seed"] == self.seed
            and record["attack_config"] == self.attack.to_dict()
        )


def attack_config(preset: str, queries: int | None = None) -> AttackConfig:
    """A preset threat, optionally with another Square query budget (e.g. a tiny one for tests)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown attack preset {preset!r}; choose one of {', '.join(sorted(PRESETS))}")
    config = PRESETS[preset]
    return config if queries is None else dataclasses.replace(config, n_queries=queries)


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/N"`` -> ``(i, N)`` with ``0 <= i < N``."""
    try:
        part, count = (int(v) for v in text.split("/"))
    except ValueError as exc:
        raise ValueError(f"a shard is written i/N (e.g. 0/4), got {text!r}") from exc
    if not 0 <= part < count:
        raise ValueError(f"shard i/N needs 0 <= i < N, got {text!r}")
    return part, count


def evaluation_indices(
    labels: Sequence[int] | np.ndarray, size: int, seed: int, shard: tuple[int, int] = (0, 1)
) -> list[int]:
    """The shard's share of a class-balanced subset: every N-th image of it, starting at the i-th.

    Shards 0/N .. N-1/N are disjoint and together give the whole subset.
    """
    part, count = shard
    return [int(i) for i in balanced_subset(labels, size, seed)[part::count]]
