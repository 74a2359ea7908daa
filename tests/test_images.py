"""tinyclf.images: an image's size is read from its header and checked before anything is decoded."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from bombs import png_bomb
from tinyclf.images import MAX_IMAGE_PIXELS, check_header, decode_image, header_size


def encoded(ext: str, width: int, height: int, params=()) -> bytes:
    image = np.random.default_rng(0).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(ext, image, list(params))
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize("ext, params", [
    (".jpg", ()), (".png", ()), (".bmp", ()),
    (".webp", (cv2.IMWRITE_WEBP_QUALITY, 80)),   # lossy: VP8
    (".webp", (cv2.IMWRITE_WEBP_QUALITY, 101)),  # lossless: VP8L
])
def test_header_size_is_the_decoded_size(ext, params):
    for width, height in [(64, 64), (37, 91), (300, 17)]:
        data = encoded(ext, width, height, params)
        assert header_size(data) == (width, height), ext
        assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED).shape[:2] == (height, width)


def test_header_size_of_gif_and_extended_webp():
    # Written by hand: OpenCV's build here may not encode them. Only the header is read.
    gif = b"GIF89a" + (321).to_bytes(2, "little") + (123).to_bytes(2, "little") + b"\x00" * 20
    assert header_size(gif) == (321, 123)
    vp8x = b"RIFF" + b"\x00" * 4 + b"WEBP" + b"VP8X" + b"\x0a\x00\x00\x00" + b"\x00" * 4
    vp8x += (4999).to_bytes(3, "little") + (2999).to_bytes(3, "little")
    assert header_size(vp8x) == (5000, 3000)


def test_not_an_image_or_a_cut_header_has_no_size():
    assert header_size(b"definitely not an image") is None
    assert header_size(encoded(".png", 8, 8)[:20]) is None  # IHDR cut short
    assert header_size(b"") is None


def test_a_decompression_bomb_is_refused_before_decoding():
    bomb = png_bomb(20000, 20000)
    assert len(bomb) < 1_000_000 and header_size(bomb) == (20000, 20000)
    with pytest.raises(ValueError, match=r"20000x20000 pixels, over the limit of .*MAX_IMAGE_PIXELS.*before decoding"):
        decode_image(bomb, 64)
    # The limit is the constant, not some other cap: exactly at it passes, one row more does not.
    side = int(MAX_IMAGE_PIXELS ** 0.5)
    assert side * side == MAX_IMAGE_PIXELS and check_header(png_bomb(side, side)) == (side, side)
    with pytest.raises(ValueError, match="over the limit"):
        check_header(png_bomb(side, side + 1))


def test_native_size_is_enforced_when_asked():
    small = encoded(".jpg", 32, 32)
    with pytest.raises(ValueError, match="is 32x32, not 64x64 like every image of the published dataset"):
        decode_image(small, 64, native=64)
    img, _, resized = decode_image(small, 64)  # without `native` it is simply resized
    assert img.shape == (64, 64, 3) and resized
    assert decode_image(encoded(".jpg", 64, 64), 32, native=64)[0].shape == (32, 32, 3)


def test_a_format_without_a_readable_size_is_not_decoded():
    # TIFF and friends: OpenCV could decode them, but their size cannot be checked first.
    tiff = encoded(".tiff", 8, 8)
    assert cv2.imdecode(np.frombuffer(tiff, np.uint8), cv2.IMREAD_UNCHANGED) is not None
    with pytest.raises(ValueError, match="no JPEG, PNG, GIF, BMP or WebP header"):
        decode_image(tiff, 8)
