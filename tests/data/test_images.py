"""tinyclf.data.images: an image's size is read from its header and checked before anything is decoded;
photos come out upright, square the way the user asked, and 8-bit RGB, with conversions counted."""

from __future__ import annotations

import dataclasses
import functools
import io
import zipfile

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps
from support.bombs import png_bomb, tiff_bomb
from support.data_archives import jpeg, png

from tinyclf.data import arrays
from tinyclf.data.images import (CONVERSIONS, FITS, MAX_IMAGE_PIXELS, check_header, decode_image, decode_photo,
                                 exif_orientation, fit_square, header_size, jpeg_scale_down, resize_square)
from tinyclf.params import DataParams


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


def test_truncated_jpeg_is_corrupt_not_half_grey():
    whole = jpeg((10, 20, 30))
    with pytest.raises(ValueError, match="truncated"):
        decode_image(whole[: len(whole) - 40], 64)
    # Bytes after the end-of-image marker (some writers append metadata) are not corruption.
    img, _, _ = decode_image(whole + b"\x00\x00trailer", 64)
    assert np.abs(img.astype(int) - (10, 20, 30)).max() <= 3


def test_a_format_without_a_readable_size_is_not_decoded():
    # PPM, JPEG 2000, AVIF and friends: OpenCV could decode them, but their size is not checked first.
    for ext in (".ppm", ".jp2", ".avif"):
        data = encoded(ext, 64, 64)
        assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) is not None
        for decode in (decode_image, decode_photo):
            with pytest.raises(ValueError, match="no JPEG, PNG, GIF, BMP, WebP or TIFF header"):
                decode(data, 8)
    # A TIFF whose first directory is cut off has no readable size either.
    with pytest.raises(ValueError, match="no JPEG, PNG, GIF, BMP, WebP or TIFF header"):
        decode_photo(encoded(".tiff", 8, 8)[:12], 8)


# ------------------------------------------------------------------------------ TIFF headers
def pil_bytes(img: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **options)
    return buf.getvalue()


def big_endian_16bit(grey: np.ndarray) -> Image.Image:
    """A 16-bit grey image PIL writes as a big-endian (MM) TIFF (its convert("I;16B") clips to 255)."""
    return Image.frombytes("I;16B", grey.shape[::-1], grey.astype(">u2").tobytes())


def test_header_size_of_tiff_files():
    grey16 = np.arange(91 * 37, dtype=np.uint16).reshape(91, 37) * 19
    files = {
        "II, 8-bit RGB (OpenCV)": encoded(".tiff", 37, 91),
        "II, 16-bit grey": pil_bytes(Image.fromarray(grey16), "TIFF"),
        "MM, 16-bit grey": pil_bytes(big_endian_16bit(grey16), "TIFF"),
        "BigTIFF, 8-bit RGB": pil_bytes(Image.new("RGB", (37, 91), (1, 2, 3)), "TIFF", big_tiff=True),
        "II, SHORT sizes": tiff_bomb(37, 91, byteorder="<", short_sizes=True),
        "MM, SHORT sizes": tiff_bomb(37, 91, byteorder=">", short_sizes=True),
        "II, LONG sizes": tiff_bomb(37, 91, byteorder="<"),
        "MM, LONG sizes": tiff_bomb(37, 91, byteorder=">"),
    }
    assert files["MM, 16-bit grey"][:2] == b"MM" and files["BigTIFF, 8-bit RGB"][2] == 43
    for name, data in files.items():
        assert header_size(data) == (37, 91), name
        assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED).shape[:2] == (91, 37), name
        assert decode_photo(data, 16).image.shape == (16, 16, 3), name  # passes the header check now
    assert decode_image(files["II, 8-bit RGB (OpenCV)"], 8)[0].shape == (8, 8, 3)


def test_a_tiff_bomb_is_refused_before_decoding():
    for byteorder in "<>":
        bomb = tiff_bomb(9000, 9000, byteorder=byteorder)  # 81 megapixels from about 80 KB
        assert len(bomb) < 200_000 and header_size(bomb) == (9000, 9000)
        for decode in (decode_image, decode_photo):
            with pytest.raises(ValueError, match=r"9000x9000 pixels, over the limit of .*before decoding"):
                decode(bomb, 64)


# ------------------------------------------------------------------------------ photos: fit, orientation
@pytest.fixture
def real_rgb(real_subset) -> np.ndarray:
    """A real Tiny ImageNet photo (64x64 RGB)."""
    return first_train_image(real_subset).copy()


@functools.lru_cache(maxsize=1)
def first_train_image(archive) -> np.ndarray:
    with zipfile.ZipFile(archive) as zf:
        name = next(n for n in sorted(zf.namelist()) if n.endswith(".JPEG") and "/train/" in n)
        return np.asarray(Image.open(io.BytesIO(zf.read(name))).convert("RGB"))


def with_side_bars(square: np.ndarray, long_side: int, portrait: bool) -> np.ndarray:
    """`square` in the middle of a non-square image, red on one side of it and blue on the other."""
    side = square.shape[0]
    before, after = (long_side - side) // 2, long_side - side - (long_side - side) // 2
    bars = [np.full((side, before, 3), (255, 0, 0), np.uint8), square, np.full((side, after, 3), (0, 0, 255), np.uint8)]
    wide = np.hstack(bars)
    return np.ascontiguousarray(wide.transpose(1, 0, 2)) if portrait else wide


@pytest.mark.parametrize("portrait", [False, True], ids=["171x97", "97x171"])
def test_every_fit_makes_a_non_square_photo_square(real_rgb, portrait):
    square = cv2.resize(real_rgb, (97, 97), interpolation=cv2.INTER_CUBIC)
    photo = with_side_bars(square, 171, portrait)
    data = pil_bytes(Image.fromarray(photo), "PNG")  # lossless: every pixel is known
    results = {fit: decode_photo(data, 64, fit=fit) for fit in FITS}
    assert all(r.image.shape == (64, 64, 3) and r.resized and not r.rotated and r.conversion is None
               for r in results.values())
    # center_crop: exactly the middle square, nothing of the bars.
    middle = np.ascontiguousarray(square.transpose(1, 0, 2)) if portrait else square
    assert (results["center_crop"].image == resize_square(middle, 64)).all()
    # squash: everything, shapes distorted; the bars are still at the sides.
    squashed = results["squash"].image
    assert (squashed == resize_square(photo, 64)).all()
    first, last = (squashed[0], squashed[-1]) if portrait else (squashed[:, 0], squashed[:, -1])
    assert (first == (255, 0, 0)).all() and (last == (0, 0, 255)).all()
    # pad: everything at its own aspect ratio (64x36), centred on black.
    padded = results["pad"].image if not portrait else results["pad"].image.transpose(1, 0, 2)
    fitted = cv2.resize(photo if not portrait else photo.transpose(1, 0, 2), (64, 36), interpolation=cv2.INTER_AREA)
    assert (padded[:14] == 0).all() and (padded[50:] == 0).all() and (padded[14:50] == fitted).all()


def test_a_square_photo_of_the_right_size_is_kept_as_is(real_rgb):
    data = pil_bytes(Image.fromarray(real_rgb), "PNG")
    out = np.zeros((64, 64, 3), np.uint8)
    for fit in FITS:
        result = decode_photo(data, 64, fit=fit, out=out)
        assert not result.resized and result.image is out and (out == real_rgb).all()
    with pytest.raises(ValueError, match="unknown fit 'stretch' .one of center_crop, squash, pad"):
        decode_photo(data, 64, fit="stretch")


def test_params_offer_exactly_the_fits():
    """data.resize's choices are a copy of FITS in params.py (importing this module there would load
    OpenCV into every stage just to read params.yaml): the copy must name exactly these fits."""
    (resize,) = [f for f in dataclasses.fields(DataParams) if f.name == "resize"]
    assert resize.metadata["choices"] == FITS and resize.default in FITS


def with_orientation(img: Image.Image, fmt: str, orientation: int) -> bytes:
    if fmt == "TIFF":  # a TIFF keeps the tag in its own first directory
        return pil_bytes(img, fmt, tiffinfo={0x0112: orientation})
    exif = Image.Exif()
    exif[0x0112] = orientation
    options = {"JPEG": {"quality": 95}, "WEBP": {"lossless": True}}.get(fmt, {})
    return pil_bytes(img, fmt, exif=exif.tobytes(), **options)


def upright_by_pil(data: bytes, size: int) -> np.ndarray:
    return resize_square(np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")), size)


# (format, size, largest difference from PIL's upright image): at 16 px the JPEG is decoded at half
# scale (libjpeg's DCT scaling), so a few pixels differ more (18 measured; 2.3 on average).
@pytest.mark.parametrize("fmt, size, tolerance", [
    ("JPEG", 64, 2), ("JPEG", 16, 25), ("PNG", 64, 0), ("WEBP", 64, 0), ("TIFF", 64, 0),
])
def test_exif_orientation_is_applied_like_pil(real_rgb, fmt, size, tolerance):
    photo = Image.fromarray(cv2.resize(real_rgb, (171, 97), interpolation=cv2.INTER_CUBIC))
    files = {k: with_orientation(photo, fmt, k) for k in range(1, 9)}
    references = {k: upright_by_pil(data, size) for k, data in files.items()}
    assert jpeg_scale_down(files[1], size) == (2 if size == 16 else 1)
    for k, data in files.items():
        result = decode_photo(data, size, fit="squash")
        assert exif_orientation(data) == k and result.rotated == (k != 1), k
        errors = {j: np.abs(result.image.astype(int) - ref) for j, ref in references.items()}
        assert errors[k].max() <= tolerance, (k, errors[k].max())
        # Every wrong orientation is far off on average (about 35 grey levels): the test can tell.
        assert min(error.mean() for j, error in errors.items() if j != k) > 20, k


def test_the_official_datasets_path_ignores_exif_orientation(real_rgb):
    photo = Image.fromarray(real_rgb)
    upright, turned = (with_orientation(photo, "PNG", k) for k in (1, 6))
    assert (decode_image(turned, 64)[0] == decode_image(upright, 64)[0]).all()


# ------------------------------------------------------------------------------ conversions
def test_each_conversion_is_counted():
    rgb = Image.new("RGB", (24, 16), (255, 0, 51))
    grey16 = np.full((16, 24), 65535 // 3, dtype=np.uint16)  # 85 in 8 bits
    cases = [  # (expected conversion, file, RGB colour it must become, tolerance)
        ("grayscale", pil_bytes(Image.new("L", (24, 16), 90), "JPEG"), (90, 90, 90), 2),
        ("grayscale", pil_bytes(Image.new("L", (24, 16), 90), "PNG"), (90, 90, 90), 0),
        ("palette", pil_bytes(rgb.convert("P"), "PNG"), (255, 0, 51), 0),  # a web-palette colour
        ("palette", pil_bytes(rgb.convert("P"), "GIF"), (255, 0, 51), 0),
        ("palette", pil_bytes(rgb.convert("P"), "BMP"), (255, 0, 51), 0),
        ("palette", pil_bytes(rgb.convert("P"), "TIFF"), (255, 0, 51), 0),
        ("cmyk", pil_bytes(Image.new("RGB", (24, 16), (30, 90, 200)).convert("CMYK"), "JPEG"), (30, 90, 200), 6),
        ("cmyk", pil_bytes(Image.new("RGB", (24, 16), (30, 90, 200)).convert("CMYK"), "TIFF"), (30, 90, 200), 1),
        ("rgba", pil_bytes(Image.new("RGBA", (24, 16), (10, 200, 30, 128)), "PNG"), (10, 200, 30), 0),
        ("rgba", pil_bytes(Image.new("RGBA", (24, 16), (10, 200, 30, 128)), "WEBP", lossless=True), (10, 200, 30), 0),
        ("16bit", pil_bytes(Image.fromarray(grey16), "PNG"), (85, 85, 85), 0),
        ("16bit", pil_bytes(Image.fromarray(grey16), "TIFF"), (85, 85, 85), 0),
        ("16bit", pil_bytes(big_endian_16bit(grey16), "TIFF"), (85, 85, 85), 0),
        ("other", pil_bytes(Image.new("LA", (24, 16), (77, 128)), "PNG"), (77, 77, 77), 0),  # grey + alpha
        (None, pil_bytes(rgb, "PNG"), (255, 0, 51), 0),
        (None, pil_bytes(rgb, "TIFF"), (255, 0, 51), 0),
        (None, pil_bytes(rgb, "BMP"), (255, 0, 51), 0),
    ]
    for kind, data, colour, tolerance in cases:
        photo = decode_photo(data, 8)
        image, conversion, _ = decode_image(data, 8)  # the official datasets' path counts the same
        assert photo.conversion == conversion == kind, (kind, data[:8])
        for img in (photo.image, image):
            assert img.shape == (8, 8, 3) and img.dtype == np.uint8
            assert np.abs(img.astype(int) - colour).max() <= tolerance, (kind, data[:8], img[0, 0])
    assert {kind for kind, *_ in cases} == {*CONVERSIONS, None}
    assert arrays.CONVERTED_KINDS == CONVERSIONS  # what stats.json counts


def test_decode_image_conversions():
    gray16 = Image.fromarray(np.full((8, 8), 65535 // 3, dtype=np.uint16))
    cases = {
        "grayscale": jpeg((77, 77, 77), mode="L", size=8),
        "rgba": png(Image.new("RGBA", (8, 8), (1, 2, 3, 4))),
        "cmyk": jpeg((200, 40, 40), mode="CMYK", size=8),
        "16bit": png(gray16),
        None: png(Image.new("RGB", (8, 8), (5, 6, 7))),
    }
    for kind, data in cases.items():
        img, conversion, resized = decode_image(data, 8)
        assert conversion == kind and not resized
        assert img.shape == (8, 8, 3) and img.dtype == np.uint8
    assert (decode_image(cases[None], 8)[0] == (5, 6, 7)).all()  # RGB order, not OpenCV's BGR
    assert (decode_image(cases["16bit"], 8)[0] == 85).all()  # 16-bit scaled to 8-bit
    out = np.zeros((4, 4, 3), np.uint8)
    img, _, resized = decode_image(cases[None], 4, out=out)
    assert resized and (out == (5, 6, 7)).all()


# ------------------------------------------------------------------------------ reduced JPEG decoding
def real_mosaic(real_subset, width: int, height: int, tile: int) -> np.ndarray:
    """A photo-sized image of real pixels: Tiny ImageNet images scaled to `tile` px, side by side."""
    cols, rows = -(-width // tile), -(-height // tile)
    with zipfile.ZipFile(real_subset) as zf:
        names = sorted(n for n in zf.namelist() if n.endswith(".JPEG"))[: cols * rows]
        tiles = [cv2.resize(np.asarray(Image.open(io.BytesIO(zf.read(n))).convert("RGB")), (tile, tile),
                            interpolation=cv2.INTER_CUBIC) for n in names]
    return np.vstack([np.hstack(tiles[r * cols : (r + 1) * cols]) for r in range(rows)])[:height, :width]


def full_decode(data: bytes, size: int, fit: str) -> np.ndarray:
    return fit_square(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB), size, fit)


# Largest and mean difference from a full decode, by target size. libjpeg's 1/8 decode is block
# means; at 32 px it leaves 75 px (2.3x) to average from, so edges land a little differently.
REDUCED_DECODE_ERROR = {32: (30, 4.5), 48: (20, 2.5), 96: (20, 2.5)}


def test_large_jpegs_are_decoded_scaled_down_close_to_a_full_decode(real_subset):
    # 808 wide: the centred 600x600 square starts at 104, on a JPEG block at every scale, so a
    # scaled-down decode can crop exactly where a full one does (elsewhere it may sit half a
    # scaled pixel, at most 4 original pixels, away).
    photo = Image.fromarray(real_mosaic(real_subset, 808, 600, 101))
    files = {None: photo, "grayscale": photo.convert("L"), "cmyk": photo.convert("CMYK")}
    files = {kind: pil_bytes(img, "JPEG", quality=90) for kind, img in files.items()}
    # The largest of 1/2, 1/4, 1/8 that leaves the short side (600) at least twice the target.
    assert [jpeg_scale_down(files[None], size) for size in (32, 48, 96, 150, 151)] == [8, 4, 2, 2, 1]
    for kind, data in files.items():
        for size, (largest, mean) in REDUCED_DECODE_ERROR.items():
            for fit in ("center_crop", "squash"):
                result = decode_photo(data, size, fit=fit)
                error = np.abs(result.image.astype(int) - full_decode(data, size, fit))
                assert result.conversion == kind and result.resized
                assert error.max() <= largest and error.mean() <= mean, (kind, size, fit, error.max(), error.mean())
    # Only 8-bit JPEGs are scaled down; other formats decode at full size.
    assert jpeg_scale_down(pil_bytes(photo, "PNG"), 32) == 1


def test_webp_and_bmp_photos_decode(real_rgb):
    photo = cv2.resize(real_rgb, (171, 97), interpolation=cv2.INTER_CUBIC)
    expected = resize_square(photo, 48)
    for data, tolerance in [(pil_bytes(Image.fromarray(photo), "WEBP", lossless=True), 0),
                            (pil_bytes(Image.fromarray(photo), "BMP"), 0),
                            (pil_bytes(Image.fromarray(photo), "WEBP", quality=90), 40)]:
        result = decode_photo(data, 48, fit="squash")
        assert result.conversion is None and result.resized and not result.rotated
        assert np.abs(result.image.astype(int) - expected).max() <= tolerance
