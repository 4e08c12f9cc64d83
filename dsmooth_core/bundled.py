"""Files that ship inside the package: the default model, its card, its two threat profiles, the sample gallery.

Why one module: an installed wheel and a checkout must find them the same way, so every caller asks
here (``importlib.resources``) instead of climbing folders from its own file. The package is installed
as plain files (pip unpacks wheels), so these are real paths that ``torch.load`` and PIL can open.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

ASSETS = Path(str(files("dsmooth_core") / "assets"))
MODELS = ASSETS / "models"
WEIGHTS = MODELS / "resnet20_cifar10.pt"
CARD = MODELS / "resnet20_cifar10.json"
PROFILE = MODELS / "resnet20_cifar10_profile.pt"  # tuned: the app's default
PAPER_PROFILE = MODELS / "resnet20_cifar10_profile_paper.pt"  # the paper's setting: det, k = 100, no shrinkage
GALLERY = ASSETS / "gallery"
