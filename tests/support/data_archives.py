"""Small dataset archives for the data tests, built here so each test knows exactly what they hold.

- `build_tiny_zip`: a Tiny ImageNet zip in the official layout, written member by member, with
  `special` member bytes (the awkward members a real archive has: grayscale, CMYK, alpha, palette,
  corrupt ones; `odd_members`) and members dropped on request.
- `small_stand_in`: a registry format's generated stand-in at its smallest class count.
- `GENERATED_SMALL`: the arguments of the generated archives whose layout and pickles are checked
  member by member (10 classes of 50 train and 10 val images, 7 unlabelled test images).
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from PIL import Image

from tinyclf.data.formats.generated import write_archive

ROOT = "tiny-imagenet-200/"
# Deliberately not sorted: the class order must be wnids.txt's, not alphabetical.
WNIDS = ["n0000003", "n0000001", "n0000002"]
WORDS = {
    "n0000001": "goldfish, Carassius auratus",
    "n0000002": "tabby, tabby cat",
    "n0000003": "lesser panda, red panda, panda, bear cat, cat bear, Ailurus fulgens",
    "n0000009": "unused id, as most of the 82,115 lines are",
}
TRAIN_PER_CLASS = 12  # > 10, so "_10" must sort after "_2"
VAL_LABELS = ["n0000001", "n0000003", "n0000003", "n0000002", "n0000001", "n0000002"]

GENERATED_SMALL = dict(num_classes=10, train_per_class=50, val_per_class=10, test_images=7, seed=3)


def color(c: int, i: int) -> tuple[int, int, int]:
    """A distinct flat colour per (class, image) that survives JPEG nearly exactly."""
    return (40 + 60 * c, 10 + 9 * i, 250 - 9 * i)  # i < 27 stays within 0-255


def jpeg(rgb, mode: str = "RGB", size: int = 64) -> bytes:
    img = Image.new("RGB", (size, size), rgb).convert(mode)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95)
    return buf.getvalue()


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def build_tiny_zip(path: Path, *, special: dict[str, bytes] | None = None, drop: tuple[str, ...] = ()) -> Path:
    """A Tiny ImageNet zip in the official layout; `special` replaces member bytes by name suffix."""
    special = special or {}
    members: dict[str, bytes] = {
        ROOT + "wnids.txt": ("\n".join(WNIDS) + "\n").encode(),
        # words.txt as published: tab-separated, no final newline.
        ROOT + "words.txt": "\n".join(f"{k}\t{v}" for k, v in WORDS.items()).encode(),
    }
    for c, wnid in enumerate(WNIDS):
        boxes = []
        for i in range(TRAIN_PER_CLASS):
            members[f"{ROOT}train/{wnid}/images/{wnid}_{i}.JPEG"] = jpeg(color(c, i))
            boxes.append(f"{wnid}_{i}.JPEG\t0\t0\t63\t63")
        members[f"{ROOT}train/{wnid}/{wnid}_boxes.txt"] = "\n".join(boxes).encode()
    lines = []
    for i, wnid in enumerate(VAL_LABELS):
        members[f"{ROOT}val/images/val_{i}.JPEG"] = jpeg(color(WNIDS.index(wnid), 20 + i))
        lines.append(f"val_{i}.JPEG\t{wnid}\t1\t2\t50\t60")
    members[ROOT + "val/val_annotations.txt"] = "\n".join(lines).encode() + b"\n"
    members[ROOT + "test/images/test_0.JPEG"] = b"unlabelled and never read"
    for suffix, data in special.items():
        (name,) = [n for n in members if n.endswith(suffix)]
        members[name] = data
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in sorted(members.items(), key=lambda kv: hash(kv[0]) % 97):  # zip order is arbitrary
            if not any(name.endswith(d) for d in drop):
                zf.writestr(name, data)
    return path


def odd_members() -> dict[str, bytes]:
    """The member kinds a real archive can hold, each converted to RGB in a known way."""
    rgba = Image.new("RGBA", (64, 64), (10, 200, 30, 128))
    palette = Image.new("RGB", (64, 64), (255, 0, 51)).convert("P")  # a web-palette colour
    return {
        "n0000001_0.JPEG": jpeg((90, 90, 90), mode="L"),
        "n0000001_1.JPEG": jpeg((30, 90, 200), mode="CMYK"),
        "n0000002_0.JPEG": png(rgba),  # content decides, not the name
        "n0000002_1.JPEG": png(palette),
        "val_1.JPEG": jpeg((120, 120, 120), mode="L"),
    }


def small_stand_in(fmt, path: Path) -> Path:
    """`fmt`'s generated stand-in with its fewest classes (at least 3), 2 train and 1 val image each."""
    low, _ = fmt.stand_in_classes
    return write_archive(fmt.name, path, num_classes=max(low, 3), train_per_class=2, val_per_class=1, test_images=1,
                         seed=5)
