"""Tiny ImageNet: index the official zip (tiny-imagenet-200.zip) without extracting it.

Layout (as published, and as `tinyclf.data.formats.generated` writes it):

    tiny-imagenet-200/wnids.txt                       class ids, one per line: the class order
    tiny-imagenet-200/words.txt                       "<id>\\t<synonyms, comma-separated>" for all
                                                      82,115 WordNet ids (no final newline)
    tiny-imagenet-200/train/<wnid>/images/*.JPEG      train images, label = the folder
    tiny-imagenet-200/val/images/val_<i>.JPEG         val images …
    tiny-imagenet-200/val/val_annotations.txt         … labelled by "<file>\\t<wnid>\\t<box>"
    tiny-imagenet-200/test/images/*.JPEG              unlabelled: not prepared

Only the index (member names, labels, class names) is built here; the images are decoded in
parallel by `tinyclf.data.preprocess`, each worker reading members from its own handle on the zip.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tinyclf.data.preprocess import PrepareError

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


@dataclass(frozen=True)
class TinyImageNetIndex:
    """What the zip holds: classes in index order and, per split, member names with their labels."""

    classes: list[tuple[str, str]]  # (wnid, human-readable name), wnids.txt order
    members: dict[str, list[str]]  # split -> archive member names, in a stable order
    labels: dict[str, list[int]]  # split -> class index of each member


def open_zip(path: str | Path) -> zipfile.ZipFile:
    """The archive as a ZipFile, or a PrepareError naming it when it is not a readable zip."""
    try:
        return zipfile.ZipFile(path)
    except FileNotFoundError:
        raise PrepareError(f"{path}: no such file") from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise PrepareError(f"{path}: not a zip archive ({exc}); expected the Tiny ImageNet zip") from None


def ensure_zip(path: str | Path) -> None:
    """Raise PrepareError unless `path` is a zip; reads only the end record, so it is instant."""
    if not zipfile.is_zipfile(path):
        open_zip(path).close()  # raises, with the reason


def _natural_key(name: str) -> list:
    # "x_2.JPEG" before "x_10.JPEG": the order a person reading the folder expects.
    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", name)]


def _read_text(zf: zipfile.ZipFile, member: str) -> str:
    data = zf.read(member)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")  # every byte maps to a character; names stay readable


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def read_index(path: str | Path) -> TinyImageNetIndex:
    """Classes, and train/val members with labels, of a Tiny ImageNet zip. Raises PrepareError."""
    path = Path(path)
    with open_zip(path) as zf:
        names = [n for n in zf.namelist() if not n.endswith("/")]
        wnids_members = sorted((n for n in names if n.rsplit("/", 1)[-1] == "wnids.txt"), key=lambda n: n.count("/"))
        if not wnids_members:
            raise PrepareError(f"{path}: no wnids.txt inside; not a Tiny ImageNet archive")
        root = wnids_members[0][: -len("wnids.txt")]  # "tiny-imagenet-200/" (or "" for a flat zip)
        classes = _read_classes(path, zf, wnids_members[0], root)
        index_of = {wnid: i for i, (wnid, _) in enumerate(classes)}
        train = _train_members(path, names, root, index_of)
        val = _val_members(path, zf, names, root, index_of)
    return TinyImageNetIndex(
        classes=classes,
        members={"train": [n for _, n in train], "val": [n for _, n in val]},
        labels={"train": [c for c, _ in train], "val": [c for c, _ in val]},
    )


def _read_classes(path: Path, zf: zipfile.ZipFile, wnids_member: str, root: str) -> list[tuple[str, str]]:
    """(wnid, name) in wnids.txt order, names from words.txt."""
    wnids = [line.strip() for line in _read_text(zf, wnids_member).splitlines() if line.strip()]
    if len(set(wnids)) != len(wnids):
        raise PrepareError(f"{path}: {wnids_member} lists a class id more than once")
    words_member = root + "words.txt"
    if words_member not in zf.NameToInfo:
        raise PrepareError(f"{path}: no {words_member} inside; class names come from it")
    words = {}
    for line in _read_text(zf, words_member).splitlines():
        wnid, _, synonyms = line.partition("\t")
        words[wnid.strip()] = synonyms.strip()
    missing = [w for w in wnids if w not in words]
    if missing:
        raise PrepareError(f"{path}: {words_member} has no entry for class id {missing[0]}")
    return [(w, words[w]) for w in wnids]


def _train_members(path: Path, names: list[str], root: str, index_of: dict[str, int]) -> list[tuple[int, str]]:
    """(class index, member) of every train/<wnid>/images/<file>, by class then natural file order."""
    train: list[tuple[int, str]] = []
    train_prefix = root + "train/"
    for name in names:
        if not (name.startswith(train_prefix) and _is_image(name)):
            continue
        parts = name[len(train_prefix) :].split("/")
        if len(parts) != 3 or parts[1] != "images":
            continue  # not train/<wnid>/images/<file>
        if parts[0] not in index_of:
            raise PrepareError(f"{path}: member {name} is in a class folder not listed in wnids.txt")
        train.append((index_of[parts[0]], name))
    if not train:
        raise PrepareError(f"{path}: no images under {train_prefix}<wnid>/images/")
    train.sort(key=lambda t: (t[0], _natural_key(t[1])))
    return train


def _val_members(path: Path, zf: zipfile.ZipFile, names: list[str], root: str,
                 index_of: dict[str, int]) -> list[tuple[int, str]]:
    """(class index, member) of val/images/*, labelled by val/val_annotations.txt, in its order."""
    val_dir = root + "val/images/"
    annotations = root + "val/val_annotations.txt"
    if annotations not in zf.NameToInfo:
        raise PrepareError(f"{path}: no {annotations} inside; val labels come from it")
    val_images = {n for n in names if n.startswith(val_dir) and _is_image(n)}
    val: list[tuple[int, str]] = []
    seen: set[str] = set()
    for lineno, line in enumerate(_read_text(zf, annotations).splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            raise PrepareError(f"{path}: {annotations} line {lineno} is not '<file>\\t<wnid>\\t…'")
        member, wnid = val_dir + fields[0].strip(), fields[1].strip()
        if wnid not in index_of:
            raise PrepareError(f"{path}: {annotations} line {lineno} names class {wnid}, not in wnids.txt")
        if member not in val_images:
            raise PrepareError(f"{path}: {annotations} line {lineno} names {member}, which the archive lacks")
        if member in seen:
            raise PrepareError(f"{path}: {annotations} lists {fields[0].strip()} twice")
        seen.add(member)
        val.append((index_of[wnid], member))
    unlabelled = sorted(val_images - seen, key=_natural_key)
    if unlabelled:
        raise PrepareError(f"{path}: {unlabelled[0]} has no label in {annotations}")
    # Keep the annotation file's order (val_0, val_1, …): the split is a fixed, published list.
    return val
