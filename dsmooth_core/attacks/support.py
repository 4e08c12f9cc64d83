"""Where a threat may move an image, and which pixels move together (docs/MATH.md section 5).

A structured threat's perturbations share their directions across images, which is what a threat
profile (a covariance fitted to perturbations of other images) needs in order to describe the next
image's perturbation. The attack searches a small tensor ``z`` of shape ``z_shape`` and the image
moves by ``embed(z)``:

* the whole image, pixel by pixel (the default): ``embed`` is the identity, the usual l_inf threat;
* a fixed window (``window``): a sticker at the same place on every image, zero elsewhere;
* a coarse grid (``grid``): blocks of ``grid x grid`` pixels move together, a low-frequency
  perturbation;
* a window with a share of the budget outside it (``outside``): a non-uniform budget, a strong
  sticker plus a faint perturbation everywhere else.

``embed`` maps the l_inf ball of radius eps in z onto the per-pixel bound ``eps * weights``, so the
threat stays an l_inf threat with a per-pixel radius.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Support:
    """``window``: (top, left, side) in pixels, negative top/left counted from the bottom/right edge."""

    window: tuple[int, int, int] | None = None
    grid: int = 1
    outside: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.grid, bool) or not isinstance(self.grid, int) or self.grid < 1:
            raise ValueError(f"the support's grid must be an integer >= 1, got {self.grid!r}")
        if not 0.0 <= self.outside < 1.0:
            raise ValueError(f"the budget share outside the window must lie in [0, 1), got {self.outside}")
        if self.window is None:
            if self.outside:
                raise ValueError("a budget share outside the window needs a window")
            return
        if len(self.window) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) for v in self.window):
            raise ValueError(f"the window is (top, left, side) in whole pixels, got {self.window!r}")
        if self.window[2] < 1:
            raise ValueError(f"the window's side must be at least 1 pixel, got {self.window[2]}")
        if not self.outside and self.window[2] % self.grid:
            raise ValueError(f"the window's side ({self.window[2]}) must be a multiple of the grid ({self.grid})")

    @property
    def whole_image(self) -> bool:
        """The usual threat: every pixel on its own."""
        return self.window is None and self.grid == 1

    def box(self, height: int, width: int) -> tuple[int, int, int]:
        """The window's (top, left, side) in this image size; refused where it does not fit."""
        assert self.window is not None
        top, left, side = self.window
        top, left = top + height if top < 0 else top, left + width if left < 0 else left
        if top < 0 or left < 0 or top + side > height or left + side > width:
            raise ValueError(f"the window {self.window} does not fit into a {height} x {width} image")
        return top, left, side

    def z_shape(self, channels: int, height: int, width: int) -> tuple[int, int, int]:
        """The shape of what the attack searches."""
        if self.window is not None and not self.outside:
            side = self.box(height, width)[2] // self.grid
            return channels, side, side
        if height % self.grid or width % self.grid:
            raise ValueError(f"a {height} x {width} image cannot be cut into {self.grid} x {self.grid} blocks")
        return channels, height // self.grid, width // self.grid

    def weights(self, height: int, width: int, like: torch.Tensor) -> torch.Tensor:
        """Each pixel's share of the budget, (1, 1, H, W): 1 where the threat acts fully."""
        if self.window is None:
            return torch.ones(1, 1, height, width, dtype=like.dtype, device=like.device)
        top, left, side = self.box(height, width)
        out = torch.full((1, 1, height, width), self.outside, dtype=like.dtype, device=like.device)
        out[..., top : top + side, left : left + side] = 1
        return out

    def embed(self, z: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """The image-space perturbation (B, C, H, W) of a searched ``z`` (B, C, h, w)."""
        if self.whole_image:
            return z
        blocks = z.repeat_interleave(self.grid, -2).repeat_interleave(self.grid, -1) if self.grid > 1 else z
        if self.window is None:
            return blocks
        if self.outside:
            return blocks * self.weights(height, width, z)
        top, left, side = self.box(height, width)
        out = z.new_zeros(*z.shape[:2], height, width)
        out[..., top : top + side, left : left + side] = blocks
        return out

    def direction(self, gradient: torch.Tensor) -> torch.Tensor:
        """The image-space direction the threat can follow best in l2: ``embed`` of its adjoint applied
        to ``gradient`` (the projection onto block-constant images, the window, or the budget weights)."""
        if self.whole_image:
            return gradient
        height, width = gradient.shape[-2:]
        if self.window is not None and not self.outside:
            top, left, side = self.box(height, width)
            gradient = gradient[..., top : top + side, left : left + side]
        elif self.outside:
            gradient = gradient * self.weights(height, width, gradient)
        if self.grid > 1:
            gradient = torch.nn.functional.avg_pool2d(gradient, self.grid) * self.grid**2
        return self.embed(gradient, height, width)

    def describe(self) -> str:
        """A few words for tables and the app."""
        if self.whole_image:
            return "every pixel"
        parts = []
        if self.window is not None:
            top, left, side = self.window
            parts.append(f"a {side} x {side} window at ({top}, {left})")
            if self.outside:
                parts.append(f"{self.outside:g} of the budget elsewhere")
        if self.grid > 1:
            parts.append(f"{self.grid} x {self.grid} pixel blocks")
        return ", ".join(parts)


WHOLE_IMAGE = Support()
