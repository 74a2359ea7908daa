"""Image files in, RGB uint8 arrays out, with the size checked before anything is decoded.

A small file can promise gigabytes: a 20000×20000 PNG of one colour is a few hundred KB and
decodes to 1.2 GB. So every decode reads the width and height from the file's header first
(`header_size`: JPEG, PNG, GIF, BMP, WebP, TIFF) and refuses, before decoding, a file whose format
it cannot read the size of, one over `MAX_IMAGE_PIXELS`, or, when the caller knows the size every
image must have (an official dataset), one of any other size. `MAX_IMAGE_BYTES` bounds what is
read at all. Decoding is OpenCV's (`cv2.imdecode`), then grayscale, palette, CMYK, RGBA and 16-bit
images become 8-bit RGB, and the conversion is reported so it can be counted (`CONVERSIONS`).

Two entry points share that path:
- `decode_image`, for the official datasets: every image is stored upright at the dataset's size,
  so a non-square one is simply squashed and EXIF orientation is not looked at.
- `decode_photo`, for users' own photos: any size, EXIF orientation applied (phones store photos
  sideways and say so in a tag), made square by `fit` (`FITS`), and large JPEGs decoded at 1/2, 1/4
  or 1/8 scale by libjpeg's DCT scaling when that still leaves twice the target size.

Self-contained on purpose (OpenCV, numpy and the standard library only, no torch, no other tinyclf
module): the Hugging Face Space bundle (`tinyclf space`) copies this file as is, so the Space
decodes an upload exactly as `tinyclf predict` does.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

# Any image larger than this (64 megapixels: more than the photos of most cameras) is refused from
# its header. Decoding one takes 3 bytes a pixel and more for 16-bit files; this bound keeps a
# worker's memory at a few hundred MB whatever an archive holds.
MAX_IMAGE_PIXELS = 64 * 2**20
# Any image file larger than this is refused before it is read (a zip member's declared size).
MAX_IMAGE_BYTES = 64 * 2**20
# OpenCV's own limit, for decodes outside decode_image: it reads this variable when it is first
# imported in a process, so it takes effect in processes started after it is set (the decode
# workers of the preprocess stage).
OPENCV_PIXEL_LIMIT_VARIABLE = "OPENCV_IO_MAX_IMAGE_PIXELS"
# What a decoded image was before it became 8-bit RGB; "other" is grey+alpha. A 16-bit image
# counts as "16bit" whatever its channels. (tinyclf.data.arrays.CONVERTED_KINDS lists the same.)
CONVERSIONS = ("grayscale", "palette", "cmyk", "rgba", "16bit", "other")
# How decode_photo makes a non-square photo square: the centred largest square, resized; the whole
# photo resized to a square (shapes distorted); or the whole photo fitted inside, on black.
FITS = ("center_crop", "squash", "pad")

_JPEG_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_JPEG_APP1 = 0xE1
_EXIF_PREFIX = b"Exif\x00\x00"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_PALETTE, _PNG_GREY_ALPHA = 3, 4
_TIFF_WIDTH, _TIFF_HEIGHT, _TIFF_PHOTOMETRIC, _TIFF_ORIENTATION, _TIFF_SAMPLES = 256, 257, 262, 274, 277
_TIFF_PALETTE, _TIFF_CMYK = 3, 5  # PhotometricInterpretation values
# TIFF field types holding one unsigned integer, and their sizes: SHORT, LONG, LONG8 (BigTIFF).
_TIFF_INT_TYPES = {3: 2, 4: 4, 16: 8}
# DCT scale-downs libjpeg does while decoding: (colour flag, grayscale flag) by factor. OpenCV
# applies EXIF orientation with these flags unless told not to; decode_photo applies it itself for
# every format alike.
_REDUCED_JPEG_FLAGS = {
    factor: (colour | cv2.IMREAD_IGNORE_ORIENTATION, grey | cv2.IMREAD_IGNORE_ORIENTATION)
    for factor, colour, grey in [(2, cv2.IMREAD_REDUCED_COLOR_2, cv2.IMREAD_REDUCED_GRAYSCALE_2),
                                 (4, cv2.IMREAD_REDUCED_COLOR_4, cv2.IMREAD_REDUCED_GRAYSCALE_4),
                                 (8, cv2.IMREAD_REDUCED_COLOR_8, cv2.IMREAD_REDUCED_GRAYSCALE_8)]
}
# EXIF orientation (how the stored pixels must be turned to stand upright) -> OpenCV operation.
_ORIENT = {
    2: lambda img: cv2.flip(img, 1),  # mirrored left-right
    3: lambda img: cv2.rotate(img, cv2.ROTATE_180),
    4: lambda img: cv2.flip(img, 0),  # mirrored top-bottom
    5: cv2.transpose,  # mirrored along the main diagonal
    6: lambda img: cv2.rotate(img, cv2.ROTATE_90_CLOCKWISE),
    7: lambda img: cv2.flip(cv2.transpose(img), -1),  # mirrored along the other diagonal
    8: lambda img: cv2.rotate(img, cv2.ROTATE_90_COUNTERCLOCKWISE),
}


# ------------------------------------------------------------------------------ headers
# Read by hand rather than with Pillow's lazy Image.open, which costs several times more per file, and
# Pillow's PNG getexif() decodes the image (docs/benchmarks.md, "Reading the header").
def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the header of a JPEG, PNG, GIF, BMP, WebP or TIFF file; None for anything
    else (another format, or a header too short or damaged to say)."""
    if data[:2] == b"\xff\xd8":
        frame = _jpeg_frame(data)
        return (frame[1], frame[0]) if frame else None
    if data[:8] == _PNG_SIGNATURE and data[12:16] == b"IHDR" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")
    if data[:2] == b"BM" and len(data) >= 26:
        return _bmp_size(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp_size(data)
    if _is_tiff(data):
        tags = _tiff_tags(data)
        return (tags[_TIFF_WIDTH], tags[_TIFF_HEIGHT]) if _TIFF_WIDTH in tags and _TIFF_HEIGHT in tags else None
    return None


def _jpeg_segments(data: bytes):
    """(marker, offset of its 0xFF) for each marker segment of a JPEG before its scan data."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xDA:  # start of scan: the compressed image follows
            return
        yield marker, pos
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")


def _jpeg_frame(data: bytes) -> tuple[int, int, int, int] | None:
    """(height, width, components, bits per sample) from a JPEG's frame header (SOF), None if there
    is none before the scan."""
    for marker, pos in _jpeg_segments(data):
        if marker in _JPEG_SOF_MARKERS:
            if pos + 9 >= len(data):
                return None
            height = int.from_bytes(data[pos + 5 : pos + 7], "big")
            width = int.from_bytes(data[pos + 7 : pos + 9], "big")
            return height, width, data[pos + 9], data[pos + 4]
    return None


def _bmp_size(data: bytes) -> tuple[int, int] | None:
    if int.from_bytes(data[14:18], "little") == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        return int.from_bytes(data[18:20], "little"), int.from_bytes(data[20:22], "little")
    width = int.from_bytes(data[18:22], "little", signed=True)
    height = int.from_bytes(data[22:26], "little", signed=True)  # negative: stored top-down
    return abs(width), abs(height)


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk, body = data[12:16], data[20:30]
    if len(body) < 10:
        return None
    if chunk == b"VP8X":  # extended: 24-bit canvas size minus one, after 4 bytes of flags
        return int.from_bytes(body[4:7], "little") + 1, int.from_bytes(body[7:10], "little") + 1
    if chunk == b"VP8L" and body[0] == 0x2F:  # lossless: 14-bit sizes minus one, after the signature
        bits = int.from_bytes(body[1:5], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and body[3:6] == b"\x9d\x01\x2a":  # lossy: 14-bit sizes after the start code
        return int.from_bytes(body[6:8], "little") & 0x3FFF, int.from_bytes(body[8:10], "little") & 0x3FFF
    return None


def _is_tiff(data: bytes) -> bool:
    return data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic, then BigTIFF


def _tiff_tags(tiff: bytes) -> dict[int, int]:
    """The single-integer fields (SHORT, LONG, LONG8) of the first image directory of TIFF-structured
    bytes (a TIFF file, or the Exif block of a JPEG, PNG or WebP), by tag; {} when unreadable.

    Only the first directory: it is the image OpenCV decodes, and the one Exif orientation is in.
    """
    order = "little" if tiff[:2] == b"II" else "big"
    big = int.from_bytes(tiff[2:4], order) == 43  # BigTIFF: 8-byte offsets and counts, 20-byte entries
    ifd = int.from_bytes(tiff[8:16] if big else tiff[4:8], order)
    count_size, entry_size, field_size = (8, 20, 8) if big else (2, 12, 4)
    count = int.from_bytes(tiff[ifd : ifd + count_size], order)
    entries = ifd + count_size
    if ifd < 8 or entries + count * entry_size > len(tiff):
        return {}
    tags = {}
    for pos in range(entries, entries + count * entry_size, entry_size):
        tag, kind = int.from_bytes(tiff[pos : pos + 2], order), int.from_bytes(tiff[pos + 2 : pos + 4], order)
        value_at = pos + entry_size - field_size  # after the tag, the type and the count of values
        values = int.from_bytes(tiff[pos + 4 : value_at], order)
        if kind in _TIFF_INT_TYPES and values == 1:  # one value: held in the entry itself, left-justified
            tags[tag] = int.from_bytes(tiff[value_at : value_at + _TIFF_INT_TYPES[kind]], order)
    return tags


def check_header(data: bytes, *, native: int | None = None) -> tuple[int, int]:
    """(width, height) of an image file that may be decoded; ValueError saying why not otherwise.

    `native`: the side every image must have (an official dataset's native size), or None.
    """
    size = header_size(data)
    if size is None:
        raise ValueError("not a decodable image (no JPEG, PNG, GIF, BMP, WebP or TIFF header to read its size from)")
    width, height = size
    if width < 1 or height < 1:
        raise ValueError(f"its header says {width}x{height} pixels")
    if width * height > MAX_IMAGE_PIXELS:
        raise ValueError(f"its header says {width}x{height} pixels, over the limit of {MAX_IMAGE_PIXELS:,} "
                         "(tinyclf.data.images.MAX_IMAGE_PIXELS); refused before decoding")
    if native is not None and (width, height) != (native, native):
        raise ValueError(f"is {width}x{height}, not {native}x{native} like every image of the published dataset "
                         "(is this the official archive?)")
    return width, height


# ------------------------------------------------------------------------------ EXIF orientation
def exif_orientation(data: bytes) -> int:
    """The EXIF orientation (1-8; 1 = stored upright) of a JPEG, PNG, WebP or TIFF file; 1 when it
    has none or it is unreadable, as viewers do."""
    if _is_jpeg(data):
        exif = _jpeg_exif(data)
    elif data[:8] == _PNG_SIGNATURE:
        exif = _png_exif(data)
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        exif = _webp_exif(data)
    else:
        exif = data if _is_tiff(data) else b""  # a TIFF's own first directory holds the tag
    orientation = _tiff_tags(exif).get(_TIFF_ORIENTATION, 1) if _is_tiff(exif) else 1
    return orientation if 1 <= orientation <= 8 else 1


def _jpeg_exif(data: bytes) -> bytes:
    for marker, pos in _jpeg_segments(data):
        if marker == _JPEG_APP1 and data[pos + 4 : pos + 10] == _EXIF_PREFIX:
            return data[pos + 10 : pos + 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")]
    return b""


def _png_exif(data: bytes) -> bytes:
    """The eXIf chunk's body (a TIFF block); b"" when there is none."""
    pos = len(_PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = int.from_bytes(data[pos : pos + 4], "big"), data[pos + 4 : pos + 8]
        if kind == b"eXIf":
            return data[pos + 8 : pos + 8 + length]
        if kind == b"IEND":
            break
        pos += 12 + length  # length, type, body, CRC
    return b""


def _webp_exif(data: bytes) -> bytes:
    """The EXIF chunk's body, without the "Exif\\0\\0" some writers put first; b"" when there is none."""
    pos = 12
    while pos + 8 <= len(data):
        kind, length = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        if kind == b"EXIF":
            body = data[pos + 8 : pos + 8 + length]
            return body[len(_EXIF_PREFIX):] if body.startswith(_EXIF_PREFIX) else body
        pos += 8 + length + (length & 1)  # chunks are padded to an even size
    return b""


# ------------------------------------------------------------------------------ decoding
def decode_image(data: bytes, size: int, out: np.ndarray | None = None, *,
                 native: int | None = None) -> tuple[np.ndarray, str | None, bool]:
    """Decode image bytes to RGB uint8 size×size×3 (written into `out` when given, saving a copy).

    The header is checked first (`check_header`, with `native` when every image must have that
    side). Returns (image, conversion, resized): conversion is None for a plain 8-bit colour image,
    else one of `CONVERSIONS`. A non-square image is squashed; EXIF orientation is not applied
    (`decode_photo` does both better for photos). Raises ValueError with the reason when the bytes
    are not an image that may be decoded.
    """
    img = _decode_unchanged(data, native)
    img, conversion = _to_rgb8(img, data, out if img.shape[:2] == (size, size) else None)
    resized = img.shape[0] != size or img.shape[1] != size
    if resized:
        img = resize_square(img, size)
    if out is not None and img is not out:
        out[...] = img
    return img, conversion, resized


@dataclasses.dataclass(frozen=True, eq=False)
class DecodedImage:
    """What `decode_photo` made of a file. `conversion`: None for a plain 8-bit colour image, else one
    of `CONVERSIONS`. `resized`: the file was not already size×size. `rotated`: its EXIF orientation
    (other than 1, upright) was applied."""

    image: np.ndarray
    conversion: str | None
    resized: bool
    rotated: bool


def decode_photo(data: bytes, size: int, *, fit: str = "center_crop", out: np.ndarray | None = None) -> DecodedImage:
    """Decode a photo of any size to RGB uint8 size×size×3, upright (EXIF orientation applied) and
    made square by `fit` (one of `FITS`); written into `out` too when given.

    The header is checked first (`check_header`): bombs and unreadable sizes are refused before
    decoding, with a ValueError giving the reason, as is anything OpenCV cannot decode. A large
    JPEG is decoded scaled down (`jpeg_scale_down`): the result differs from a full decode's by a
    grey level or two on average, and a centre crop may sit half a scaled pixel (at most 4 pixels
    of the file) off the full decode's, where the crop's offset is not a multiple of the scale.
    """
    _check_fit(fit)  # before the work of decoding
    width, height = _check_bytes(data, None)
    orientation = exif_orientation(data)
    factor = jpeg_scale_down(data, size)
    if factor > 1:
        img, conversion = _decode_reduced_jpeg(data, factor)
    else:
        img, conversion = _to_rgb8(_imdecode(data, cv2.IMREAD_UNCHANGED), data, None)
    if orientation != 1 and not _is_tiff(data):  # OpenCV's TIFF decoder (libtiff) turns TIFFs itself
        img = _ORIENT[orientation](img)
    resized = (width, height) != (size, size)
    if img.shape[:2] != (size, size):
        img = fit_square(img, size, fit)
    if out is not None:
        out[...] = img
        img = out
    return DecodedImage(img, conversion, resized, orientation != 1)


def jpeg_scale_down(data: bytes, size: int) -> int:
    """By how much (1, 2, 4 or 8) decode_photo lets libjpeg scale a file down while decoding; 1 for
    anything but an 8-bit JPEG. The largest factor that leaves the short side at least 2×`size`,
    the margin PIL's thumbnail() keeps too: INTER_AREA then averages at least 2x2 decoded pixels
    into each output pixel, and the result stays close to a full decode's (tests/data/test_images.py
    bounds the difference). Several times faster for a large photo going to a small size
    (docs/benchmarks.md, "Your own images")."""
    frame = _jpeg_frame(data) if _is_jpeg(data) else None
    if frame is None or frame[3] != 8:  # 12-bit JPEGs: OpenCV's reduced modes are 8-bit
        return 1
    short_side = min(frame[0], frame[1])
    for factor in (8, 4, 2):
        if -(-short_side // factor) >= 2 * size:  # libjpeg rounds scaled sizes up
            return factor
    return 1


def fit_square(img: np.ndarray, size: int, fit: str) -> np.ndarray:
    """`img` made size×size the way `fit` (one of `FITS`) says."""
    _check_fit(fit)
    h, w = img.shape[:2]
    if fit == "center_crop":
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        return resize_square(img[top : top + side, left : left + side], size)
    if fit == "pad":
        scale = size / max(h, w)
        new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
        canvas = np.zeros((size, size, *img.shape[2:]), dtype=img.dtype)
        top, left = (size - new_h) // 2, (size - new_w) // 2
        canvas[top : top + new_h, left : left + new_w] = _resize(img, new_w, new_h)
        return canvas
    return resize_square(img, size)  # squash


def _check_fit(fit: str) -> None:
    if fit not in FITS:
        raise ValueError(f"unknown fit {fit!r} (one of {', '.join(FITS)})")


def resize_square(img: np.ndarray, size: int) -> np.ndarray:
    return _resize(img, size, size)


def _resize(img: np.ndarray, width: int, height: int) -> np.ndarray:
    h, w = img.shape[:2]
    # INTER_AREA averages source pixels when shrinking (no aliasing); bilinear when enlarging.
    interpolation = cv2.INTER_AREA if height < h or width < w else cv2.INTER_LINEAR
    return cv2.resize(img, (width, height), interpolation=interpolation)


def _decode_unchanged(data: bytes, native: int | None) -> np.ndarray:
    """OpenCV's decode with the file's own depth and channels; ValueError naming what is wrong."""
    _check_bytes(data, native)
    return _imdecode(data, cv2.IMREAD_UNCHANGED)


def _check_bytes(data: bytes, native: int | None) -> tuple[int, int]:
    """(width, height) from the header of bytes that may be decoded; ValueError saying why not."""
    if not data:
        raise ValueError("empty member")
    # libjpeg decodes a truncated JPEG into a partly grey image with only a warning; a file that
    # lost its end-of-image marker is corrupt, so say so rather than train on it. The marker must
    # follow the last start-of-scan (byte stuffing keeps both out of the compressed data); bytes
    # after it, which some writers append, are allowed.
    if _is_jpeg(data) and data.find(b"\xff\xd9", max(data.rfind(b"\xff\xda"), 2)) < 0:
        raise ValueError("truncated JPEG (no end-of-image marker)")
    return check_header(data, native=native)


def _imdecode(data: bytes, flags: int) -> np.ndarray:
    try:
        img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    except cv2.error as exc:
        raise ValueError(f"OpenCV cannot decode it ({str(exc).strip().splitlines()[-1]})") from None
    if img is None or img.size == 0:
        raise ValueError("not a decodable image")
    return img


def _decode_reduced_jpeg(data: bytes, factor: int) -> tuple[np.ndarray, str | None]:
    """An 8-bit JPEG decoded at 1/`factor` scale as RGB, and its conversion. libjpeg outputs a
    grayscale JPEG as one channel and turns CMYK inks into BGR, as in a full decode."""
    components = _jpeg_frame(data)[2]
    colour_flag, grey_flag = _REDUCED_JPEG_FLAGS[factor]
    if components == 1:
        return cv2.cvtColor(_imdecode(data, grey_flag), cv2.COLOR_GRAY2RGB), "grayscale"
    img = cv2.cvtColor(_imdecode(data, colour_flag), cv2.COLOR_BGR2RGB)
    return img, "cmyk" if components == 4 else None


def _is_jpeg(data: bytes) -> bool:
    return data[:2] == b"\xff\xd8"


def _to_rgb8(img: np.ndarray, data: bytes, out: np.ndarray | None) -> tuple[np.ndarray, str | None]:
    """8-bit RGB from any depth and channel count OpenCV returns, and which conversion it took
    (`_stored_as`: the file's header tells what the decoded channels no longer show). Writes into
    `out` if given."""
    conversion = None
    if img.dtype == np.uint16:
        img = ((img.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
        conversion = "16bit"
    elif img.dtype != np.uint8:
        raise ValueError(f"unsupported pixel type {img.dtype}")
    channels = 1 if img.ndim == 2 else img.shape[2]
    if channels == 1:  # grey, or a palette of greys (BMP): grayscale either way
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB), conversion or "grayscale"
    conversion = conversion or _stored_as(data)
    if channels == 2:  # grey + alpha: keep the grey, drop the alpha
        return cv2.cvtColor(np.ascontiguousarray(img[:, :, 0]), cv2.COLOR_GRAY2RGB), conversion or "other"
    if channels == 4:  # alpha dropped, as PIL's convert("RGB"); CMYK TIFFs come as BGR + opaque alpha
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB), conversion or "rgba"
    if channels != 3:
        raise ValueError(f"unsupported channel count {channels}")
    # The common case goes straight into the output block when there is one.
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB, dst=out) if out is not None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return img, conversion


def _stored_as(data: bytes) -> str | None:
    """"palette", "cmyk" or "other" (grey+alpha) when the file's header says its pixels are stored
    so; OpenCV expands them to BGR or BGRA, where the kind no longer shows. None otherwise."""
    if _is_jpeg(data):
        return "cmyk" if (_jpeg_frame(data) or (0, 0, 0, 0))[2] == 4 else None  # OpenCV turns inks into BGR
    if data[:8] == _PNG_SIGNATURE and len(data) > 25:
        return {_PNG_PALETTE: "palette", _PNG_GREY_ALPHA: "other"}.get(data[25])
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "palette"  # GIF stores nothing else
    if data[:2] == b"BM" and len(data) >= 30 and int.from_bytes(data[28:30], "little") <= 8:
        return "palette"  # 1-8 bits a pixel: indices into a colour table
    if _is_tiff(data):
        tags = _tiff_tags(data)
        photometric, samples = tags.get(_TIFF_PHOTOMETRIC), tags.get(_TIFF_SAMPLES, 1)
        if photometric in (0, 1) and samples == 2:
            return "other"
        return {_TIFF_PALETTE: "palette", _TIFF_CMYK: "cmyk"}.get(photometric)
    return None
