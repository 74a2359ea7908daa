"""Image files by name: which names are images, and the order a person reading a folder expects.

One definition for every reader of file names (the Tiny ImageNet index, your own image folders,
`tinyclf predict` over folders). Deliberately light (standard library only): the generated
stand-ins import it, and the download stage depends on what they import.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

# What `tinyclf.data.images.decode_photo` reads (OpenCV, header checked first).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".webp", ".bmp", ".dib", ".tif",
                            ".tiff"})


def is_image_name(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES


def natural_key(name: str) -> list:
    """Sort key: "img2.jpg" before "img10.jpg", case ignored."""
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", name)]
