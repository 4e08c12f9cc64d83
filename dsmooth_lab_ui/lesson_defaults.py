"""The guided lesson's default image and settings, as measured by ``benchmarks/lesson_defaults.py``.

Why these: the lesson's first comparison must show the three methods differing. The record of the
measurement (every candidate's base prediction, attack and three certificates with these very
settings, and the rule that picked) is ``benchmarks/lesson_defaults.json``; rerun the script after
changing anything here.
"""

from __future__ import annotations

from typing import NamedTuple

from dsmooth_core import bundled

PROFILE_FILE = bundled.PROFILE  # DSmooth's noise: the app's default (tuned) bundled profile


class LessonSettings(NamedTuple):
    """Small enough for a few seconds per step on 2 CPU cores; every draw is seeded."""

    sigma: float = 0.25
    n0: int = 100
    n: int = 500
    alpha: float = 0.001
    batch: int = 100
    seed: int = 0
    attack_preset: str = "reachable"
    attack_seed: int = 0


SETTINGS = LessonSettings()

# The picks of benchmarks/lesson_defaults.json (its "picks"); a CIFAR-10 test image the base model gets
# wrong (the same record's rows) for step 1.
CIFAR_INDEX = 6
CIFAR_MISTAKE = 5
GALLERY_FILE = "none_rocket.png"
