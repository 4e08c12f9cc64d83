"""Decoding uploaded images defensively into upright RGB.

Uploads come from anywhere: size limits are checked before any pixel is decoded, only common
raster formats are opened, and failures become messages a person can act on.
"""

from __future__ import annotations

import io
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from dsmooth_core.data.errors import UploadError

MAX_UPLOAD_BYTES = 20 * 2**20
MAX_UPLOAD_PIXELS = 40_000_000
# Common raster formats only (JPEG includes camera MPO files); EPS and the like, which Pillow would
# hand to external programs, stay out.
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF", "PPM")
MAX_ASPECT_RATIO = 256  # longer side over shorter side; beyond it a resize to the model's input is meaningless
_WHITE = (255, 255, 255, 255)


class Upload(NamedTuple):
    """A decoded upload and what the person should know about how it was read."""

    image: Image.Image  # upright RGB
    notes: tuple[str, ...]


def load_upload(data: bytes, *, max_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_UPLOAD_PIXELS) -> Image.Image:
    """An upright RGB image: EXIF orientation applied, transparency composited on white."""
    return read_upload(data, max_bytes=max_bytes, max_pixels=max_pixels).image


def read_upload(data: bytes, *, max_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_UPLOAD_PIXELS) -> Upload:
    """Like :func:`load_upload`, with notes on what was assumed (first frame used, bit depth scaled)."""
    if not data:
        raise UploadError("The file is empty.")
    if len(data) > max_bytes:
        raise UploadError(f"The file is {_mb(len(data))}; the limit is {_mb(max_bytes)}.")
    try:
        img = Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError:
        raise UploadError(f"This is not an image in a supported format ({', '.join(FORMATS)}).") from None
    except Image.DecompressionBombError:
        raise UploadError(_too_many_pixels(None, max_pixels)) from None
    except (OSError, SyntaxError, ValueError) as exc:  # e.g. a JPEG cut off inside its header
        raise UploadError(f"The image is truncated or corrupt and cannot be decoded ({exc}).") from None
    width, height = img.size
    if width * height > max_pixels:
        raise UploadError(_too_many_pixels((width, height), max_pixels))
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise UploadError(
            f"The image is {width}x{height} pixels, more than {MAX_ASPECT_RATIO}:1; crop it to a less extreme shape."
        )
    notes = []
    frames = getattr(img, "n_frames", 1)
    if frames > 1:
        notes.append(f"The file holds {frames} frames (an animation or a multi-page file); the first one is used.")
    try:
        img.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise UploadError(f"The image is truncated or corrupt and cannot be decoded ({exc}).") from None
    try:
        rgb, note = _to_rgb(_upright(img))
    except (OSError, ValueError) as exc:
        raise UploadError(f"Cannot convert this {img.mode} image to RGB ({exc}).") from None
    return Upload(rgb, (*notes, *([note] if note else [])))


def _upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag; a malformed tag is ignored rather than failing the upload."""
    try:
        return ImageOps.exif_transpose(img)
    except (OSError, ValueError, TypeError, KeyError, SyntaxError):
        return img


def _to_rgb(img: Image.Image) -> tuple[Image.Image, str | None]:
    """RGB pixels, and a note when values had to be rescaled to 8 bits."""
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE)
        return Image.alpha_composite(background, rgba).convert("RGB"), None
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        # Deeper than 8 bits: rescale by what the values say, never let convert() saturate or truncate.
        array = np.asarray(img, dtype=np.float64)
        scale, note = _depth_scale(img.mode, array)
        grey = np.clip(np.rint(array * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB"), note
    return img.convert("RGB"), None


def _depth_scale(mode: str, array: np.ndarray) -> tuple[float, str]:
    """The factor to 8 bits for a 16-bit, 32-bit integer or float greyscale image, or a refusal."""
    if not np.isfinite(array).all():
        raise UploadError("The image holds NaN or infinite values; save it as an 8- or 16-bit image.")
    low, high = float(array.min()), float(array.max())
    if mode.startswith("I;16"):
        return 255.0 / 65535.0, "A 16-bit image: its values were scaled to 8 bits (0-65535 to 0-255)."
    if mode == "F" and low >= 0 and high <= 1:
        return 255.0, "A floating-point image: its values were read as intensities in [0, 1]."
    if low >= 0 and high <= 255:
        kind = "floating-point" if mode == "F" else "32-bit integer"
        return 1.0, f"A {kind} image: its values (0-255) were read as 8-bit intensities."
    if mode == "I" and low >= 0 and high <= 65535:
        return 255.0 / 65535.0, "A 32-bit integer image: its values were read as 16-bit (0-65535) and scaled."
    raise UploadError(
        f"The image's values run from {low:g} to {high:g}, outside the 0-255, 0-65535 (and, for floats, 0-1) "
        "ranges the lab can read unambiguously; save it as an 8- or 16-bit image."
    )


def _too_many_pixels(size: tuple[int, int] | None, max_pixels: int) -> str:
    found = f"{size[0]}x{size[1]} pixels" if size else "far too many pixels"
    return f"The image has {found}; the limit is {max_pixels / 1e6:g} megapixels."


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"
