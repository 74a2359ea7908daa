"""Image files that promise far more pixels than their bytes: real, decodable, built without ever
holding the pixels (PNG and TIFF rows are streamed through zlib; a JPEG's blocks are two bits each)."""

from __future__ import annotations

import struct
import zlib


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_bomb(width: int = 20000, height: int = 20000) -> bytes:
    """A valid 8-bit grayscale PNG of `width` x `height` black pixels: a few hundred KB for 20000²."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte 0, then the row
    parts = [compressor.compress(row) for _ in range(height)]
    idat = b"".join(parts) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def tiff_bomb(width: int = 20000, height: int = 20000, *, byteorder: str = "<", short_sizes: bool = False) -> bytes:
    """A valid 8-bit grayscale TIFF of `width` x `height` black pixels in one Deflate strip: about
    400 KB for 20000². `byteorder` "<" writes a little-endian file (II), ">" a big-endian one (MM);
    `short_sizes` stores the width and height as SHORT fields (16-bit) rather than LONG."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * width
    strip = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    size_type = 3 if short_sizes else 4
    entries = [  # (tag, field type, value), sorted by tag as TIFF requires; 3 = SHORT, 4 = LONG
        (256, size_type, width), (257, size_type, height), (258, 3, 8), (259, 3, 8),  # 8 bits, Deflate
        (262, 3, 1), (273, 4, None), (277, 3, 1), (278, 4, height), (279, 4, len(strip)),  # black is zero
    ]
    strip_at = 8 + 2 + 12 * len(entries) + 4  # header, entry count, entries, next-directory offset
    ifd = struct.pack(byteorder + "H", len(entries))
    for tag, kind, value in entries:
        value = strip_at if value is None else value
        field = struct.pack(byteorder + "H", value) + b"\x00\x00" if kind == 3 else struct.pack(byteorder + "I", value)
        ifd += struct.pack(byteorder + "HHI", tag, kind, 1) + field  # one value, left-justified in 4 bytes
    header = (b"II" if byteorder == "<" else b"MM") + struct.pack(byteorder + "HI", 42, 8)
    return header + ifd + struct.pack(byteorder + "I", 0) + strip


def _segment(marker: int, body: bytes) -> bytes:
    return struct.pack(">HH", marker, len(body) + 2) + body


def jpeg_bomb(width: int = 20000, height: int = 20000) -> bytes:
    """A valid baseline grayscale JPEG of width x height mid-grey pixels, built without pixels:
    its Huffman tables hold one 1-bit code each, so every 8x8 block costs 2 bits (DC difference 0,
    end of block) and the file is about width*height/256 bytes (1.6 MB for 20000², JPEG's limit is
    65535 a side). Decoders read it whole; PIL's bomb check sees the size in the header."""
    one_code = bytes([1] + [0] * 15)  # counts of codes of length 1..16: a single 1-bit code
    header = b"".join([
        b"\xff\xd8",
        _segment(0xFFDB, b"\x00" + bytes([1] * 64)),  # quantization table 0, all ones
        _segment(0xFFC0, struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00"),
        _segment(0xFFC4, b"\x00" + one_code + b"\x00"),  # DC table 0: the one code means "difference 0"
        _segment(0xFFC4, b"\x10" + one_code + b"\x00"),  # AC table 0: the one code means "end of block"
        _segment(0xFFDA, b"\x01\x01\x00\x00\x3f\x00"),
    ])
    bits = 2 * ((width + 7) // 8) * ((height + 7) // 8)
    scan = bytes(bits // 8) + (bytes([(1 << (8 - bits % 8)) - 1]) if bits % 8 else b"")  # pad with 1s
    return header + scan + b"\xff\xd9"
