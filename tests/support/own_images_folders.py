"""Users' own photo folders for testing the `folder` dataset, written from the real Tiny ImageNet subset.

Real folders are messy: mixed formats and sizes, grayscale, palette, CMYK and 16-bit files, phone
photos stored sideways with an EXIF orientation tag, names with spaces and accents, and the junk
that operating systems leave behind (.DS_Store, Thumbs.db, macOS `._*.jpg` AppleDouble files).
`build_photo_folder` writes such a folder from the subset's real JPEGs (a few dozen of them, never
the subset itself: `own_images_subset`) re-encoded the way `own_images_variety` says, and returns
exactly what it wrote, so a test compares what the loader found with a `FolderSpec` instead of with
numbers copied from a run: ImageFolder layout (train/<class>, val/<class>) or flat (<class>), with
all the variety above (or, `variety=False`, plain JPEGs only).

Archives of such a folder: `own_images_archives`; a folder with one defect: `own_images_bad_inputs`.
Same arguments, same bytes (for the pinned Pillow; images are copied or encoded, never timestamped).
"""

from __future__ import annotations

import io
import json
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from support.own_images_subset import (choose_images, class_folder_names, ensure_a_grayscale, image_mode,
                                       read_subset, readable_name)
from support.own_images_variety import TRAIN_VARIETY, VAL_VARIETY, as_copied

KINDS = ("grayscale", "palette", "cmyk", "rgba", "16bit")  # what a loader must convert to RGB

# What operating systems and people leave in photo folders (real magic numbers, so a loader that
# sniffs content instead of names still sees "not an image").
DS_STORE = b"\x00\x00\x00\x01Bud1" + bytes(2038)
THUMBS_DB = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(1528)
APPLE_DOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(4070)
README = "Holiday photos for the classifier. One folder per class.\n".encode()
NOTES = "# notes\n\n- the blurry ones are still in here\n".encode()
# Two plain JPEGs get a user's names: a space, and non-ASCII letters (NFC, as Linux and Windows store them).
HUMAN_NAMES = ("beach day 1.jpg", "Straße café.JPG")


@dataclass(frozen=True)
class ImageEntry:
    """One image as written. `mode` is the PIL mode of the stored pixels (RGB, L, P, RGBA, I;16,
    CMYK); `kind` is "rgb" or the conversion a loader needs (one of KINDS); `size` is the stored
    (width, height), `upright_size` the size after applying the EXIF orientation; `source` is the
    subset member the pixels came from (compare decoded pixels with it, resized to upright_size)."""

    path: str
    class_dir: str
    split: str
    format: str
    mode: str
    kind: str
    size: tuple[int, int]
    upright_size: tuple[int, int]
    orientation: int | None
    source: str


@dataclass(frozen=True)
class FolderSpec:
    """What build_photo_folder wrote, for tests to compare a loader's findings with.

    root: the folder. layout: "imagefolder" or "flat". class_dirs: the class folder names, sorted
    (the usual label order). readable: folder name -> readable name (first words.txt synonym).
    mapping_file: "classes.json" / "classes.txt" relative to root, or None. splits: "train" and
    "val" (imagefolder) or "all" (flat) -> [(relative path, class folder)], sorted. entries:
    relative path -> ImageEntry. non_image_files: relative paths of the strays (mapping file not
    included). counts: {"images", "train"/"val" or "all", "non_image_files", "formats": {PIL format:
    n}, "conversions": {kind: n for KINDS}, "rotated"}. rotated / rotated_upright_size: the
    EXIF-rotated JPEG (None without variety) and its (width, height) once the tag is applied.
    Relative paths are POSIX-style."""

    root: Path
    layout: str
    class_dirs: list[str]
    readable: dict[str, str]
    mapping_file: str | None
    splits: dict[str, list[tuple[str, str]]]
    entries: dict[str, ImageEntry]
    non_image_files: list[str]
    counts: dict
    rotated: str | None
    rotated_upright_size: tuple[int, int] | None


@dataclass(frozen=True)
class FolderOptions:
    """What build_photo_folder writes (see there); the defaults make the 10-class, 400-image folder
    with every kind of variety."""

    classes: int = 10
    train_per_class: int = 30
    val_per_class: int = 10
    layout: str = "imagefolder"
    folder_names: str = "wnid"
    names_file: str | None = "classes.json"
    variety: bool = True
    seed: int = 0


def _interleaved(groups: list[list]) -> list:
    """[a0, b0, c0, a1, b1, …]: special files spread over all classes, not piled into the first."""
    longest = max((len(g) for g in groups), default=0)
    return [g[i] for i in range(longest) for g in groups if i < len(g)]


def _plan(zf, wnids, chosen: dict[str, dict[str, list[str]]], variety: bool):
    """{(split, wnid, member): encoder or file name}: which images get which treatment. Only RGB
    sources are re-encoded, so a real grayscale JPEG stays one and every conversion is counted once."""
    plan: dict = {}
    for split, encoders in (("train", TRAIN_VARIETY), ("val", VAL_VARIETY)) if variety else ():
        rgb = [[(split, w, m) for m in chosen[split][w] if image_mode(zf, m) == "RGB"] for w in wnids]
        candidates = _interleaved(rgb)
        wanted = len(encoders) + (len(HUMAN_NAMES) if split == "train" else 0)
        if len(candidates) < wanted:
            raise ValueError(f"variety needs {wanted} RGB {split} images, the draw has {len(candidates)}; "
                             f"ask for more images per class")
        plan.update(zip(candidates, encoders))
        if split == "train":
            plan.update(zip(candidates[len(encoders):], HUMAN_NAMES))
    return plan


def _class_path(layout: str, split: str, class_dir: str) -> str:
    return class_dir if layout == "flat" else f"{split}/{class_dir}"


def _write_images(root: Path, zf, layout: str, folders: dict[str, str], chosen, plan) -> dict[str, ImageEntry]:
    """Write every chosen image, numbered IMG_0001… across the folder like a camera roll."""
    entries: dict[str, ImageEntry] = {}
    counter = 0
    for split in ("train", "val"):
        for wnid, members in chosen[split].items():
            for member in members:
                counter += 1
                data = zf.read(member)
                treatment = plan.get((split, wnid, member))
                if callable(treatment):
                    with Image.open(io.BytesIO(data)) as img:
                        encoded = treatment(img.convert("RGB"))
                else:
                    encoded = as_copied(data, counter)
                name = treatment if isinstance(treatment, str) else f"IMG_{counter:04d}{encoded.ext}"
                rel = f"{_class_path(layout, split, folders[wnid])}/{name}"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                (root / rel).write_bytes(encoded.data)
                entries[rel] = ImageEntry(rel, folders[wnid], "all" if layout == "flat" else split,
                                          encoded.format, encoded.mode, encoded.kind, encoded.size,
                                          encoded.upright_size or encoded.size, encoded.orientation, member)
    return entries


def _write_strays(root: Path, layout: str, class_dirs: list[str], entries: dict[str, ImageEntry]) -> list[str]:
    """The non-image files a real folder collects, at the top and inside class folders."""
    first, second, third = (class_dirs[i % len(class_dirs)] for i in range(3))
    in_class = [_class_path(layout, "train", first), _class_path(layout, "train", second),
                _class_path(layout, "val", third)]
    mine = sorted(rel for rel in entries if rel.startswith(in_class[0] + "/"))
    beside = next((rel for rel in mine if rel.endswith(".jpg")), mine[0]).rsplit("/", 1)[1]
    strays = {
        "README.txt": README,
        ".DS_Store": DS_STORE,
        f"{in_class[0]}/Thumbs.db": THUMBS_DB,
        f"{in_class[0]}/._{beside}": APPLE_DOUBLE,  # hidden, image extension, not an image
        f"{in_class[1]}/.DS_Store": DS_STORE,
        f"{in_class[2]}/notes.md": NOTES,
    }
    for rel, data in strays.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return sorted(strays)


def _write_mapping(root: Path, names_file: str | None, readable: dict[str, str]) -> str | None:
    """classes.json ({"folder": "readable name"}) or classes.txt ("folder<TAB>readable name" lines, like words.txt)."""
    if names_file == "classes.json":
        (root / names_file).write_text(json.dumps(readable, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    elif names_file == "classes.txt":
        (root / names_file).write_text("".join(f"{k}\t{v}\n" for k, v in readable.items()), encoding="utf-8")
    elif names_file is not None:
        raise ValueError(f"names_file must be 'classes.json', 'classes.txt' or None, not {names_file!r}")
    return names_file


def _counts(entries: dict[str, ImageEntry], splits: dict, strays: list[str]) -> dict:
    kinds = Counter(entry.kind for entry in entries.values())
    return {
        "images": len(entries),
        **{split: len(items) for split, items in splits.items()},
        "non_image_files": len(strays),
        "formats": dict(sorted(Counter(entry.format for entry in entries.values()).items())),
        "conversions": {kind: kinds.get(kind, 0) for kind in KINDS},
        "rotated": sum(1 for entry in entries.values() if entry.orientation not in (None, 1)),
    }



def build_photo_folder(root, subset_zip, options: FolderOptions = FolderOptions()) -> FolderSpec:
    """Write a user's photo folder at `root` (created; must be empty) from the subset's real images.

    layout "imagefolder": root/train/<class>/… and root/val/<class>/… (val images are the subset's
    val images); "flat": root/<class>/… holding both. folder_names "wnid" (n02124075) or
    "readable" (Egyptian cat); names_file "classes.json", "classes.txt" or None maps folder names to
    readable names. variety=True re-encodes some RGB images (TRAIN_VARIETY, VAL_VARIETY: PNG, WebP,
    BMP, TIFF, odd sizes, grayscale, palette, RGBA, 16-bit, CMYK, one EXIF-rotated JPEG), gives two
    files human names and adds stray non-image files; it needs 18 RGB train and 3 RGB val images
    in all (2 and 1 per class at 10 classes). variety=False: the chosen JPEGs, copied
    byte for byte, nothing else. Deterministic in all options."""
    o = options
    if o.layout not in ("imagefolder", "flat"):
        raise ValueError(f"layout must be 'imagefolder' or 'flat', not {o.layout!r}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise ValueError(f"{root} is not empty: the spec could not describe what is already there")
    with zipfile.ZipFile(subset_zip) as zf:  # opened once: its 30k-entry directory takes 0.25 s to read
        subset = read_subset(zf)
        wnids, train, val = choose_images(subset, o.classes, o.train_per_class, o.val_per_class, o.seed)
        folders = class_folder_names(wnids, subset.words, o.folder_names)
        readable = dict(sorted((folders[w], readable_name(subset.words[w])) for w in wnids))
        if o.variety:
            ensure_a_grayscale(zf, subset, train)
        chosen = {"train": train, "val": val}
        entries = _write_images(root, zf, o.layout, folders, chosen, _plan(zf, wnids, chosen, o.variety))
    class_dirs = sorted(folders.values())
    strays = _write_strays(root, o.layout, class_dirs, entries) if o.variety else []
    splits: dict[str, list[tuple[str, str]]] = {}
    for rel, entry in sorted(entries.items()):
        splits.setdefault(entry.split, []).append((rel, entry.class_dir))
    rotated = next((rel for rel, e in sorted(entries.items()) if e.orientation not in (None, 1)), None)
    return FolderSpec(root, o.layout, class_dirs, readable, _write_mapping(root, o.names_file, readable), splits,
                      entries, strays, _counts(entries, splits, strays), rotated,
                      entries[rotated].upright_size if rotated else None)
