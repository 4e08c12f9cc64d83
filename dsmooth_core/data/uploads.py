"""Decoding uploaded images defensively into upright RGB.

Uploads come from anywhere: size limits are checked before any pixel is decoded, only common
raster formats are opened, and failures become messages a person can act on.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from dsmooth_core.data.errors import UploadError

MAX_UPLOAD_BYTES = 20 * 2**20
MAX_UPLOAD_PIXELS = 40_000_000
# Common raster formats only (JPEG includes camera MPO files); EPS and the like, which Pillow would
# hand to external programs, stay out.
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF", "PPM")
_WHITE = (255, 255, 255, 255)


def load_upload(data: bytes, *, max_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_UPLOAD_PIXELS) -> Image.Image:
    """An upright RGB image: EXIF orientation applied, transparency composited on white."""
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
    width, height = img.size
    if width * height > max_pixels:
        raise UploadError(_too_many_pixels((width, height), max_pixels))
    try:
        img.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise UploadError(f"The image is truncated or corrupt and cannot be decoded ({exc}).") from None
    try:
        return _to_rgb(_upright(img))
    except (OSError, ValueError) as exc:
        raise UploadError(f"Cannot convert this {img.mode} image to RGB ({exc}).") from None


def _upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag; a malformed tag is ignored rather than failing the upload."""
    try:
        return ImageOps.exif_transpose(img)
    except (OSError, ValueError, TypeError, KeyError, SyntaxError):
        return img


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE)
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        # 16-bit and float greyscale: rescale rather than let convert() saturate at 255
        array = np.asarray(img, dtype=np.float64)
        scale = 1.0 if img.mode == "F" else 255.0 / 65535.0
        grey = np.clip(np.rint(array * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    return img.convert("RGB")


def _too_many_pixels(size: tuple[int, int] | None, max_pixels: int) -> str:
    found = f"{size[0]}x{size[1]} pixels" if size else "far too many pixels"
    return f"The image has {found}; the limit is {max_pixels / 1e6:g} megapixels."


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"
