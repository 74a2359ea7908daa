"""Readers of our own (os.walk, PIL) that the builder tests check the builders' output with: they
share no code with the builders, so a builder that silently wrote something else cannot agree
with itself."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

from PIL import Image


def files_on_disk(root: Path) -> dict[str, bytes]:
    """Every regular file under root by relative POSIX path (the folder's whole content)."""
    found = {}
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath) / name
            found[path.relative_to(root).as_posix()] = path.read_bytes()
    return found


def pil_reads(data: bytes) -> Image.Image | None:
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
        return img
    except Exception:  # noqa: BLE001 - anything PIL cannot read is "not an image" here
        return None


def digest(root: Path) -> str:
    return hashlib.sha256(repr(sorted(files_on_disk(root).items())).encode()).hexdigest()

