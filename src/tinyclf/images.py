"""Image files in, RGB uint8 arrays out, with the size checked before anything is decoded.

A small file can promise gigabytes: a 20000×20000 PNG of one colour is a few hundred KB and
decodes to 1.2 GB. So `decode_image` reads the width and height from the file's header first
(`header_size`: JPEG, PNG, GIF, BMP, WebP) and refuses, before decoding, a file whose format it
cannot read the size of, one over `MAX_IMAGE_PIXELS`, or, when the caller knows the size every
image must have (an official dataset), one of any other size. `MAX_IMAGE_BYTES` bounds what is
read at all. Decoding is OpenCV's (`cv2.imdecode`), then grayscale, CMYK, RGBA, palette and
16-bit images become 8-bit RGB, and the conversion is reported so it can be counted.
"""

from __future__ import annotations

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

_JPEG_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_PALETTE = 3


# ------------------------------------------------------------------------------ headers
def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the header of a JPEG, PNG, GIF, BMP or WebP file; None for anything else
    (another format, or a header too short or damaged to say)."""
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
    return None


def _jpeg_frame(data: bytes) -> tuple[int, int, int] | None:
    """(height, width, components) from a JPEG's frame header (SOF), None if there is none before the scan."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker in _JPEG_SOF_MARKERS:
            if pos + 9 >= len(data):
                return None
            height = int.from_bytes(data[pos + 5 : pos + 7], "big")
            width = int.from_bytes(data[pos + 7 : pos + 9], "big")
            return height, width, data[pos + 9]
        if marker == 0xDA:  # start of scan: no frame header before the image data
            return None
        pos += 2 + length
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


def check_header(data: bytes, *, native: int | None = None) -> tuple[int, int]:
    """(width, height) of an image file that may be decoded; ValueError saying why not otherwise.

    `native`: the side every image must have (an official dataset's native size), or None.
    """
    size = header_size(data)
    if size is None:
        raise ValueError("not a decodable image (no JPEG, PNG, GIF, BMP or WebP header to read its size from)")
    width, height = size
    if width < 1 or height < 1:
        raise ValueError(f"its header says {width}x{height} pixels")
    if width * height > MAX_IMAGE_PIXELS:
        raise ValueError(f"its header says {width}x{height} pixels, over the limit of {MAX_IMAGE_PIXELS:,} "
                         "(tinyclf.images.MAX_IMAGE_PIXELS); refused before decoding")
    if native is not None and (width, height) != (native, native):
        raise ValueError(f"is {width}x{height}, not {native}x{native} like every image of the published dataset "
                         "(is this the official archive?)")
    return width, height


# ------------------------------------------------------------------------------ decoding
def decode_image(data: bytes, size: int, out: np.ndarray | None = None, *,
                 native: int | None = None) -> tuple[np.ndarray, str | None, bool]:
    """Decode image bytes to RGB uint8 size×size×3 (written into `out` when given, saving a copy).

    The header is checked first (`check_header`, with `native` when every image must have that
    side). Returns (image, conversion, resized): conversion is None for a plain 8-bit colour image,
    else one of "grayscale", "cmyk", "rgba", "other" (palette, grey+alpha, 16-bit). Raises
    ValueError with the reason when the bytes are not an image that may be decoded.
    """
    img = _decode_unchanged(data, native)
    img, conversion = _to_rgb8(img, data, out if img.shape[:2] == (size, size) else None)
    resized = img.shape[0] != size or img.shape[1] != size
    if resized:
        img = resize_square(img, size)
    if out is not None and img is not out:
        out[...] = img
    return img, conversion, resized


def resize_square(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    # INTER_AREA averages source pixels when shrinking (no aliasing); bilinear when enlarging.
    interpolation = cv2.INTER_AREA if size < h or size < w else cv2.INTER_LINEAR
    return cv2.resize(img, (size, size), interpolation=interpolation)


def _decode_unchanged(data: bytes, native: int | None) -> np.ndarray:
    """OpenCV's decode with the file's own depth and channels; ValueError naming what is wrong."""
    if not data:
        raise ValueError("empty member")
    # libjpeg decodes a truncated JPEG into a partly grey image with only a warning; a file that
    # lost its end-of-image marker is corrupt, so say so rather than train on it. The marker must
    # follow the last start-of-scan (byte stuffing keeps both out of the compressed data); bytes
    # after it, which some writers append, are allowed.
    if _is_jpeg(data) and data.find(b"\xff\xd9", max(data.rfind(b"\xff\xda"), 2)) < 0:
        raise ValueError("truncated JPEG (no end-of-image marker)")
    check_header(data, native=native)
    try:
        img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise ValueError(f"OpenCV cannot decode it ({str(exc).strip().splitlines()[-1]})") from None
    if img is None or img.size == 0:
        raise ValueError("not a decodable image")
    return img


def _is_jpeg(data: bytes) -> bool:
    return data[:2] == b"\xff\xd8"


def _to_rgb8(img: np.ndarray, data: bytes, out: np.ndarray | None) -> tuple[np.ndarray, str | None]:
    """8-bit RGB from any depth and channel count OpenCV returns, and which conversion it took
    (`data`, the file's bytes, tells CMYK JPEGs and palette PNGs apart). Writes into `out` if given."""
    conversion = None
    if img.dtype == np.uint16:
        img = ((img.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
        conversion = "other"
    elif img.dtype != np.uint8:
        raise ValueError(f"unsupported pixel type {img.dtype}")
    channels = 1 if img.ndim == 2 else img.shape[2]
    if channels == 1:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB), conversion or "grayscale"
    if channels == 2:  # grey + alpha (PNG): keep the grey, drop the alpha
        return cv2.cvtColor(np.ascontiguousarray(img[:, :, 0]), cv2.COLOR_GRAY2RGB), "other"
    if channels == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB), conversion or "rgba"  # alpha dropped, as PIL's convert("RGB")
    if channels != 3:
        raise ValueError(f"unsupported channel count {channels}")
    # The common case goes straight into the output block when there is one.
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB, dst=out) if out is not None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if _is_jpeg(data) and (_jpeg_frame(data) or (0, 0, 0))[2] == 4:
        conversion = conversion or "cmyk"  # OpenCV already turned the inks into BGR
    elif data[:8] == _PNG_SIGNATURE and len(data) > 25 and data[25] == _PNG_PALETTE:
        conversion = conversion or "other"  # palette PNG, expanded by OpenCV
    return img, conversion
