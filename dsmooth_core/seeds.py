"""Seeds derived per image and per use, so a result never depends on the order work was done in."""

from __future__ import annotations

import hashlib


def derive_seed(seed: int, index: int, stream: str) -> int:
    """A 63-bit seed for one image and one use (``attack``, a method, ``tuning``), independent of run order."""
    digest = hashlib.sha256(f"{seed}:{index}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1
