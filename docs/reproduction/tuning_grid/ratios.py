"""Where the tuning grid's axis-ratio floor binds on the bundled profiles (docs/MATH.md section 3).

For each bundled profile, its fit (shrinkage back to 0; the tuned profile keeps only its k = 10
directions, the paper's profile k = 100) is put through every (k, shrinkage) of the default tuning
grid, the floor setting included, and the axis ratio sqrt(mu_max / mu_min) of St is written with
whether the setting is eligible. The ratio does not depend on the normalization, so it is listed once.
No model is run: the ratio follows from the spectrum alone.

Usage: PYTHONPATH=. python docs/reproduction/tuning_grid/ratios.py > docs/reproduction/tuning_grid/ratios.csv
"""

from __future__ import annotations

import csv
import sys

from dsmooth_core import bundled
from dsmooth_core.profiles import ThreatProfile
from dsmooth_core.tuning import TuningGrid, axis_ratio

FIELDS = ("profile", "k", "shrinkage", "axis_ratio", "eligible")


def rows() -> list[dict[str, object]]:
    """One row per bundled profile, rank and shrinkage of the default grid."""
    grid, out = TuningGrid(), []
    for path in (bundled.PROFILE, bundled.PAPER_PROFILE):
        fitted = ThreatProfile.load(path).covariance.with_shrinkage(0.0)
        seen = set()
        for shape in grid.settings(fitted):
            if (shape.k, shape.shrinkage) in seen:
                continue
            seen.add((shape.k, shape.shrinkage))
            ratio = axis_ratio(shape.apply(fitted))
            out.append(
                {
                    "profile": path.name,
                    "k": shape.k,
                    "shrinkage": f"{shape.shrinkage:g}",
                    "axis_ratio": f"{ratio:.4f}",
                    "eligible": ratio >= grid.min_axis_ratio,
                }
            )
    return out


if __name__ == "__main__":
    writer = csv.DictWriter(sys.stdout, FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows())
