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


class PrepareError(TinyclfError):
    """An archive or member that cannot be prepared; the message (one line) names it."""


# ------------------------------------------------------------------------------ image decoding

_JPEG_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_PALETTE = 3


def _jpeg_components(data: bytes) -> int | None:
    """Number of colour components in a JPEG's frame header (4 = CMYK/YCCK), None if not found.

    OpenCV converts CMYK JPEGs to BGR silently, so this is how we see (and count) them.
    """
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker in _JPEG_SOF_MARKERS:
            return data[pos + 9] if pos + 9 < len(data) else None
        if marker == 0xDA:  # start of scan: no frame header before the image data
            return None
        pos += 2 + length
    return None


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    # INTER_AREA averages source pixels when shrinking (no aliasing); bilinear when enlarging.
    interpolation = cv2.INTER_AREA if size < h or size < w else cv2.INTER_LINEAR
    return cv2.resize(img, (size, size), interpolation=interpolation)


def decode_image(data: bytes, size: int, out: np.ndarray | None = None) -> tuple[np.ndarray, str | None, bool]:
    """Decode image bytes to RGB uint8 size×size×3 (written into `out` when given, saving a copy).

    Returns (image, conversion, resized): conversion is None for a plain 8-bit colour image, else
    one of "grayscale", "cmyk", "rgba", "other" (palette, grey+alpha, 16-bit). Raises ValueError
    with the reason when the bytes are not a decodable image.
    """
    img = _decode_unchanged(data)
    img, conversion = _to_rgb8(img, data, out if img.shape[:2] == (size, size) else None)
    resized = img.shape[0] != size or img.shape[1] != size
    if resized:
        img = _resize(img, size)
    if out is not None and img is not out:
        out[...] = img
    return img, conversion, resized


def _decode_unchanged(data: bytes) -> np.ndarray:
    """OpenCV's decode with the file's own depth and channels; ValueError naming what is wrong."""
    if not data:
        raise ValueError("empty member")
    # libjpeg decodes a truncated JPEG into a partly grey image with only a warning; a file that
    # lost its end-of-image marker is corrupt, so say so rather than train on it. The marker must
    # follow the last start-of-scan (byte stuffing keeps both out of the compressed data); bytes
    # after it, which some writers append, are allowed.
    if _is_jpeg(data) and data.find(b"\xff\xd9", max(data.rfind(b"\xff\xda"), 2)) < 0:
        raise ValueError("truncated JPEG (no end-of-image marker)")
    try:
        img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise ValueError(f"OpenCV cannot decode it ({str(exc).strip().splitlines()[-1]})") from None
    if img is None or img.size == 0:
        raise ValueError("not a decodable image")
    return img


def _is_jpeg(data: bytes) -> bool:
    return data[:2] == b"\xff\xd8"


def _to_rgb8(img: np.ndarray, data: bytes, out: np.ndarray | None) -> tuple[np.ndarray, str | None]:
    """8-bit RGB from any depth and channel count OpenCV returns, and which conversion it took
    (`data`, the file's bytes, tells CMYK JPEGs and palette PNGs apart). Writes into `out` if given."""
    conversion = None
    if img.dtype == np.uint16:
        img = ((img.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
        conversion = "other"
    elif img.dtype != np.uint8:
        raise ValueError(f"unsupported pixel type {img.dtype}")
    channels = 1 if img.ndim == 2 else img.shape[2]
    if channels == 1:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB), conversion or "grayscale"
    if channels == 2:  # grey + alpha (PNG): keep the grey, drop the alpha
        return cv2.cvtColor(np.ascontiguousarray(img[:, :, 0]), cv2.COLOR_GRAY2RGB), "other"
    if channels == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB), conversion or "rgba"  # alpha dropped, as PIL's convert("RGB")
    if channels != 3:
        raise ValueError(f"unsupported channel count {channels}")
    # The common case goes straight into the output block when there is one.
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB, dst=out) if out is not None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if _is_jpeg(data) and _jpeg_components(data) == 4:
        conversion = conversion or "cmyk"  # OpenCV already turned the inks into BGR
    elif data[:8] == _PNG_SIGNATURE and len(data) > 25 and data[25] == _PNG_PALETTE:
        conversion = conversion or "other"  # palette PNG, expanded by OpenCV
    return img, conversion


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


def _decode_chunk(task: tuple[str, arrays.ImagesFile, int, list[str]]) -> _Chunk:
    archive, images, start, members = task
    size = images.row_shape[0]
    zf = _zip_handle(archive)
    block = np.zeros((len(members), *images.row_shape), dtype=np.uint8)
    failed, conversions, resized = [], collections.Counter(), 0
    for i, member in enumerate(members):
        try:
            data = zf.read(member)
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:  # bad CRC, broken deflate
            failed.append((i, member, f"cannot be read from the zip ({exc})"))
            continue
        try:
            _, conversion, was_resized = decode_image(data, size, out=block[i])
        except ValueError as exc:
            failed.append((i, member, f"cannot be decoded: {exc}"))
            continue
        if conversion:
            conversions[conversion] += 1
        resized += was_resized
    arrays.write_image_rows(images, start, block)
    decoded = np.delete(block, [i for i, _, _ in failed], axis=0) if failed else block
    return _Chunk(start, len(members), failed, conversions, resized, arrays.ChannelMoments.histogram_of(decoded))


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

    def __init__(self, archive: Path, workers: int):
        self.archive, self.workers, self.pool = str(archive), workers, None

    def __enter__(self) -> "_ChunkDecoder":
        if self.workers > 1:
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
        tasks = [(self.archive, images, s, members[s : s + chunk_size]) for s in range(0, len(members), chunk_size)]
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
    with _ChunkDecoder(archive, workers) as decoder:  # workers start up while the index is read
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
                        block = np.stack([_resize(np.ascontiguousarray(img), size) for img in part])
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
    from tinyclf.params import OFFICIAL, archive_filename

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
    from tinyclf.params import NATIVE_IMAGE_SIZE, prepared_image_size

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
