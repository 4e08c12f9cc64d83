"""Per-image random streams: the explicit generator draws one key per image, the rest is hashing.

Square Attack makes many small random choices per image and per iteration. Drawing them in batches
from one ``torch.Generator`` would tie an image's choices to which other images share its batch and
which of them already stopped. Instead each image gets a 32-bit key from the generator and every later
draw is a hash of (key, stream, slot), a counter-based scheme in the spirit of Philox. An image's
trajectory then depends only on its own key, so an attack run in chunks equals the one-batch run.
"""

from __future__ import annotations

import torch

_MASK32 = 0xFFFFFFFF
_MULTIPLIER = 0x45D9F3B  # below 2**27: a 32-bit value times it never overflows int64


def _mix32(value: torch.Tensor | int) -> torch.Tensor | int:
    """A bijective 32-bit integer hash (xor-shift-multiply); works on ints and int64 tensors alike."""
    value = ((value >> 16) ^ value) * _MULTIPLIER & _MASK32
    value = ((value >> 16) ^ value) * _MULTIPLIER & _MASK32
    return (value >> 16) ^ value


def draw_keys(generator: torch.Generator, count: int) -> torch.Tensor:
    """One key per image, sampled on the generator's device (moved by the caller)."""
    return torch.randint(0, 1 << 32, (count,), generator=generator, device=generator.device)


def random_words(keys: torch.Tensor, stream: int, count: int) -> torch.Tensor:
    """``count`` uniform 32-bit words per key for draw number ``stream``: int64, shape (len(keys), count)."""
    base = _mix32(keys ^ _mix32(stream))
    slots = _mix32(torch.arange(count, device=keys.device))
    return _mix32(base[:, None] ^ slots[None, :])


def below(words: torch.Tensor, bound: int) -> torch.Tensor:
    """Map uniform 32-bit words to integers uniform in [0, bound) (bound < 2**31)."""
    return (words * bound) >> 32


def signs(words: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Map uniform 32-bit words to -1 or +1 with equal probability (from the top bit)."""
    return ((words >> 31) * 2 - 1).to(dtype)
