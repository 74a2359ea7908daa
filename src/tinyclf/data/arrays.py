"""The prepared-array format that preprocess writes and train / evaluate / summarize read.

Layout of a prepared directory (docs/architecture.md, "prepared arrays"):

    <dir>/train/images.npy   uint8, N×H×W×3, RGB, C-contiguous (memory-mappable)
    <dir>/train/labels.npy   int64, N, index into classes.json
    <dir>/val/…              the same for the validation split
    <dir>/classes.json       {"dataset", "generated", "classes": [{"index", "id", "name"}, …]}
                             (+ "groups" and each class's "group" for CIFAR-100's superclasses)
    <dir>/stats.json         {"dataset", "generated", "image_size", "mean", "std", "splits": {…}}

Writing: `prepared_output(out_dir)` yields a temp directory next to `out_dir`; the helpers below
fill it, and only when the whole block succeeds is it renamed over `out_dir`. A failed or killed
run therefore leaves either the previous directory untouched or nothing at all, never a mix.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from tinyclf import atomic
from tinyclf.errors import TinyclfError

SPLITS = ("train", "val")  # every prepared directory has these
# …and this one when the data holds out a test split (a test/ folder, data.test_fraction, or an
# official val set kept apart by data.val_from_train): only evaluate reads it.
TEST_SPLIT = "test"
ALL_SPLITS = SPLITS + (TEST_SPLIT,)
IMAGES_FILE = "images.npy"
LABELS_FILE = "labels.npy"
# Where each row came from, one string per row: the member path in the archive or folder, or
# "<batch>#<row>" for a CIFAR batch (`data_batch_3#1234`). Absent in directories prepared before it existed.
SOURCES_FILE = "sources.json"
CLASSES_FILE = "classes.json"
STATS_FILE = "stats.json"
CONVERTED_KINDS = ("grayscale", "palette", "cmyk", "rgba", "16bit", "other")  # tinyclf.data.images.CONVERSIONS
# A train split whose largest class has this many times the images of its smallest is called
# imbalanced (stats.json, the preprocess log and the report warn; train.balance: sampler helps).
# 10x: past it, an unweighted model measurably neglects the small classes (Buda et al. 2018 see
# the minority-class accuracy fall from ratios of about 10 on CIFAR-10); milder skews are the
# norm in real photo collections and not worth a warning.
IMBALANCE_RATIO = 10.0


class PreparedDataError(TinyclfError):
    """A prepared directory that is missing or does not follow the format; the message names the file."""


# --------------------------------------------------------------------------------------- reading


def _check_split(split: str) -> None:
    if split not in ALL_SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(ALL_SPLITS)}")


def split_title(split: str) -> str:
    """How reports name a split: "test", "validation" or "train"."""
    return "validation" if split == "val" else split


def has_test_split(stats: dict) -> bool:
    """Whether the prepared data (its stats.json) holds a test split."""
    return TEST_SPLIT in stats.get("splits", {})


def _missing(path: Path) -> PreparedDataError:
    return PreparedDataError(f"{path}: missing; run the preprocess stage first (dvc repro preprocess)")


def load_split(prepared_dir: str | Path, split: str, mmap: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of one split. Images are memory-mapped read-only unless mmap=False."""
    _check_split(split)
    split_dir = Path(prepared_dir) / split
    images_path, labels_path = split_dir / IMAGES_FILE, split_dir / LABELS_FILE
    for path in (images_path, labels_path):
        if not path.is_file():
            raise _missing(path)
    try:
        images = np.load(images_path, mmap_mode="r" if mmap else None, allow_pickle=False)
        labels = np.load(labels_path, allow_pickle=False)
    except ValueError as exc:  # a truncated or foreign file
        raise PreparedDataError(f"{split_dir}: not a readable .npy pair: {exc}") from None
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise PreparedDataError(f"{images_path}: expected uint8 N×H×W×3, got {images.dtype} {images.shape}")
    if labels.dtype != np.int64 or labels.shape != images.shape[:1]:
        raise PreparedDataError(
            f"{labels_path}: expected int64 of length {images.shape[0]}, got {labels.dtype} {labels.shape}"
        )
    return images, labels


def _load_json(path: Path) -> dict:
    if not path.is_file():
        raise _missing(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise PreparedDataError(f"{path}: not valid JSON ({exc})") from None


def load_classes(prepared_dir: str | Path) -> dict:
    """classes.json: {"dataset", "generated", "classes": [{"index", "id", "name"}, …]}."""
    return _load_json(Path(prepared_dir) / CLASSES_FILE)


def load_stats(prepared_dir: str | Path) -> dict:
    """stats.json: counts, per-class counts, conversions, mean/std of the train split."""
    return _load_json(Path(prepared_dir) / STATS_FILE)


# --------------------------------------------------------------------------------------- writing


@contextlib.contextmanager
def prepared_output(out_dir: str | Path) -> Iterator[Path]:
    """Yield an empty temp directory next to `out_dir`; on success it replaces `out_dir` whole.

    On any error (or KeyboardInterrupt) the temp directory is deleted and `out_dir` is untouched.
    Leftovers of a killed earlier run (`.<name>.*.tmp` siblings) are removed first.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.parent.glob(f".{out_dir.name}.*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; give it a plain mkdir's mode
        # Two renames: the old directory steps aside, the new one takes its name, the old one
        # is deleted. A crash between the renames leaves the old data under a .tmp name (and
        # the next run cleans it up), never a half-written directory under the real name.
        old = None
        if out_dir.exists() or out_dir.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
            os.replace(out_dir, old / "old")
        try:
            os.replace(tmp, out_dir)
        except BaseException:
            if old is not None:
                os.replace(old / "old", out_dir)  # put the previous data back
                shutil.rmtree(old, ignore_errors=True)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@dataclass(frozen=True)
class ImagesFile:
    """images.npy of one split, created at full size; rows are written in place by index.

    Plain data (picklable), so decode workers in other processes can each write their own rows
    with `write_image_rows`: the pixels go from the worker straight to the file, never through
    the parent. RAM stays at one chunk per worker whatever the dataset size.
    """

    path: Path
    header_len: int
    count: int
    row_shape: tuple[int, int, int]

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.row_shape))


def _npy_header(fh, count: int, row_shape: tuple[int, ...]) -> int:
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
              "shape": (count, *row_shape)}
    np.lib.format.write_array_header_1_0(fh, header)
    return fh.tell()


def create_images_file(prepared_dir: Path, split: str, count: int, size: int) -> ImagesFile:
    """An images.npy of count×size×size×3 uint8 rows, all zero until written (a sparse file)."""
    _check_split(split)
    path = Path(prepared_dir) / split / IMAGES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    row_shape = (size, size, 3)
    with open(path, "wb") as fh:
        header_len = _npy_header(fh, count, row_shape)
        fh.truncate(header_len + count * size * size * 3)
    return ImagesFile(path, header_len, count, row_shape)


def write_image_rows(images: ImagesFile, start: int, block: np.ndarray) -> None:
    """Write uint8 rows start..start+len(block) of `images`; safe from several processes at once."""
    if block.dtype != np.uint8 or block.shape[1:] != images.row_shape or start + len(block) > images.count:
        raise ValueError(f"{images.path}: cannot write {block.dtype} {block.shape} at row {start} of "
                         f"{images.count}×{images.row_shape}")
    fd = os.open(images.path, os.O_WRONLY)
    try:
        data = memoryview(np.ascontiguousarray(block)).cast("B")
        offset = images.header_len + start * images.row_bytes
        while data:  # pwrite may write less than asked
            written = os.pwrite(fd, data, offset)
            data, offset = data[written:], offset + written
    finally:
        os.close(fd)


def finish_images_file(images: ImagesFile, keep: np.ndarray | None = None) -> int:
    """Flush images.npy to disk; with `keep` (bool per row) drop the other rows. Returns the row count.

    The header fixes the row count, so dropping rows (images skipped as corrupt) writes a new file
    with the kept rows, streamed across run by run, and swaps it in.
    """
    if keep is None or keep.all():
        with open(images.path, "rb+") as fh:
            os.fsync(fh.fileno())
        return images.count
    kept = int(keep.sum())
    short = images.path.with_name(images.path.name + ".short")
    with open(short, "wb") as out, open(images.path, "rb") as src:
        _npy_header(out, kept, images.row_shape)
        # Runs of consecutive kept rows: [starts[i], ends[i]).
        edges = np.flatnonzero(np.diff(np.concatenate([[0], keep.astype(np.int8), [0]])))
        for run_start, run_end in zip(edges[0::2], edges[1::2]):
            src.seek(images.header_len + int(run_start) * images.row_bytes)
            remaining = int(run_end - run_start) * images.row_bytes
            while remaining:
                data = src.read(min(remaining, 1 << 24))
                out.write(data)
                remaining -= len(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(short, images.path)
    return kept


def write_sources(prepared_dir: Path, split: str, sources: list[str]) -> None:
    """<split>/sources.json: each row's source, in row order."""
    _check_split(split)
    atomic.write_json(Path(prepared_dir) / split / SOURCES_FILE, list(sources))


def load_sources(prepared_dir: str | Path, split: str) -> list[str] | None:
    """Each row's source (`SOURCES_FILE`), or None for data prepared before sources were recorded;
    PreparedDataError when the file does not match the split's labels."""
    _check_split(split)
    path = Path(prepared_dir) / split / SOURCES_FILE
    if not path.is_file():
        return None
    sources = _load_json(path)
    count = len(np.load(Path(prepared_dir) / split / LABELS_FILE, allow_pickle=False))
    if not isinstance(sources, list) or len(sources) != count:
        raise PreparedDataError(f"{path}: expected a list of {count} sources, one per image; run preprocess again")
    return sources


def write_labels(prepared_dir: Path, split: str, labels: np.ndarray) -> None:
    _check_split(split)
    path = Path(prepared_dir) / split / LABELS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.ascontiguousarray(labels, dtype=np.int64), allow_pickle=False)


def write_classes(prepared_dir: Path, *, dataset: str, generated: bool, classes: list[tuple[str, str]],
                  groups: list[str] | None = None, class_groups: list[int] | None = None) -> None:
    """classes: (id, human-readable name) pairs in index order. A dataset whose classes form groups
    (CIFAR-100's superclasses) also gives the group names and each class's group index: classes.json
    then holds "groups" [{"index", "name"}] and a "group" index in every class entry."""
    entries = [{"index": i, "id": cid, "name": name} for i, (cid, name) in enumerate(classes)]
    content: dict = {"dataset": dataset, "generated": generated, "classes": entries}
    if groups is not None:
        for entry, group in zip(entries, class_groups):
            entry["group"] = int(group)
        content["groups"] = [{"index": i, "name": name} for i, name in enumerate(groups)]
    atomic.write_json(Path(prepared_dir) / CLASSES_FILE, content)


def class_balance(per_class: list[int]) -> dict:
    """stats.json's `class_balance` of a split: smallest and largest class, their ratio, and whether
    it passes IMBALANCE_RATIO (an empty class counts as infinitely imbalanced)."""
    smallest, largest = min(per_class), max(per_class)
    ratio = largest / smallest if smallest else float("inf")
    return {"min": int(smallest), "max": int(largest), "ratio": round(ratio, 3) if smallest else None,
            "imbalanced": bool(ratio >= IMBALANCE_RATIO)}


def write_stats(prepared_dir: Path, stats: dict) -> None:
    atomic.write_json(Path(prepared_dir) / STATS_FILE, stats)


class ChannelMoments:
    """Per-channel mean and std of uint8 RGB images on the 0-1 scale, from exact 256-bin histograms.

    Histograms add up exactly, so decode workers can each histogram their own chunk and the
    result does not depend on chunking or order (and costs one bincount per channel).
    """

    def __init__(self) -> None:
        self.histogram = np.zeros((3, 256), dtype=np.int64)

    @staticmethod
    def histogram_of(block: np.ndarray) -> np.ndarray:
        """(3, 256) counts of each value per channel of a uint8 …×3 array."""
        pixels = np.ascontiguousarray(block).reshape(-1, 1, 3)
        histogram = np.zeros((3, 256), dtype=np.int64)
        # OpenCV's calcHist counts in one C pass per channel, far faster than np.bincount here; it
        # counts in float32, exact below 2**24, so feed it at most 2**22 pixels at a time.
        step = 1 << 22
        for start in range(0, len(pixels), step):
            piece = pixels[start : start + step]
            for c in range(3):
                histogram[c] += cv2.calcHist([piece], [c], None, [256], [0, 256]).ravel().astype(np.int64)
        return histogram

    def update(self, block: np.ndarray) -> None:
        self.histogram += self.histogram_of(block)

    def add_histogram(self, histogram: np.ndarray) -> None:
        self.histogram += histogram

    def mean_std(self) -> tuple[list[float], list[float]]:
        count = self.histogram.sum(axis=1)
        if not count.all():
            return [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]
        values = np.arange(256, dtype=np.float64)
        mean = (self.histogram @ values) / count
        var = np.maximum((self.histogram @ values**2) / count - mean**2, 0.0)
        return [round(float(m) / 255.0, 6) for m in mean], [round(float(s) / 255.0, 6) for s in np.sqrt(var)]
