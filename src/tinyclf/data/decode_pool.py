"""Decode archive members into the rows of an images.npy, in a pool of processes.

Each worker holds its own handle on the archive (`tinyclf.data.archive_members`), decodes a chunk of
members with OpenCV, writes the rows straight into images.npy (created at full size) and sends
back only counts, failures and a pixel histogram: memory stays about one chunk per worker
whatever the dataset size, and the pixels never pass through the parent.

    with DecodePool(archive, workers, DecodeRule(native=64)) as pool:
        result = decode_split(pool, "train", members, labels, SplitOutput(out_dir, 64, ...), moments)
"""

from __future__ import annotations

import collections
import hashlib
import multiprocessing
import os
import sys
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from tqdm import tqdm

from tinyclf.data import arrays
from tinyclf.data import images as image_files
from tinyclf.data.archive_members import open_archive
from tinyclf.data.formats.contract import DecodeRule
from tinyclf.data.images import MAX_IMAGE_PIXELS, OPENCV_PIXEL_LIMIT_VARIABLE, decode_image

_worker_archives: dict[str, object] = {}


@dataclass
class Chunk:
    """What a worker sends back: everything but the pixels, which it wrote to images.npy itself."""

    start: int
    count: int  # members in the chunk
    failed: list[tuple[int, str, str]]  # (offset in chunk, member, reason); their rows stay zero
    conversions: collections.Counter
    resized: int
    histogram: np.ndarray  # (3, 256) pixel-value counts of the decoded rows, for mean/std
    rotated: int = 0  # EXIF orientations applied (photos)
    digests: list[bytes] = field(default_factory=list)  # photos: a content hash per member, in order


def _worker_init(archive: str) -> None:
    # One OpenCV thread per process: the pool already uses every core.
    cv2.setNumThreads(1)
    try:
        _archive_handle(archive)  # open it now, while the parent is still reading the index
    except Exception:  # noqa: BLE001 - an initializer that raises makes Pool respawn it forever;
        pass  # the first chunk then reports the problem


def _archive_handle(archive: str):
    # Each worker opens the archive once and keeps it for all its chunks (opening a zip reads the
    # whole central directory: ~30k entries for the real Tiny ImageNet archive).
    handle = _worker_archives.get(archive)
    if handle is None:
        handle = _worker_archives[archive] = open_archive(archive)
    return handle


def _decode_one(data: bytes, row: np.ndarray, rule: DecodeRule) -> tuple[str | None, bool, bool]:
    """Decode into `row`; (conversion, resized, rotated). ValueError when it cannot be decoded."""
    size = row.shape[0]
    if rule.fit is None:
        _, conversion, resized = decode_image(data, size, out=row, native=rule.native)
        return conversion, resized, False
    decoded = image_files.decode_photo(data, size, fit=rule.fit, out=row)
    return decoded.conversion, decoded.resized, decoded.rotated


def decode_chunk(task: tuple[str, arrays.ImagesFile, int, list[tuple[str, object]], DecodeRule]) -> Chunk:
    archive, images, start, members, rule = task
    handle = _archive_handle(archive)
    block = np.zeros((len(members), *images.row_shape), dtype=np.uint8)
    chunk = Chunk(start, len(members), [], collections.Counter(), 0, np.zeros((3, 256), np.int64))
    for i, (name, key) in enumerate(members):
        try:
            data = handle.read(key)
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:  # bad CRC, broken deflate
            chunk.failed.append((i, name, f"cannot be read from the {handle.kind} ({exc})"))
            continue
        except ValueError as exc:
            chunk.failed.append((i, name, f"is refused: {exc}"))
            continue
        try:
            conversion, resized, rotated = _decode_one(data, block[i], rule)
        except ValueError as exc:
            chunk.failed.append((i, name, f"cannot be decoded: {exc}"))
            continue
        if rule.fit is not None:  # one per decoded member, in order: aligned with the kept rows
            chunk.digests.append(hashlib.blake2b(data, digest_size=16).digest())
        if conversion:
            chunk.conversions[conversion] += 1
        chunk.resized += resized
        chunk.rotated += rotated
    arrays.write_image_rows(images, start, block)
    decoded = np.delete(block, [i for i, _, _ in chunk.failed], axis=0) if chunk.failed else block
    chunk.histogram = arrays.ChannelMoments.histogram_of(decoded)
    return chunk


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class DecodePool:
    """Decodes lists of archive members in chunks, in a pool of `workers` processes (or in this one).

    One pool serves every split, so the workers start once. Leaving the `with` block terminates
    them, also when the caller stops early on a corrupt member.
    """

    def __init__(self, archive, workers: int, rule: DecodeRule):
        self.archive, self.workers, self.rule, self.pool = str(archive), workers, rule, None

    def __enter__(self) -> "DecodePool":
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
        handle = _worker_archives.pop(self.archive, None)
        if handle is not None:
            handle.close()

    def chunks(self, members: list[tuple[str, object]], images: arrays.ImagesFile):
        """Decode (name, key) members into the rows of `images` with the same index; yield each chunk's report."""
        chunk_size = max(16, min(512, -(-len(members) // (self.workers * 8))))
        tasks = [(self.archive, images, s, members[s : s + chunk_size], self.rule)
                 for s in range(0, len(members), chunk_size)]
        if self.pool is None or len(tasks) <= 1:
            return map(decode_chunk, tasks)
        return self.pool.imap(decode_chunk, tasks)


@dataclass
class SplitResult:
    """One decoded split: its stats.json entry and each kept member's content hash (photos)."""

    stats: dict
    kept_names: list[str]
    digests: list[bytes]


@dataclass(frozen=True)
class SplitOutput:
    """Where and how one preprocess run writes its splits: the same for every split."""

    out_dir: Path  # gets <split>/images.npy and <split>/labels.npy
    size: int  # side of the prepared images
    num_classes: int
    on_corrupt: str  # fail | skip
    progress: bool
    fail: Callable[[str | None, str], Exception]  # (member, reason) -> the error under on_corrupt: fail


def decode_split(pool: DecodePool, split: str, members: list[tuple[str, object]], labels: np.ndarray,
                 output: SplitOutput, moments: arrays.ChannelMoments | None = None) -> SplitResult:
    """Decode one split's members into output.out_dir/<split>/ (images.npy, labels.npy) and return its
    stats; `moments` (the train split's) gathers the pixel histogram."""
    images = arrays.create_images_file(output.out_dir, split, len(members), output.size)
    keep = np.ones(len(members), dtype=bool)
    conversions, resized, rotated, skipped, digests = collections.Counter(), 0, 0, [], []
    with tqdm(total=len(members), desc=f"preprocess {split}", unit="img", disable=not output.progress,
              file=sys.stderr) as bar:
        for chunk in pool.chunks(members, images):
            for offset, member, reason in chunk.failed:
                if output.on_corrupt != "skip":
                    raise output.fail(member, reason)
                tqdm.write(f"skipping {member}: {reason}", file=sys.stderr)
                skipped.append(member)
                keep[chunk.start + offset] = False
            if moments is not None:
                moments.add_histogram(chunk.histogram)  # computed by the worker
            conversions.update(chunk.conversions)
            resized += chunk.resized
            rotated += chunk.rotated
            digests.extend(chunk.digests)
            bar.update(chunk.count)
    if not keep.any():
        raise output.fail(None, f"no {split} image could be decoded")
    arrays.finish_images_file(images, keep)  # drops the rows of skipped members
    arrays.write_labels(output.out_dir, split, labels[keep])
    stats = split_stats(labels[keep], output.num_classes, conversions, resized, skipped)
    if pool.rule.fit is not None:
        stats["rotated"] = int(rotated)
    kept = [name for (name, _), k in zip(members, keep) if k]
    return SplitResult(stats, kept, digests)


def split_stats(labels: np.ndarray, num_classes: int, conversions, resized: int, skipped: list[str]) -> dict:
    return {
        "count": int(len(labels)),
        "per_class": np.bincount(labels, minlength=num_classes).tolist(),
        "converted": {kind: int(conversions.get(kind, 0)) for kind in arrays.CONVERTED_KINDS},
        "resized": int(resized),
        "skipped": list(skipped),
    }
