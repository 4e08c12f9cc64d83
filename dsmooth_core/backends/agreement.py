"""The check an exported graph passes before it may vote: its logits are the torch model's.

A graph that computed another function would certify another classifier, silently. So before use,
both run on real images, the same images under Gaussian noise at the lab's noise levels (unclipped, as
certify draws them) and uniform noise; the graph is refused unless every logit is within
``TOLERANCE`` of torch's (relative to the logit scale, at least 1) and the top class is the same on
every input. Float rounding gives differences near 1e-6 (ResNet-20: 2.6e-6), far inside the tolerance;
a wrong graph (other weights, a constant baked in by tracing) misses it by orders of magnitude.
"""

from __future__ import annotations

import json

import torch
from PIL import Image
from torch import nn

from dsmooth_core.bundled import GALLERY
from dsmooth_core.layout import in_layout, input_format
from dsmooth_core.models.preprocess import prepare_image

TOLERANCE = 1e-4  # largest |logit difference| / max(1, largest |torch logit|)
NOISE_LEVELS = (0.12, 0.25, 0.5, 1.0)  # the lab's sigmas, and one beyond
DRAWS_PER_LEVEL = 2
PROBE_SEED = 20260


class GraphDisagrees(ValueError):
    """The exported graph's logits differ from the torch model's beyond the tolerance."""


def gallery_images(model: nn.Module) -> torch.Tensor | None:
    """The lab's gallery photographs fitted to the model's input, or None where they are not at hand."""
    info = model.info
    try:
        entries = json.loads((GALLERY / "gallery.json").read_text())
        images = [prepare_image(Image.open(GALLERY / entry["file"]), info) for entry in entries]
    except (OSError, ValueError, KeyError):
        return None
    return torch.stack(images) if images else None


def probe_inputs(model: nn.Module, samples: torch.Tensor | None = None) -> torch.Tensor:
    """Real images (``samples``, else the gallery, else smooth random images) and noisy copies of them."""
    shape = tuple(model.info.input_shape)
    generator = torch.Generator().manual_seed(PROBE_SEED)
    real = samples if samples is not None else gallery_images(model)
    if real is None:  # smooth images: a coarse random grid upsampled, closer to photographs than white noise
        coarse = torch.rand(4, shape[0], 4, 4, generator=generator)
        real = torch.nn.functional.interpolate(coarse, size=shape[1:], mode="bilinear", align_corners=False)
    real = real.reshape(-1, *shape).to(torch.float32)
    noisy = [
        real + sigma * torch.randn(real.shape, generator=generator)
        for sigma in NOISE_LEVELS
        for _ in range(DRAWS_PER_LEVEL)
    ]
    uniform = torch.rand(4, *shape, generator=generator)
    return torch.cat([real, *noisy, uniform])


@torch.inference_mode()
def _logits(model: nn.Module, inputs: torch.Tensor, layout: torch.memory_format) -> torch.Tensor:
    return torch.cat([model(in_layout(chunk, layout)).float() for chunk in inputs.split(16)])


def check_agreement(torch_model: nn.Module, graph_model: nn.Module, inputs: torch.Tensor) -> str:
    """Refuse (``GraphDisagrees``) unless the graph matches torch on ``inputs``; else a one-line summary."""
    expected = _logits(torch_model, inputs, input_format(torch_model))
    got = _logits(graph_model, inputs, torch.contiguous_format)
    if got.shape != expected.shape:
        raise GraphDisagrees(f"the graph returned logits of shape {tuple(got.shape)}, torch {tuple(expected.shape)}")
    if not torch.isfinite(expected).all():
        raise GraphDisagrees("the torch model's own logits are not finite on the probe inputs: nothing to compare")
    if not torch.isfinite(got).all():
        raise GraphDisagrees("the graph returned non-finite logits where torch did not")
    scale = max(1.0, float(expected.abs().max()))
    difference = float((got - expected).abs().max()) / scale
    flips = int((got.argmax(dim=1) != expected.argmax(dim=1)).sum())
    if difference > TOLERANCE or flips:
        raise GraphDisagrees(
            f"the graph's logits differ from torch's by up to {difference:.2g} of the logit scale "
            f"(tolerance {TOLERANCE:g}) and its top class differs on {flips} of {len(inputs)} probe inputs"
        )
    return f"logits within {difference:.1g} of torch's on {len(inputs)} probe inputs, top class equal on all"
