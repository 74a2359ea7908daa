"""Tiny ImageNet: the official zip (tiny-imagenet-200.zip), indexed without extracting it, and its
generated stand-in.

Layout (as published, and as `write_stand_in` writes it):

    tiny-imagenet-200/wnids.txt                       class ids, one per line: the class order
    tiny-imagenet-200/words.txt                       "<id>\\t<synonyms, comma-separated>" for all
                                                      82,115 WordNet ids (no final newline)
    tiny-imagenet-200/train/<wnid>/images/*.JPEG      train images, label = the folder
    tiny-imagenet-200/train/<wnid>/<wnid>_boxes.txt   their bounding boxes (not used)
    tiny-imagenet-200/val/images/val_<i>.JPEG         val images …
    tiny-imagenet-200/val/val_annotations.txt         … labelled by "<file>\\t<wnid>\\t<box>"
    tiny-imagenet-200/test/images/*.JPEG              unlabelled: not prepared

Only the index (member names, labels, class names) is built here; preprocess decodes the members
in parallel, each worker reading from its own handle on the zip, every image checked to be 64×64
from its header first. About 2% of the real JPEGs are grayscale; the stand-in has them too.
Generated archives mark themselves: ids start with `g` (`g0000000`…; real ones with `n`) and the
zip comment is `tinyclf-generated`.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tinyclf.data.file_names import is_image_name, natural_key
from tinyclf.data.formats.contract import DecodeRule, FormatData, MemberSplit, PrepareOptions, StandInSpec
from tinyclf.data.formats.synthetic import MARKER, class_description, render_images
from tinyclf.errors import PrepareError

ROOT = "tiny-imagenet-200"
NATIVE_SIZE = 64


def decode_rule(options: PrepareOptions) -> DecodeRule:
    # Every member of the published archive (and of a stand-in) is 64×64: another size means it is
    # not that archive, and checking it from the header bounds memory.
    return DecodeRule(native=NATIVE_SIZE)


def read(archive: Path, options: PrepareOptions) -> FormatData:
    """The zip's classes and its train and val members."""
    index = read_index(archive)
    splits = {split: MemberSplit([(name, name) for name in index.members[split]], index.labels[split])
              for split in ("train", "val")}
    return FormatData(classes=index.classes, splits=splits)


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


def _read_text(zf: zipfile.ZipFile, member: str) -> str:
    data = zf.read(member)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")  # every byte maps to a character; names stay readable


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
        if not (name.startswith(train_prefix) and is_image_name(name)):
            continue
        parts = name[len(train_prefix) :].split("/")
        if len(parts) != 3 or parts[1] != "images":
            continue  # not train/<wnid>/images/<file>
        if parts[0] not in index_of:
            raise PrepareError(f"{path}: member {name} is in a class folder not listed in wnids.txt")
        train.append((index_of[parts[0]], name))
    if not train:
        raise PrepareError(f"{path}: no images under {train_prefix}<wnid>/images/")
    train.sort(key=lambda t: (t[0], natural_key(t[1])))
    return train


def _val_members(path: Path, zf: zipfile.ZipFile, names: list[str], root: str,
                 index_of: dict[str, int]) -> list[tuple[int, str]]:
    """(class index, member) of val/images/*, labelled by val/val_annotations.txt, in its order."""
    val_dir = root + "val/images/"
    annotations = root + "val/val_annotations.txt"
    if annotations not in zf.NameToInfo:
        raise PrepareError(f"{path}: no {annotations} inside; val labels come from it")
    val_images = {n for n in names if n.startswith(val_dir) and is_image_name(n)}
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
    unlabelled = sorted(val_images - seen, key=natural_key)
    if unlabelled:
        raise PrepareError(f"{path}: {unlabelled[0]} has no label in {annotations}")
    # Keep the annotation file's order (val_0, val_1, …): the split is a fixed, published list.
    return val


# ------------------------------------------------------------------------------ generated stand-in

# Fixed archive metadata, so identical arguments give identical bytes.
_ZIP_DATE = (2021, 2, 15, 2, 18, 24)  # the timestamp the real archive's members carry
_JPEG_QUALITY = 85
_GRAYSCALE_EVERY = 50  # one image in 50 is a true grayscale JPEG (real Tiny ImageNet: ~2%)


def generated_wnid(c: int) -> str:
    return f"g{c:07d}"


def write_stand_in(fh, spec: StandInSpec) -> None:
    """64×64 JPEGs of `spec.num_classes` synthetic classes as tiny-imagenet-200.zip; member order,
    names and line formats mirror the real archive."""
    wnids = [generated_wnid(c) for c in range(spec.num_classes)]
    with zipfile.ZipFile(fh, "w") as zf:
        zf.comment = MARKER.encode()
        _zip_add(zf, "wnids.txt", "".join(f"{w}\n" for w in wnids).encode())
        # words.txt: "id<TAB>name" lines and no final newline, like the real one.
        _zip_add(zf, "words.txt", "\n".join(f"{w}\t{class_description(c)}" for c, w in enumerate(wnids)).encode())
        for c, wnid in enumerate(wnids):
            _add_train_class(zf, c, wnid, spec)
        _add_val(zf, wnids, spec)
        test_labels = spec.rng_test.integers(0, spec.num_classes, spec.test_images)
        images, _ = render_images(test_labels, NATIVE_SIZE, spec.rng_test)
        for i in range(spec.test_images):
            _zip_add(zf, f"test/images/test_{i}.JPEG", _jpeg(images[i], _is_gray(i)))


def _add_train_class(zf: zipfile.ZipFile, c: int, wnid: str, spec: StandInSpec) -> None:
    images, boxes = render_images(np.full(spec.train_per_class, c), NATIVE_SIZE, spec.rng_train)
    lines = []
    for i in range(spec.train_per_class):
        fname = f"{wnid}_{i}.JPEG"
        _zip_add(zf, f"train/{wnid}/images/{fname}", _jpeg(images[i], _is_gray(i)))
        lines.append(f"{fname}\t" + "\t".join(str(int(b)) for b in boxes[i]) + "\n")
    _zip_add(zf, f"train/{wnid}/{wnid}_boxes.txt", "".join(lines).encode())


def _add_val(zf: zipfile.ZipFile, wnids: list[str], spec: StandInSpec) -> None:
    # The real val split interleaves classes; labels come from val_annotations.txt.
    val_labels = spec.rng_val.permutation(np.repeat(np.arange(spec.num_classes), spec.val_per_class))
    images, boxes = render_images(val_labels, NATIVE_SIZE, spec.rng_val)
    annotations = "".join(
        f"val_{i}.JPEG\t{wnids[label]}\t" + "\t".join(str(int(b)) for b in boxes[i]) + "\n"
        for i, label in enumerate(val_labels)
    )
    _zip_add(zf, "val/val_annotations.txt", annotations.encode())
    for i in range(len(val_labels)):
        _zip_add(zf, f"val/images/val_{i}.JPEG", _jpeg(images[i], _is_gray(i)))


def _zip_add(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(f"{ROOT}/{name}", date_time=_ZIP_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 3  # unix, like the real archive
    info.external_attr = 0o100644 << 16
    zf.writestr(info, data)


def _jpeg(image: np.ndarray, grayscale: bool) -> bytes:
    pil = Image.fromarray(image, "RGB")
    if grayscale:  # a true single-channel JPEG, as ~2% of the real Tiny ImageNet files are
        pil = pil.convert("L")
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", quality=_JPEG_QUALITY)
    return buf.getvalue()


def _is_gray(index: int) -> bool:
    return index % _GRAYSCALE_EVERY == _GRAYSCALE_EVERY // 2


def is_stand_in(archive: Path) -> bool:
    with zipfile.ZipFile(archive) as zf:
        if zf.comment == MARKER.encode():
            return True
        try:
            first = zf.read(f"{ROOT}/wnids.txt").split(b"\n", 1)[0]
        except KeyError:
            return False
        return first.startswith(b"g")
