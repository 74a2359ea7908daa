"""Bad photo folders: a small valid folder (3 classes x (4 train + 2 val) plain JPEGs, written by
`own_images_folders`) plus one defect each, from `empty_class_folder` to
`val_folder_beside_class_folders` (all in `BAD_INPUTS`), returned as `BadInput(root, names, problem,
spec)`: `names` are what the loader's error must name.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

from support import bombs
from support.own_images_folders import FolderOptions, FolderSpec, build_photo_folder
from support.own_images_subset import read_subset

NOT_AN_IMAGE = b"<!DOCTYPE html>\n<html><head><title>Photo</title></head><body>Saved page</body></html>\n"


@dataclass(frozen=True)
class BadInput:
    """A folder with one defect. root: what to hand to the loader. names: what its error message
    should name (class folder names or paths relative to root). problem: the defect in words.
    spec: the valid folder the defect was added to (its FolderSpec does not list the defect)."""

    root: Path
    names: tuple[str, ...]
    problem: str
    spec: FolderSpec


def _small_folder(root, subset_zip, classes: int = 3) -> FolderSpec:
    return build_photo_folder(root, subset_zip, FolderOptions(classes=classes, train_per_class=4, val_per_class=2,
                                                              names_file=None, variety=False))


def _first_image(spec: FolderSpec, split: str, class_dir: str) -> str:
    return next(rel for rel, cls in spec.splits[split] if cls == class_dir)


def _write(root: Path, rel: str, data: bytes) -> str:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_bytes(data)
    return rel


def empty_class_folder(root, subset_zip) -> BadInput:
    """train/untitled folder/ exists and holds nothing (what "New Folder" leaves)."""
    spec = _small_folder(root, subset_zip)
    (spec.root / "train" / "untitled folder").mkdir()
    return BadInput(spec.root, ("untitled folder",), "a class folder with no images", spec)


def val_class_missing_from_train(root, subset_zip) -> BadInput:
    """val/<wnid>/ holds two real images of a class that train/ does not have."""
    spec = _small_folder(root, subset_zip)
    with zipfile.ZipFile(subset_zip) as zf:
        subset = read_subset(zf)
        stranger = next(w for w in sorted(subset.wnids) if w not in spec.class_dirs)
        for i, member in enumerate(subset.val[stranger][:2]):
            _write(spec.root, f"val/{stranger}/IMG_9{i:03d}.jpg", zf.read(member))
    return BadInput(spec.root, (stranger,), "a val class that train does not have", spec)


def only_one_class(root, subset_zip) -> BadInput:
    """A valid folder with one class (train and val): nothing to classify."""
    spec = _small_folder(root, subset_zip, classes=1)
    return BadInput(spec.root, (spec.class_dirs[0],), "only one class", spec)


def symlink_outside(root, subset_zip) -> BadInput:
    """train/<class>/IMG_9001.jpg is a symlink (absolute) to a real JPEG OUTSIDE the folder, at
    <root's parent>/<root's name>-elsewhere/holiday.jpg: following it would read other files."""
    spec = _small_folder(root, subset_zip)
    target = spec.root.parent / f"{spec.root.name}-elsewhere" / "holiday.jpg"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes((spec.root / _first_image(spec, "val", spec.class_dirs[1])).read_bytes())
    link = f"train/{spec.class_dirs[0]}/IMG_9001.jpg"
    (spec.root / link).symlink_to(target)
    return BadInput(spec.root, (link,), "a symlink pointing outside the folder", spec)


def symlink_inside(root, subset_zip) -> BadInput:
    """train/<class>/IMG_9002.jpg is a relative symlink to another image of the same class folder
    (the same photo twice; whether the loader skips, copies or refuses it, it must not crash)."""
    spec = _small_folder(root, subset_zip)
    first = _first_image(spec, "train", spec.class_dirs[0])
    link = f"train/{spec.class_dirs[0]}/IMG_9002.jpg"
    (spec.root / link).symlink_to(first.rsplit("/", 1)[1])
    return BadInput(spec.root, (link,), "a symlink to another image inside the folder", spec)


def decompression_bomb(root, subset_zip, *, kind: str = "png", width: int = 20000, height: int = 20000) -> BadInput:
    """train/<class>/IMG_9003.png (bombs.png_bomb), .jpg (bombs.jpeg_bomb) or .tif (bombs.tiff_bomb):
    width x height pixels (default 400 M, 1.2 GB as RGB) in a file of 0.4 MB (PNG, TIFF) or 1.6 MB (JPEG)."""
    makers = {"png": (bombs.png_bomb, "png"), "jpeg": (bombs.jpeg_bomb, "jpg"),
              "tiff": (lambda w, h: bombs.tiff_bomb(w, h), "tif")}  # looked up late: a newer helper
    if kind not in makers:
        raise ValueError(f"kind must be one of {sorted(makers)}, not {kind!r}")
    spec = _small_folder(root, subset_zip)
    make, ext = makers[kind]
    rel = _write(spec.root, f"train/{spec.class_dirs[0]}/IMG_9003.{ext}", make(width, height))
    return BadInput(spec.root, (rel,), f"a decompression bomb ({kind}, {width}x{height})", spec)


def truncated_jpeg(root, subset_zip) -> BadInput:
    """train/<class>/IMG_9004.jpg: a real JPEG cut after 60% of its bytes (no end marker). PIL
    raises on load() and the pinned OpenCV's imdecode returns None; decoders that pad a short
    file with grey instead (ImageFile.LOAD_TRUNCATED_IMAGES) would train on half a photo."""
    spec = _small_folder(root, subset_zip)
    data = (spec.root / _first_image(spec, "train", spec.class_dirs[1])).read_bytes()
    rel = _write(spec.root, f"train/{spec.class_dirs[1]}/IMG_9004.jpg", data[: len(data) * 6 // 10])
    return BadInput(spec.root, (rel,), "a truncated JPEG", spec)


def zero_byte_jpeg(root, subset_zip) -> BadInput:
    """train/<class>/IMG_9005.jpg: an empty file (an interrupted copy)."""
    spec = _small_folder(root, subset_zip)
    rel = _write(spec.root, f"train/{spec.class_dirs[1]}/IMG_9005.jpg", b"")
    return BadInput(spec.root, (rel,), "a zero-byte image file", spec)


def duplicate_across_splits(root, subset_zip) -> BadInput:
    """val/<class>/IMG_9006.jpg has exactly the bytes of an image of train/<class>/: the model would
    be measured on a photo it trained on. names: (the train path, the val path)."""
    spec = _small_folder(root, subset_zip)
    original = _first_image(spec, "train", spec.class_dirs[0])
    copy = _write(spec.root, f"val/{spec.class_dirs[0]}/IMG_9006.jpg", (spec.root / original).read_bytes())
    return BadInput(spec.root, (original, copy), "the same image in train and val", spec)


def text_as_image(root, subset_zip) -> BadInput:
    """train/<class>/IMG_9007.jpg is an HTML page (a browser's "Save as" gone wrong)."""
    spec = _small_folder(root, subset_zip)
    rel = _write(spec.root, f"train/{spec.class_dirs[2]}/IMG_9007.jpg", NOT_AN_IMAGE)
    return BadInput(spec.root, (rel,), "a text file with an image extension", spec)


def train_folder_beside_class_folders(root, subset_zip) -> BadInput:
    """Eleven class folders at the top (<class>/…, 2 JPEGs each) and train/<class>/ holding a twelfth:
    the two layouts mixed, as when a user adds train/lemon/ to a folder of class folders. names: the
    train class, then the first three top-level ones (all must be named)."""
    spec = build_photo_folder(root, subset_zip, FolderOptions(classes=12, train_per_class=2, val_per_class=0,
                                                              layout="flat", names_file=None, variety=False))
    moved = spec.class_dirs[-1]
    (spec.root / "train").mkdir()
    (spec.root / moved).rename(spec.root / "train" / moved)
    return BadInput(spec.root, (moved, *spec.class_dirs[:3]), "train/<class>/ beside 11 top-level class folders", spec)


def val_folder_beside_class_folders(root, subset_zip) -> BadInput:
    """val/<class>/… split off, the training class folders left at the top (no train/): without
    a refusal val would be a class. names: val, then the first three top-level class folders."""
    spec = build_photo_folder(root, subset_zip, FolderOptions(classes=4, train_per_class=2, val_per_class=0,
                                                              layout="flat", names_file=None, variety=False))
    for cls in spec.class_dirs:
        (spec.root / "val" / cls).mkdir(parents=True)
        first = sorted((spec.root / cls).iterdir())[0]
        first.rename(spec.root / "val" / cls / first.name)
    return BadInput(spec.root, ("val", *spec.class_dirs[:3]), "val/ beside class folders, no train/", spec)


BAD_INPUTS = (empty_class_folder, val_class_missing_from_train, only_one_class, symlink_outside, symlink_inside,
              decompression_bomb, truncated_jpeg, zero_byte_jpeg, duplicate_across_splits, text_as_image,
              train_folder_beside_class_folders, val_folder_beside_class_folders)
