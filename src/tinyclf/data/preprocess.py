"""Preprocess: turn the official archive into the prepared arrays (docs/architecture.md).

    prepare(archive, out_dir, dataset=..., image_size=..., workers=..., on_corrupt=...)

Tiny ImageNet members are read straight out of the zip (never extracted) and decoded with OpenCV
in a pool of processes, each with its own handle on the zip, over chunks of member names; each
worker writes its decoded rows straight into images.npy (created at full size) and sends back only
counts and a pixel histogram, so memory stays about one chunk per worker whatever the dataset size
and the pixels never pass through the parent. CIFAR-10
batches are already pixel arrays and are copied (and resized if asked) in this process.

Everything is written into a temp directory that replaces `out_dir` only when all of it succeeded
(`tinyclf.data.arrays.prepared_output`).
"""

from __future__ import annotations

import collections
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tinyclf.data import arrays
from tinyclf.data.decode_pool import DecodePool, DecodeRule, available_cores, decode_split, split_stats
from tinyclf.data.images import resize_square
from tinyclf.errors import TinyclfError
from tinyclf.params import (DATASETS, FOLDER_ARCHIVE_STEM, NATIVE_IMAGE_SIZE, OFFICIAL, archive_filename,
                            prepared_image_size)


class PrepareError(TinyclfError):
    """An archive or member that cannot be prepared; the message (one line) names it."""


# ------------------------------------------------------------------------------ orchestration


@dataclass(frozen=True)
class PrepareSummary:
    stats: dict
    seconds: float

    @property
    def images(self) -> int:
        return sum(s["count"] for s in self.stats["splits"].values())

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("inf")

    def describe(self) -> str:
        """A short human summary: counts, conversions, skipped, time."""
        s = self.stats
        h, w = s["image_size"]
        counts = ", ".join(f"{name} {split['count']}" for name, split in s["splits"].items())
        converted = collections.Counter()
        for split in s["splits"].values():
            converted.update(split["converted"])
        conv = ", ".join(f"{n} {k}" for k, n in converted.items() if n) or "none"
        skipped = sum(len(split["skipped"]) for split in s["splits"].values())
        resized = sum(split["resized"] for split in s["splits"].values())
        kind = "GENERATED" if s["generated"] else "real"
        return (
            f"{s['dataset']} ({kind} data): {counts} images of {h}x{w}; converted to RGB: {conv}; "
            f"resized {resized}; skipped {skipped}; {self.seconds:.1f} s ({self.images_per_s:,.0f} images/s)"
        )


def _prepare_tiny_imagenet(archive: Path, tmp: Path, size: int, workers: int, on_corrupt: str, progress: bool):
    from tinyclf.data.formats import tiny_imagenet

    moments = arrays.ChannelMoments()
    splits = {}
    tiny_imagenet.ensure_zip(archive)  # a file that is not a zip fails here, before any worker starts
    # Every member of the published archive (and of a generated one) has the native size: another
    # size means it is not that archive, and checking it from the header bounds memory.
    rule = DecodeRule(native=NATIVE_IMAGE_SIZE["tiny-imagenet"])
    with DecodePool(archive, workers, rule) as pool:  # workers start up while the index is read
        index = tiny_imagenet.read_index(archive)
        for split in arrays.SPLITS:
            members = [(name, name) for name in index.members[split]]
            splits[split] = decode_split(
                pool, split, members, np.asarray(index.labels[split], dtype=np.int64), out_dir=tmp, size=size,
                num_classes=len(index.classes), on_corrupt=on_corrupt,
                moments=moments if split == "train" else None, progress=progress,
                fail=lambda member, reason: _member_error(archive, member, reason)).stats
    return index.classes, splits, moments


def _member_error(archive: Path, member: str | None, reason: str) -> PrepareError:
    if member is None:
        return PrepareError(f"{archive}: {reason}")
    return PrepareError(f"{archive}: member {member} {reason} (set preprocess.on_corrupt: skip to leave it out)")


def _prepare_cifar10(archive: Path, tmp: Path, size: int, progress: bool):
    from tinyclf.data.formats import cifar10

    data = cifar10.read_archive(archive)
    moments = arrays.ChannelMoments()
    splits = {}
    for split in arrays.SPLITS:
        count = data.count(split)
        if count == 0:
            raise PrepareError(f"{archive}: the {split} batches hold no images")
        images = arrays.create_images_file(tmp, split, count, size)
        resized, row = 0, 0
        with tqdm(total=count, desc=f"preprocess {split}", unit="img", disable=not progress, file=sys.stderr) as bar:
            for _, batch, _ in data.batches[split]:
                for start in range(0, len(batch), 1024):  # slices keep RAM small at large image sizes
                    part = batch[start : start + 1024]
                    if size == cifar10.SIDE:
                        block = np.ascontiguousarray(part)  # the N×3×32×32 → N×32×32×3 transpose happens here
                    else:
                        block = np.stack([resize_square(np.ascontiguousarray(img), size) for img in part])
                        resized += len(part)
                    arrays.write_image_rows(images, row, block)
                    row += len(block)
                    if split == "train":
                        moments.update(block)
                    bar.update(len(part))
        arrays.finish_images_file(images)
        labels = np.concatenate([labels for _, _, labels in data.batches[split]])
        arrays.write_labels(tmp, split, labels)
        splits[split] = split_stats(labels, len(data.classes), {}, resized, [])
    return data.classes, splits, moments


def resolve_workers(workers: int) -> int:
    """preprocess.workers: 0 means every core this process may use."""
    return workers if workers > 0 else available_cores()


def find_archive(raw_dir: str | Path, dataset: str) -> Path:
    """The archive of `dataset` in raw_dir (the download stage's output); PrepareError if it is
    missing or belongs to another dataset."""
    raw_dir = Path(raw_dir)
    if dataset == "folder":
        return _find_folder_archive(raw_dir)
    expected = raw_dir / archive_filename(dataset)
    if expected.is_file():
        return expected
    if not raw_dir.is_dir():
        raise PrepareError(f"{raw_dir}: no such directory; run the download stage first (dvc repro download)")
    others = [name for name, info in OFFICIAL.items() if name != dataset and (raw_dir / info["filename"]).is_file()]
    if others:
        raise PrepareError(
            f"{raw_dir} holds the {others[0]} archive ({archive_filename(others[0])}) but data.dataset is {dataset}; "
            f"run the download stage again (dvc repro) or set data.dataset: {others[0]}"
        )
    raise PrepareError(f"{expected}: missing; run the download stage first (dvc repro download)")


def _is_generated(archive: Path, dataset: str) -> bool:
    """Whether the archive is one the generated source wrote (own images never are)."""
    from tinyclf.data.formats.generated import is_generated

    if dataset == "folder":
        return False
    try:
        return bool(is_generated(archive))
    except Exception as exc:  # the readers accepted the archive; this should not fail
        raise PrepareError(f"{archive}: cannot tell whether it is generated ({exc})") from None


def _find_folder_archive(raw_dir: Path) -> Path:
    found = [raw_dir / f"{FOLDER_ARCHIVE_STEM}{suffix}" for suffix in (".tar", ".zip")]
    found = [path for path in found if path.is_file()]
    if found:
        return found[0]
    if raw_dir.is_dir() and any((raw_dir / info["filename"]).is_file() for info in OFFICIAL.values()):
        raise PrepareError(f"{raw_dir} holds an official dataset archive but data.dataset is folder; "
                           "run the download stage again (dvc repro)")
    raise PrepareError(f"{raw_dir / FOLDER_ARCHIVE_STEM}.tar: missing; run the download stage first (dvc repro download)")


def prepare(
    archive: str | Path,
    out_dir: str | Path,
    *,
    dataset: str,
    image_size: int = 0,
    workers: int = 0,
    on_corrupt: str = "fail",
    progress: bool = True,
    resize: str = "center_crop",
    val_fraction: float = 0.2,
    split_seed: int = 0,
) -> PrepareSummary:
    """Read `archive` (the official format of `dataset`, or for "folder" a zip / tar of class
    folders) and write the prepared arrays to `out_dir`.

    image_size 0 keeps the native size (64 / 32; a folder dataset needs one). resize, val_fraction
    and split_seed apply to folder datasets (params.yaml, data.*). `out_dir` is replaced only if everything
    succeeds. Raises PrepareError naming the archive (and member) on bad input.
    With workers != 1 the decoding runs in a "spawn" process pool, so a script that calls this
    must do so under `if __name__ == "__main__":` (the pool re-imports the main module).
    """
    if dataset not in DATASETS:
        raise PrepareError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    if on_corrupt not in ("fail", "skip"):
        raise PrepareError(f"on_corrupt must be fail or skip, got {on_corrupt!r}")
    archive = Path(archive)
    if not archive.is_file():
        raise PrepareError(f"{archive}: no such file")
    try:
        size = prepared_image_size(dataset, image_size)
    except ValueError as exc:
        raise PrepareError(str(exc)) from None
    started = time.perf_counter()
    extra = {}
    with arrays.prepared_output(out_dir) as tmp:
        if dataset == "folder":
            from tinyclf.data.prepare_folder import prepare_folder

            classes, splits, moments, extra = prepare_folder(
                archive, tmp, size=size, fit=resize, val_fraction=val_fraction, split_seed=split_seed,
                workers=resolve_workers(workers), on_corrupt=on_corrupt, progress=progress)
        elif dataset == "tiny-imagenet":
            classes, splits, moments = _prepare_tiny_imagenet(archive, tmp, size, resolve_workers(workers), on_corrupt, progress)
        else:
            classes, splits, moments = _prepare_cifar10(archive, tmp, size, progress)
        generated = _is_generated(archive, dataset)
        mean, std = moments.mean_std()
        stats = {
            "dataset": dataset,
            "generated": generated,
            "image_size": [size, size],
            "mean": mean,
            "std": std,
            "splits": splits,
            **extra,
        }
        arrays.write_classes(tmp, dataset=dataset, generated=generated, classes=classes)
        arrays.write_stats(tmp, stats)
    return PrepareSummary(stats=stats, seconds=time.perf_counter() - started)
