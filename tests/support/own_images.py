"""Users' own photo folders for testing the `folder` dataset, written from the real Tiny ImageNet subset.

Real folders are messy: mixed formats and sizes, grayscale, palette, CMYK and 16-bit files, phone
photos stored sideways with an EXIF orientation tag, names with spaces and accents, and the junk
that operating systems leave behind (.DS_Store, Thumbs.db, macOS `._*.jpg` AppleDouble files).
The helpers here write such folders from the subset's real JPEGs (a few dozen of them, never the
subset itself) and say exactly what they wrote, so a test compares what the loader found with a
`FolderSpec` instead of with numbers copied from a run:

- `build_photo_folder`: a valid folder, ImageFolder layout (train/<class>, val/<class>) or flat
  (<class>), with all the variety above (or, `variety=False`, plain JPEGs only).
- `pack_zip`, `pack_tar`, `pack_tar_gz`: deterministic archives of a folder, with or without one
  wrapping top-level directory (users zip the folder itself).
- bad-input builders (`empty_class_folder` … `train_folder_beside_class_folders`): a small valid folder plus one
  defect, returned as `BadInput(root, names, problem, spec)`: `names` are what the error must name.
- `jpeg_bomb`: a valid JPEG that promises 20000x20000 pixels in 1.6 MB (bombs.py has the PNG and TIFF ones).

Same arguments, same bytes (for the pinned Pillow; images are copied or encoded, never timestamped).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import re
import stat
import struct
import tarfile
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from support import bombs

SUBSET_TOP = "tiny-imagenet-200"
KINDS = ("grayscale", "palette", "cmyk", "rgba", "16bit")  # what a loader must convert to RGB
ORIENTATION_TAG = 0x0112
ARCHIVE_TIME = (2024, 5, 17, 12, 0, 0)  # fixed member times: the same folder gives the same archive
ARCHIVE_EPOCH = 1715947200  # the same instant, for tar
ROTATED_UPRIGHT = (96, 64)  # non-square, so a loader that ignores the tag gets the wrong shape

# What operating systems and people leave in photo folders (real magic numbers, so a loader that
# sniffs content instead of names still sees "not an image").
DS_STORE = b"\x00\x00\x00\x01Bud1" + bytes(2038)
THUMBS_DB = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(1528)
APPLE_DOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(4070)
README = "Holiday photos for the classifier. One folder per class.\n".encode()
NOTES = "# notes\n\n- the blurry ones are still in here\n".encode()
NOT_AN_IMAGE = b"<!DOCTYPE html>\n<html><head><title>Photo</title></head><body>Saved page</body></html>\n"
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
class BadInput:
    """A folder with one defect. root: what to hand to the loader. names: what its error message
    should name (class folder names or paths relative to root). problem: the defect in words.
    spec: the valid folder the defect was added to (its FolderSpec does not list the defect)."""

    root: Path
    names: tuple[str, ...]
    problem: str
    spec: FolderSpec


@dataclass(frozen=True)
class _Subset:
    wnids: list[str]
    words: dict[str, str]
    train: dict[str, list[str]]  # wnid -> zip members, sorted
    val: dict[str, list[str]]


@dataclass(frozen=True)
class _Encoded:
    data: bytes
    ext: str
    format: str
    mode: str
    kind: str
    size: tuple[int, int]
    upright_size: tuple[int, int] | None = None  # None: the same as size
    orientation: int | None = None


# ---------------------------------------------------------------------------------------------
# Reading the subset and choosing images


def _read_subset(zf: zipfile.ZipFile) -> _Subset:
    names = zf.namelist()
    wnids = zf.read(f"{SUBSET_TOP}/wnids.txt").decode().split()
    words_text = zf.read(f"{SUBSET_TOP}/words.txt").decode()
    annotations = zf.read(f"{SUBSET_TOP}/val/val_annotations.txt").decode().splitlines()
    words = dict(line.split("\t", 1) for line in words_text.splitlines() if "\t" in line)
    train: dict[str, list[str]] = {wnid: [] for wnid in wnids}
    for name in names:
        parts = name.split("/")
        if len(parts) == 5 and parts[1] == "train" and parts[3] == "images" and parts[4].endswith(".JPEG"):
            train[parts[2]].append(name)
    val: dict[str, list[str]] = {wnid: [] for wnid in wnids}
    for line in annotations:
        file, wnid = line.split("\t")[:2]
        val[wnid].append(f"{SUBSET_TOP}/val/images/{file}")
    return _Subset(wnids, words, {w: sorted(m) for w, m in train.items()}, {w: sorted(m) for w, m in val.items()})


def _choose(subset: _Subset, classes: int, train_per_class: int, val_per_class: int, seed: int):
    """Seeded choice of classes and of each class's images: (wnids, {wnid: train}, {wnid: val})."""
    fewest_train = min(len(m) for m in subset.train.values())
    fewest_val = min(len(m) for m in subset.val.values())
    if not (1 <= classes <= len(subset.wnids) and train_per_class <= fewest_train and val_per_class <= fewest_val):
        raise ValueError(f"the subset has {len(subset.wnids)} classes, {fewest_train} train and {fewest_val} "
                         f"val images per class; asked for {classes}, {train_per_class}, {val_per_class}")
    rng = random.Random(seed)
    wnids = sorted(rng.sample(sorted(subset.wnids), classes))
    train = {w: sorted(rng.sample(subset.train[w], train_per_class)) for w in wnids}
    val = {w: sorted(rng.sample(subset.val[w], val_per_class)) for w in wnids}
    return wnids, train, val


def _ensure_a_grayscale(zf: zipfile.ZipFile, subset: _Subset, train: dict[str, list[str]]) -> None:
    """Swap one real grayscale JPEG into `train` if the draw has none (about 1 in 60 subset images
    is grayscale): the converted one alone would not show that the loader handles real ones."""
    if any(_mode(zf, m) == "L" for members in train.values() for m in members):
        return
    for wnid, members in train.items():
        gray = [m for m in subset.train[wnid] if m not in members and _mode(zf, m) == "L"]
        if gray and members:
            members[-1] = gray[0]
            members.sort()
            return


def _mode(zf: zipfile.ZipFile, member: str) -> str:
    with Image.open(io.BytesIO(zf.read(member))) as img:  # reads the header only
        return img.mode


def _readable(words: str) -> str:
    return words.split(",")[0].strip()


def _folder_names(wnids: list[str], words: dict[str, str], style: str) -> dict[str, str]:
    """wnid -> class folder name: the wnid itself, or its readable name made safe for any
    filesystem (spaces kept, as users' folders have them; anything else odd becomes '_')."""
    if style == "wnid":
        return {w: w for w in wnids}
    if style != "readable":
        raise ValueError(f"folder_names must be 'wnid' or 'readable', not {style!r}")
    names: dict[str, str] = {}
    for wnid in wnids:
        name = re.sub(r"[^\w .-]", "_", _readable(words[wnid])).strip(" .") or wnid
        names[wnid] = f"{name} {wnid}" if name in names.values() else name
    return names


# ---------------------------------------------------------------------------------------------
# The variety: how chosen images are re-encoded


def _save(img: Image.Image, fmt: str, ext: str, kind: str = "rgb", **options) -> _Encoded:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **options)
    return _Encoded(buffer.getvalue(), ext, fmt, img.mode, kind, img.size)


def _upscaled(size: tuple[int, int], fmt: str, ext: str):
    """Upscaled to an odd, non-square size: the loader's resize and crop must cope."""
    def encode(img: Image.Image) -> _Encoded:
        return _save(img.resize(size, Image.Resampling.BICUBIC), fmt, ext, quality=92)
    return encode


def _sixteen_bit(img: Image.Image) -> _Encoded:
    """16-bit grayscale PNG, value = gray * 257, so both >> 8 and / 257 give the gray back. A loader
    that lets PIL convert "I;16" to RGB clips everything above 255 to white: this file catches it."""
    wide = np.asarray(img.convert("L"), dtype=np.uint16) * np.uint16(257)
    return _save(Image.fromarray(wide), "PNG", ".png", "16bit")


def _opaque_rgba(img: Image.Image) -> _Encoded:
    """RGBA PNG, alpha 255 everywhere: any sane RGBA -> RGB policy gives the original pixels."""
    rgba = img.copy()
    rgba.putalpha(255)
    return _save(rgba, "PNG", ".png", "rgba")


def _exif_rotated(img: Image.Image) -> _Encoded:
    """A phone photo held upright: pixels stored turned 90° counter-clockwise with EXIF orientation 6
    ("turn 90° clockwise to display"), so applying the tag restores the upright ROTATED_UPRIGHT image."""
    stored = img.resize(ROTATED_UPRIGHT, Image.Resampling.BICUBIC).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = 6
    exif[0x010F] = "Phone Maker"  # Make: real phone EXIF has more than the one tag
    encoded = _save(stored, "JPEG", ".jpg", quality=92, exif=exif.tobytes())
    return _Encoded(encoded.data, ".jpg", "JPEG", "RGB", "rgb", stored.size, ROTATED_UPRIGHT, 6)


# Applied to RGB train images, one each, spread over the classes (the first to the first class…).
TRAIN_VARIETY = (
    lambda img: _save(img, "PNG", ".png"),
    lambda img: _save(img, "PNG", ".PNG"),
    lambda img: _save(img, "WEBP", ".webp", quality=85),
    lambda img: _save(img, "WEBP", ".webp", lossless=True),
    lambda img: _save(img, "BMP", ".bmp"),
    lambda img: _save(img, "TIFF", ".tiff"),
    _upscaled((171, 97), "JPEG", ".jpg"),
    _upscaled((90, 150), "JPEG", ".jpeg"),
    _upscaled((97, 171), "WEBP", ".webp"),
    _upscaled((203, 64), "PNG", ".png"),
    lambda img: _save(img.convert("L"), "JPEG", ".jpg", "grayscale", quality=92),
    lambda img: _save(img.convert("P", palette=Image.Palette.ADAPTIVE, colors=256), "PNG", ".png", "palette"),
    _opaque_rgba,
    _sixteen_bit,
    lambda img: _save(img.convert("CMYK"), "JPEG", ".jpg", "cmyk", quality=92),
    _exif_rotated,
)
VAL_VARIETY = (
    lambda img: _save(img, "PNG", ".png"),
    lambda img: _save(img, "WEBP", ".webp", quality=85),
    _upscaled((133, 77), "JPEG", ".jpg"),
)


def _as_copied(data: bytes, counter: int) -> _Encoded:
    """A JPEG kept byte for byte, as users' files are; extensions vary the way cameras vary them."""
    with Image.open(io.BytesIO(data)) as img:
        mode, size = img.mode, img.size
    ext = ".JPG" if counter % 7 == 3 else ".jpeg" if counter % 11 == 5 else ".jpg"
    kind = {"L": "grayscale", "CMYK": "cmyk"}.get(mode, "rgb")
    return _Encoded(data, ext, "JPEG", mode, kind, size)


# ---------------------------------------------------------------------------------------------
# Planning and writing the folder


def _interleaved(groups: list[list]) -> list:
    """[a0, b0, c0, a1, b1, …]: special files spread over all classes, not piled into the first."""
    longest = max((len(g) for g in groups), default=0)
    return [g[i] for i in range(longest) for g in groups if i < len(g)]


def _plan(zf, wnids, chosen: dict[str, dict[str, list[str]]], variety: bool):
    """{(split, wnid, member): encoder or file name}: which images get which treatment. Only RGB
    sources are re-encoded, so a real grayscale JPEG stays one and every conversion is counted once."""
    plan: dict = {}
    for split, encoders in (("train", TRAIN_VARIETY), ("val", VAL_VARIETY)) if variety else ():
        rgb = [[(split, w, m) for m in chosen[split][w] if _mode(zf, m) == "RGB"] for w in wnids]
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
                    encoded = _as_copied(data, counter)
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


def build_photo_folder(root, subset_zip, *, classes: int = 10, train_per_class: int = 30, val_per_class: int = 10,
                       layout: str = "imagefolder", folder_names: str = "wnid",
                       names_file: str | None = "classes.json", variety: bool = True, seed: int = 0) -> FolderSpec:
    """Write a user's photo folder at `root` (created; must be empty) from the subset's real images.

    layout "imagefolder": root/train/<class>/… and root/val/<class>/… (val images are the subset's
    val images); "flat": root/<class>/… holding both. folder_names "wnid" (n02124075) or
    "readable" (Egyptian cat); names_file "classes.json", "classes.txt" or None maps folder names to
    readable names. variety=True re-encodes some RGB images (TRAIN_VARIETY, VAL_VARIETY: PNG, WebP,
    BMP, TIFF, odd sizes, grayscale, palette, RGBA, 16-bit, CMYK, one EXIF-rotated JPEG), gives two
    files human names and adds stray non-image files; it needs 18 RGB train and 3 RGB val images
    in all (2 and 1 per class at 10 classes). variety=False: the chosen JPEGs, copied
    byte for byte, nothing else. Deterministic in all arguments."""
    if layout not in ("imagefolder", "flat"):
        raise ValueError(f"layout must be 'imagefolder' or 'flat', not {layout!r}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise ValueError(f"{root} is not empty: the spec could not describe what is already there")
    with zipfile.ZipFile(subset_zip) as zf:  # opened once: its 30k-entry directory takes 0.25 s to read
        subset = _read_subset(zf)
        wnids, train, val = _choose(subset, classes, train_per_class, val_per_class, seed)
        folders = _folder_names(wnids, subset.words, folder_names)
        readable = dict(sorted((folders[w], _readable(subset.words[w])) for w in wnids))
        if variety:
            _ensure_a_grayscale(zf, subset, train)
        chosen = {"train": train, "val": val}
        entries = _write_images(root, zf, layout, folders, chosen, _plan(zf, wnids, chosen, variety))
    class_dirs = sorted(folders.values())
    strays = _write_strays(root, layout, class_dirs, entries) if variety else []
    splits: dict[str, list[tuple[str, str]]] = {}
    for rel, entry in sorted(entries.items()):
        splits.setdefault(entry.split, []).append((rel, entry.class_dir))
    rotated = next((rel for rel, e in sorted(entries.items()) if e.orientation not in (None, 1)), None)
    return FolderSpec(root, layout, class_dirs, readable, _write_mapping(root, names_file, readable), splits, entries,
                      strays, _counts(entries, splits, strays), rotated,
                      entries[rotated].upright_size if rotated else None)


# ---------------------------------------------------------------------------------------------
# Archives


def _folder_members(folder: Path) -> list[tuple[str, Path]]:
    """(relative POSIX path, path) of every directory, file and symlink under folder, sorted so the
    archive is deterministic. Symlinks are listed, never followed."""
    members = []
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        for name in dirnames + filenames:
            members.append(((here / name).relative_to(folder).as_posix(), here / name))
    return sorted(members)


def _zip_info(name: str, path: Path) -> tuple[zipfile.ZipInfo, bytes]:
    """A member as Info-ZIP stores it: Unix modes, symlinks as links (their target is the data)."""
    is_dir = path.is_dir() and not path.is_symlink()
    info = zipfile.ZipInfo(name + "/" if is_dir else name, date_time=ARCHIVE_TIME)
    info.create_system = 3  # Unix, so external_attr's high bits are read as a mode
    if path.is_symlink():
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        return info, os.readlink(path).encode()
    if is_dir:
        info.external_attr = (stat.S_IFDIR | 0o755) << 16 | 0x10  # 0x10: MS-DOS directory flag
        return info, b""
    info.external_attr = (stat.S_IFREG | 0o644) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    return info, path.read_bytes()


def _prefixed(rel: str, top_dir: str | None) -> str:
    return f"{top_dir}/{rel}" if top_dir else rel


def pack_zip(folder, dest, *, top_dir: str | None = None, macos_junk: bool = False) -> Path:
    """Zip `folder`'s contents into `dest`. top_dir: None puts train/… at the archive's top; a name
    wraps everything in that one directory (photos/train/…), as zipping the folder itself does.
    macos_junk adds what Finder's "Compress" adds: __MACOSX/…/._<name> AppleDouble files."""
    folder, dest = Path(folder), Path(dest)
    with zipfile.ZipFile(dest, "w") as zf:
        if top_dir:
            zf.writestr(_zip_info(top_dir, folder)[0], b"")
        for rel, path in _folder_members(folder):
            zf.writestr(*_zip_info(_prefixed(rel, top_dir), path))
        if macos_junk:
            for rel, path in _folder_members(folder):
                if path.is_file() and not path.is_symlink():
                    parent, _, name = _prefixed(rel, top_dir).rpartition("/")
                    junk = f"__MACOSX/{parent}/._{name}" if parent else f"__MACOSX/._{name}"
                    zf.writestr(zipfile.ZipInfo(junk, date_time=ARCHIVE_TIME), APPLE_DOUBLE)
    return dest


def _write_tar(folder: Path, fileobj, top_dir: str | None) -> None:
    """Members with fixed times, owners and modes, so the same folder gives the same tar bytes."""
    with tarfile.open(fileobj=fileobj, mode="w", format=tarfile.PAX_FORMAT) as tf:
        members = _folder_members(folder)
        if top_dir:
            members = [(top_dir, folder)] + [(_prefixed(rel, top_dir), path) for rel, path in members]
        for name, path in members:
            info = tf.gettarinfo(str(path), arcname=name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = ARCHIVE_EPOCH, 0, 0, "", ""
            if not info.issym():
                info.mode = 0o755 if info.isdir() else 0o644
            if info.isreg():
                with open(path, "rb") as data:
                    tf.addfile(info, data)
            else:
                tf.addfile(info)


def pack_tar(folder, dest, *, top_dir: str | None = None) -> Path:
    """An uncompressed tar of `folder`'s contents (top_dir as in pack_zip); symlinks stay symlinks."""
    dest = Path(dest)
    with open(dest, "wb") as raw:
        _write_tar(Path(folder), raw, top_dir)
    return dest


def pack_tar_gz(folder, dest, *, top_dir: str | None = None) -> Path:
    """pack_tar, gzipped with no name or time in the gzip header (so the bytes are reproducible)."""
    dest = Path(dest)
    with open(dest, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        _write_tar(Path(folder), gz, top_dir)
    return dest


# ---------------------------------------------------------------------------------------------
# Bad inputs: a small valid folder (3 classes x (4 train + 2 val) plain JPEGs) plus one defect


def _small_folder(root, subset_zip, classes: int = 3) -> FolderSpec:
    return build_photo_folder(root, subset_zip, classes=classes, train_per_class=4, val_per_class=2,
                              names_file=None, variety=False)


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
        subset = _read_subset(zf)
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
    """train/<class>/IMG_9003.png (bombs.png_bomb), .jpg (jpeg_bomb) or .tif (bombs.tiff_bomb):
    width x height pixels (default 400 M, 1.2 GB as RGB) in a file of 0.4 MB (PNG, TIFF) or 1.6 MB (JPEG)."""
    makers = {"png": (bombs.png_bomb, "png"), "jpeg": (jpeg_bomb, "jpg"),
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
    spec = build_photo_folder(root, subset_zip, classes=12, train_per_class=2, val_per_class=0, layout="flat",
                              names_file=None, variety=False)
    moved = spec.class_dirs[-1]
    (spec.root / "train").mkdir()
    (spec.root / moved).rename(spec.root / "train" / moved)
    return BadInput(spec.root, (moved, *spec.class_dirs[:3]), "train/<class>/ beside 11 top-level class folders", spec)


def val_folder_beside_class_folders(root, subset_zip) -> BadInput:
    """val/<class>/… split off, the training class folders left at the top (no train/): without
    a refusal val would be a class. names: val, then the first three top-level class folders."""
    spec = build_photo_folder(root, subset_zip, classes=4, train_per_class=2, val_per_class=0, layout="flat",
                              names_file=None, variety=False)
    for cls in spec.class_dirs:
        (spec.root / "val" / cls).mkdir(parents=True)
        first = sorted((spec.root / cls).iterdir())[0]
        first.rename(spec.root / "val" / cls / first.name)
    return BadInput(spec.root, ("val", *spec.class_dirs[:3]), "val/ beside class folders, no train/", spec)


BAD_INPUTS = (empty_class_folder, val_class_missing_from_train, only_one_class, symlink_outside, symlink_inside,
              decompression_bomb, truncated_jpeg, zero_byte_jpeg, duplicate_across_splits, text_as_image,
              train_folder_beside_class_folders, val_folder_beside_class_folders)


# ---------------------------------------------------------------------------------------------
# A JPEG bomb


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
