"""Seeds derived per image and per use, so a result never depends on the order work was done in.

``derive_seed`` is the one rule for new work (the app audit's draws included; a single image certified in the app or
through the library uses its seed as given). ``certify_command_seed`` is the rule the ``certify`` and
``audit`` commands have always used; it stays because committed result files depend on it:
``docs/reproduction/records/bundled_card_randsmooth.tsv`` (the bundled model card's 70.4% in
``docs/BUNDLED_MODEL.md``) and ``docs/reproduction/candidate14/*.tsv`` were made with it, and a new rule
would change their rows on a rerun. ``audit`` shares it so that its certificates are the ones
``certify`` writes for the same ``--seed``.
"""

from __future__ import annotations

import hashlib


def derive_seed(seed: int, index: int, stream: str) -> int:
    """A 63-bit seed for one image and one use (``attack``, a method, ``tuning``), independent of run order."""
    digest = hashlib.sha256(f"{seed}:{index}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def certify_command_seed(seed: int, index: int) -> int:
    """The generator seed of image ``index`` in ``certify``/``audit`` (kept for the committed TSVs above)."""
    return seed * 1_000_003 + index
