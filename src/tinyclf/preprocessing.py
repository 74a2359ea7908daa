"""Preprocess: turn the official archive into the prepared arrays (docs/architecture.md).

    prepare(archive, out_dir, dataset=..., image_size=..., workers=..., on_corrupt=...)

Tiny ImageNet members are read straight out of the zip (never extracted) and decoded with OpenCV
in a pool of processes, each with its own handle on the zip, over chunks of member names; each
worker writes its decoded rows straight into images.npy (created at full size) and sends back only
counts and a pixel histogram, so memory stays about one chunk per worker whatever the dataset size
and the pixels never pass through the parent. CIFAR-10
batches are already pixel arrays and are copied (and resized if asked) in this process.

Everything is written into a temp directory that replaces `out_dir` only when all of it succeeded
(`tinyclf.arrays.prepared_output`).
"""

from __future__ import annotations

import collections
import multiprocessing
import os
import sys
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from tinyclf import arrays
from tinyclf.errors import TinyclfError
from tinyclf.images import (MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS, OPENCV_PIXEL_LIMIT_VARIABLE, decode_image,
                            resize_square)
from tinyclf.params import NATIVE_IMAGE_SIZE, OFFICIAL, archive_filename, prepared_image_size


class PrepareError(TinyclfError):
    """An archive or member that cannot be prepared; the message (one line) names it."""


# --------------------------------------------------------------------- parallel zip decoding

_worker_zips: dict[str, zipfile.ZipFile] = {}


def _worker_init(archive: str) -> None:
    # One OpenCV thread per process: the pool already uses every core.
    cv2.setNumThreads(1)
    try:
        _zip_handle(archive)  # open the zip now, while the parent is still reading the index
    except Exception:  # noqa: BLE001 - an initializer that raises makes Pool respawn it forever;
        pass  # the first chunk then reports the problem


def _zip_handle(archive: str) -> zipfile.ZipFile:
    # Each worker opens the zip once and keeps it for all its chunks (opening reads the whole
    # central directory: ~30k entries for the real archive).
    zf = _worker_zips.get(archive)
    if zf is None:
        zf = _worker_zips[archive] = zipfile.ZipFile(archive)
    return zf


@dataclass
class _Chunk:
    """What a worker sends back: everything but the pixels, which it wrote to images.npy itself."""

    start: int
    count: int  # members in the chunk
    failed: list[tuple[int, str, str]]  # (offset in chunk, member, reason); their rows stay zero
    conversions: collections.Counter
    resized: int
    histogram: np.ndarray  # (3, 256) pixel-value counts of the decoded rows, for mean/std


def _decode_chunk(task: tuple[str, arrays.ImagesFile, int, list[str], int | None]) -> _Chunk:
    archive, images, start, members, native = task
    size = images.row_shape[0]
    zf = _zip_handle(archive)
    block = np.zeros((len(members), *images.row_shape), dtype=np.uint8)
    failed, conversions, resized = [], collections.Counter(), 0
    for i, member in enumerate(members):
        try:
            data = _read_member(zf, member)
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:  # bad CRC, broken deflate
            failed.append((i, member, f"cannot be read from the zip ({exc})"))
            continue
        except ValueError as exc:
            failed.append((i, member, f"is refused: {exc}"))
            continue
        try:
            _, conversion, was_resized = decode_image(data, size, out=block[i], native=native)
        except ValueError as exc:
            failed.append((i, member, f"cannot be decoded: {exc}"))
            continue
        if conversion:
            conversions[conversion] += 1
        resized += was_resized
    arrays.write_image_rows(images, start, block)
    decoded = np.delete(block, [i for i, _, _ in failed], axis=0) if failed else block
    return _Chunk(start, len(members), failed, conversions, resized, arrays.ChannelMoments.histogram_of(decoded))


def _read_member(zf: zipfile.ZipFile, member: str) -> bytes:
    """The member's bytes; ValueError, before reading, when it declares more than MAX_IMAGE_BYTES.

    zipfile stops at the declared size (and checks the CRC), so the check bounds what a member can
    make this process hold, however well it compresses."""
    declared = zf.getinfo(member).file_size
    if declared > MAX_IMAGE_BYTES:
        raise ValueError(f"it declares {declared:,} bytes uncompressed, over the limit of {MAX_IMAGE_BYTES:,} "
                         "(tinyclf.images.MAX_IMAGE_BYTES)")
    return zf.read(member)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class _ChunkDecoder:
    """Decodes lists of zip members in chunks, in a pool of `workers` processes (or in this one).

    One pool serves every split, so the workers start once. Leaving the `with` block terminates
    them, also when the caller stops early on a corrupt member.
    """

    def __init__(self, archive: Path, workers: int, native: int | None):
        self.archive, self.workers, self.native, self.pool = str(archive), workers, native, None

    def __enter__(self) -> "_ChunkDecoder":
        if self.workers > 1:
            # OpenCV's own pixel limit in the workers too, for any decode the header checks missed.
            os.environ.setdefault(OPENCV_PIXEL_LIMIT_VARIABLE, str(MAX_IMAGE_PIXELS))
            # spawn, not fork: the caller may hold threads (torch, tqdm's monitor) that a fork
            # would copy in a locked state. Workers import only this module, numpy and OpenCV.
            self.pool = multiprocessing.get_context("spawn").Pool(
                self.workers, initializer=_worker_init, initargs=(self.archive,)
            )
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
        zf = _worker_zips.pop(self.archive, None)
        if zf is not None:
            zf.close()

    def chunks(self, members: list[str], images: arrays.ImagesFile):
        """Decode `members` into the rows of `images` with the same index; yield each chunk's report."""
        chunk_size = max(16, min(512, -(-len(members) // (self.workers * 8))))
        tasks = [(self.archive, images, s, members[s : s + chunk_size], self.native)
                 for s in range(0, len(members), chunk_size)]
        if self.pool is None or len(tasks) <= 1:
            return map(_decode_chunk, tasks)
        return self.pool.imap(_decode_chunk, tasks)


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


def _split_stats(labels: np.ndarray, num_classes: int, conversions, resized: int, skipped: list[str]) -> dict:
    return {
        "count": int(len(labels)),
        "per_class": np.bincount(labels, minlength=num_classes).tolist(),
        "converted": {kind: int(conversions.get(kind, 0)) for kind in arrays.CONVERTED_KINDS},
        "resized": int(resized),
        "skipped": list(skipped),
    }


def _prepare_tiny_imagenet(archive: Path, tmp: Path, size: int, workers: int, on_corrupt: str, progress: bool):
    from tinyclf.datasets import tiny_imagenet

    moments = arrays.ChannelMoments()
    splits = {}
    tiny_imagenet.ensure_zip(archive)  # a file that is not a zip fails here, before any worker starts
    # Every member of the published archive (and of a generated one) has the native size: another
    # size means it is not that archive, and checking it from the header bounds memory.
    native = NATIVE_IMAGE_SIZE["tiny-imagenet"]
    with _ChunkDecoder(archive, workers, native) as decoder:  # workers start up while the index is read
        index = tiny_imagenet.read_index(archive)
        for split in arrays.SPLITS:
            splits[split] = _decode_split(archive, tmp, split, index, size, decoder, on_corrupt, moments, progress)
    return index.classes, splits, moments


def _decode_split(archive: Path, tmp: Path, split: str, index, size: int, decoder: _ChunkDecoder, on_corrupt: str,
                  moments: arrays.ChannelMoments, progress: bool) -> dict:
    """Decode one split's members into tmp/<split>/ and return its stats.json entry."""
    members, labels = index.members[split], np.asarray(index.labels[split], dtype=np.int64)
    images = arrays.create_images_file(tmp, split, len(members), size)
    keep = np.ones(len(members), dtype=bool)
    conversions, resized, skipped = collections.Counter(), 0, []
    with tqdm(total=len(members), desc=f"preprocess {split}", unit="img", disable=not progress, file=sys.stderr) as bar:
        for chunk in decoder.chunks(members, images):
            for offset, member, reason in chunk.failed:
                if on_corrupt != "skip":
                    raise PrepareError(f"{archive}: member {member} {reason} (set preprocess.on_corrupt: skip to leave it out)")
                tqdm.write(f"skipping {member}: {reason}", file=sys.stderr)
                skipped.append(member)
                keep[chunk.start + offset] = False
            if split == "train":
                moments.add_histogram(chunk.histogram)  # computed by the worker
            conversions.update(chunk.conversions)
            resized += chunk.resized
            bar.update(chunk.count)
    if not keep.any():
        raise PrepareError(f"{archive}: no {split} image could be decoded")
    arrays.finish_images_file(images, keep)  # drops the rows of skipped members
    arrays.write_labels(tmp, split, labels[keep])
    return _split_stats(labels[keep], len(index.classes), conversions, resized, skipped)


def _prepare_cifar10(archive: Path, tmp: Path, size: int, progress: bool):
    from tinyclf.datasets import cifar10

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
        splits[split] = _split_stats(labels, len(data.classes), {}, resized, [])
    return data.classes, splits, moments


def resolve_workers(workers: int) -> int:
    """preprocess.workers: 0 means every core this process may use."""
    return workers if workers > 0 else available_cores()


def find_archive(raw_dir: str | Path, dataset: str) -> Path:
    """The archive of `dataset` in raw_dir (the download stage's output); PrepareError if it is
    missing or belongs to another dataset."""
    raw_dir = Path(raw_dir)
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


def prepare(
    archive: str | Path,
    out_dir: str | Path,
    *,
    dataset: str,
    image_size: int = 0,
    workers: int = 0,
    on_corrupt: str = "fail",
    progress: bool = True,
) -> PrepareSummary:
    """Read `archive` (the official format of `dataset`) and write the prepared arrays to `out_dir`.

    image_size 0 keeps the native size (64 / 32). `out_dir` is replaced only if everything
    succeeds. Raises PrepareError naming the archive (and member) on bad input.
    With workers != 1 the decoding runs in a "spawn" process pool, so a script that calls this
    must do so under `if __name__ == "__main__":` (the pool re-imports the main module).
    """
    from tinyclf.datasets.generated import is_generated

    if dataset not in NATIVE_IMAGE_SIZE:
        raise PrepareError(f"unknown dataset {dataset!r}; expected one of {', '.join(NATIVE_IMAGE_SIZE)}")
    if on_corrupt not in ("fail", "skip"):
        raise PrepareError(f"on_corrupt must be fail or skip, got {on_corrupt!r}")
    archive = Path(archive)
    if not archive.is_file():
        raise PrepareError(f"{archive}: no such file")
    size = prepared_image_size(dataset, image_size)
    started = time.perf_counter()
    with arrays.prepared_output(out_dir) as tmp:
        if dataset == "tiny-imagenet":
            classes, splits, moments = _prepare_tiny_imagenet(archive, tmp, size, resolve_workers(workers), on_corrupt, progress)
        else:
            classes, splits, moments = _prepare_cifar10(archive, tmp, size, progress)
        try:
            generated = bool(is_generated(archive))
        except Exception as exc:  # the readers above accepted the archive; this should not fail
            raise PrepareError(f"{archive}: cannot tell whether it is generated ({exc})") from None
        mean, std = moments.mean_std()
        stats = {
            "dataset": dataset,
            "generated": generated,
            "image_size": [size, size],
            "mean": mean,
            "std": std,
            "splits": splits,
        }
        arrays.write_classes(tmp, dataset=dataset, generated=generated, classes=classes)
        arrays.write_stats(tmp, stats)
    return PrepareSummary(stats=stats, seconds=time.perf_counter() - started)
