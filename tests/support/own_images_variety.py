"""The variety of a real photo folder: how chosen subset images are re-encoded into other formats,
sizes and modes (PNG, WebP, BMP, TIFF, odd sizes, grayscale, palette, RGBA, 16-bit, CMYK, a phone
photo stored sideways with an EXIF orientation tag), or copied byte for byte.

Each encoder returns an `Encoded`: the file's bytes and what a loader must make of them (`kind`:
"rgb" or the conversion it needs). Same image, same bytes (for the pinned Pillow; nothing is
timestamped).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

ORIENTATION_TAG = 0x0112
ROTATED_UPRIGHT = (96, 64)  # non-square, so a loader that ignores the tag gets the wrong shape


@dataclass(frozen=True)
class Encoded:
    data: bytes
    ext: str
    format: str
    mode: str
    kind: str
    size: tuple[int, int]
    upright_size: tuple[int, int] | None = None  # None: the same as size
    orientation: int | None = None


def _save(img: Image.Image, fmt: str, ext: str, kind: str = "rgb", **options) -> Encoded:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **options)
    return Encoded(buffer.getvalue(), ext, fmt, img.mode, kind, img.size)


def _upscaled(size: tuple[int, int], fmt: str, ext: str):
    """Upscaled to an odd, non-square size: the loader's resize and crop must cope."""
    def encode(img: Image.Image) -> Encoded:
        return _save(img.resize(size, Image.Resampling.BICUBIC), fmt, ext, quality=92)
    return encode


def _sixteen_bit(img: Image.Image) -> Encoded:
    """16-bit grayscale PNG, value = gray * 257, so both >> 8 and / 257 give the gray back. A loader
    that lets PIL convert "I;16" to RGB clips everything above 255 to white: this file catches it."""
    wide = np.asarray(img.convert("L"), dtype=np.uint16) * np.uint16(257)
    return _save(Image.fromarray(wide), "PNG", ".png", "16bit")


def _opaque_rgba(img: Image.Image) -> Encoded:
    """RGBA PNG, alpha 255 everywhere: any sane RGBA -> RGB policy gives the original pixels."""
    rgba = img.copy()
    rgba.putalpha(255)
    return _save(rgba, "PNG", ".png", "rgba")


def _exif_rotated(img: Image.Image) -> Encoded:
    """A phone photo held upright: pixels stored turned 90° counter-clockwise with EXIF orientation 6
    ("turn 90° clockwise to display"), so applying the tag restores the upright ROTATED_UPRIGHT image."""
    stored = img.resize(ROTATED_UPRIGHT, Image.Resampling.BICUBIC).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = 6
    exif[0x010F] = "Phone Maker"  # Make: real phone EXIF has more than the one tag
    encoded = _save(stored, "JPEG", ".jpg", quality=92, exif=exif.tobytes())
    return Encoded(encoded.data, ".jpg", "JPEG", "RGB", "rgb", stored.size, ROTATED_UPRIGHT, 6)


# Applied to RGB train images, one each, spread over the classes (the first to the first class…).
TRAIN_VARIETY = (
    lambda img: _save(img, "PNG", ".png"),
    lambda img: _save(img, "PNG", ".PNG"),
    lambda img: _save(img, "WEBP", ".webp", quality=85),
    lambda img: _save(img, "WEBP", ".webp", lossless=True),
    lambda img: _save(img, "BMP", ".bmp"),
    lambda img: _save(img, "TIFF", ".tiff"),
    _upscaled((171, 97), "JPEG", ".jpg"),
    _upscaled((90, 150), "JPEG", ".jpeg"),
    _upscaled((97, 171), "WEBP", ".webp"),
    _upscaled((203, 64), "PNG", ".png"),
    lambda img: _save(img.convert("L"), "JPEG", ".jpg", "grayscale", quality=92),
    lambda img: _save(img.convert("P", palette=Image.Palette.ADAPTIVE, colors=256), "PNG", ".png", "palette"),
    _opaque_rgba,
    _sixteen_bit,
    lambda img: _save(img.convert("CMYK"), "JPEG", ".jpg", "cmyk", quality=92),
    _exif_rotated,
)
VAL_VARIETY = (
    lambda img: _save(img, "PNG", ".png"),
    lambda img: _save(img, "WEBP", ".webp", quality=85),
    _upscaled((133, 77), "JPEG", ".jpg"),
)


def as_copied(data: bytes, counter: int) -> Encoded:
    """A JPEG kept byte for byte, as users' files are; extensions vary the way cameras vary them."""
    with Image.open(io.BytesIO(data)) as img:
        mode, size = img.mode, img.size
    ext = ".JPG" if counter % 7 == 3 else ".jpeg" if counter % 11 == 5 else ".jpg"
    kind = {"L": "grayscale", "CMYK": "cmyk"}.get(mode, "rgb")
    return Encoded(data, ext, "JPEG", mode, kind, size)
