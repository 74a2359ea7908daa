"""Preprocess: turn a dataset's archive into the prepared arrays (docs/architecture.md).

    prepare(archive, out_dir, "tiny-imagenet", PrepareOptions(image_size=64, workers=0))

The dataset's format module (`tinyclf.data.formats.registry.implementation`) reads the archive's
index, or its pixels; everything after that is the same for every format and happens here:

- Splits of archive members (Tiny ImageNet, your own images) are decoded with OpenCV in a pool of
  processes, each with its own handle on the archive, over chunks of members; each worker writes
  its decoded rows straight into images.npy (created at full size) and sends back only counts and
  a pixel histogram, so memory stays about one chunk per worker whatever the dataset size and the
  pixels never pass through the parent (`tinyclf.data.decode_pool`).
- Splits that are pixels already (CIFAR's batches) are copied, resized if asked, in this process.

Everything is written into a temp directory that replaces `out_dir` only when all of it succeeded
(`tinyclf.data.arrays.prepared_output`).
"""

from __future__ import annotations

import collections
import contextlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tinyclf.data import arrays
from tinyclf.data.corrections import apply_corrections, describe, read_corrections
from tinyclf.data.decode_pool import DecodePool, SplitOutput, SplitResult, available_cores, decode_split, split_stats
from tinyclf.data.formats import registry
from tinyclf.data.formats.contract import ArraySplit, DecodeRule, FormatData, PrepareOptions
from tinyclf.data.holdout import carve_val_from_train, pixel_duplicates
from tinyclf.data.images import resize_square
from tinyclf.errors import PrepareError


DUPLICATES_LISTED = 20  # pairs of pixel-identical images stats.json names before "and N more"


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


def options_from_params(params, progress: bool = True) -> PrepareOptions:
    """The preprocess stage's options from params.yaml (`data` and `preprocess`)."""
    d, p = params.data, params.preprocess
    return PrepareOptions(image_size=d.image_size, workers=p.workers, on_corrupt=p.on_corrupt, progress=progress,
                          resize=d.resize, val_fraction=d.val_fraction, test_fraction=d.test_fraction,
                          val_from_train=d.val_from_train, split_seed=d.split_seed, corrections=d.corrections)


def prepare(archive: str | Path, out_dir: str | Path, dataset: str,
            options: PrepareOptions = PrepareOptions()) -> PrepareSummary:
    """Read `archive` (in the format of `dataset`) and write the prepared arrays to `out_dir`.

    `out_dir` is replaced only if everything succeeds. Raises PrepareError naming the archive (and
    member) on bad input. With workers != 1 the decoding runs in a "spawn" process pool, so a script
    that calls this must do so under `if __name__ == "__main__":` (the pool re-imports the main module).
    """
    archive = Path(archive)
    fmt = _check_request(archive, dataset, options)
    corrections = read_corrections(options.corrections) if options.corrections else None
    try:
        size = registry.prepared_image_size(dataset, options.image_size)
    except ValueError as exc:
        raise PrepareError(str(exc)) from None
    started = time.perf_counter()
    impl = registry.implementation(dataset)
    rule = impl.decode_rule(options)
    with arrays.prepared_output(out_dir) as tmp, _decode_pool(archive, options, rule) as pool:
        data = impl.read(archive, options)  # while the decoding processes start up
        holdout = None
        if options.val_from_train > 0 and not fmt.own_images:
            data, holdout = carve_val_from_train(data, options.val_from_train, options.split_seed)
        # After the carve (its CIFAR draw ranks rows by position, which a drop would shift) and before
        # the first decode: a bad line fails before any work. Sources are the archive's either way.
        data, corrected = apply_corrections(data, corrections)
        output = SplitOutput(tmp, size, len(data.classes), options.on_corrupt, options.progress,
                             fail=lambda member, reason: _member_error(archive, data.member_prefix, member, reason))
        moments = arrays.ChannelMoments()
        results, sources = _write_splits(data, output, pool, moments)
        generated = is_generated(archive, fmt)
        mean, std = moments.mean_std()
        stats = {"dataset": dataset, "generated": generated, "image_size": [size, size], "mean": mean, "std": std,
                 "splits": {split: result.stats for split, result in results.items()},
                 **({"holdout": holdout} if holdout else {}),
                 **({"corrections": corrected} if corrected else {}),
                 **({} if fmt.own_images else _official_duplicates(tmp, sources, archive)),
                 **(data.finish(results) if data.finish else {})}
        arrays.write_classes(tmp, dataset=dataset, generated=generated, classes=data.classes,
                             groups=data.groups, class_groups=data.class_groups)
        arrays.write_stats(tmp, stats)
    if corrected:
        print(describe(corrected), file=sys.stderr)
    return PrepareSummary(stats=stats, seconds=time.perf_counter() - started)


def _check_request(archive: Path, dataset: str, options: PrepareOptions) -> registry.DatasetFormat:
    try:
        fmt = registry.get(dataset)
    except ValueError as exc:
        raise PrepareError(str(exc)) from None
    if options.on_corrupt not in ("fail", "skip"):
        raise PrepareError(f"on_corrupt must be fail or skip, got {options.on_corrupt!r}")
    if not archive.is_file():
        raise PrepareError(f"{archive}: no such file")
    return fmt


def resolve_workers(workers: int) -> int:
    """preprocess.workers: 0 means every core this process may use."""
    return workers if workers > 0 else available_cores()


def _member_error(archive: Path, prefix: str, member: str | None, reason: str) -> PrepareError:
    if member is None:
        return PrepareError(f"{archive}: {reason}")
    return PrepareError(f"{archive}: {prefix}{member} {reason} (set preprocess.on_corrupt: skip to leave it out)")


def _decode_pool(archive: Path, options: PrepareOptions, rule: DecodeRule | None):
    """The pool that decodes a format's members (one for every split, so its workers start once);
    nothing for a format whose splits are pixels already."""
    if rule is None:
        return contextlib.nullcontext()
    return DecodePool(archive, resolve_workers(options.workers), rule)


def _write_splits(data: FormatData, output: SplitOutput, pool: DecodePool | None,
                  moments: arrays.ChannelMoments) -> tuple[dict[str, SplitResult], dict[str, list[str]]]:
    """Each split's images.npy, labels.npy and sources.json; the train split's pixels go into
    `moments`. Returns each split's result and its rows' sources."""
    results, written = {}, {}
    for name in (s for s in arrays.ALL_SPLITS if s in data.splits):
        split, split_moments = data.splits[name], moments if name == "train" else None
        if isinstance(split, ArraySplit):
            results[name] = _copy_pixels(name, split, output, split_moments)
            sources = split.sources or [f"{name}#{row}" for row in range(split.count)]
        else:
            labels = np.asarray(split.labels, dtype=np.int64)
            results[name] = decode_split(pool, name, split.members, labels, output, split_moments)
            sources = results[name].kept_names  # the members decoded, in row order (skipped ones left out)
        arrays.write_sources(output.out_dir, name, sources)
        written[name] = sources
    return results, written


def _official_duplicates(prepared_dir: Path, sources: dict[str, list[str]], archive: Path) -> dict:
    """stats.json's `duplicates_across_splits` for an official dataset: images pixel-identical in two
    splits (own images compare file bytes instead, in their `folder` section); warned on stderr."""
    pairs = pixel_duplicates(prepared_dir, list(sources), sources)
    if pairs:
        shown = ", ".join(" = ".join(pair) for pair in pairs[:2])
        print(f"{archive.name}: {len(pairs)} image(s) are pixel-identical to images of an earlier split (held-out "
              f"accuracy reads high for them): {shown}{' …' if len(pairs) > 2 else ''}", file=sys.stderr)
    return {"duplicates_across_splits": {"count": len(pairs), "first": pairs[:DUPLICATES_LISTED]}}


def _copy_pixels(name: str, split: ArraySplit, output: SplitOutput,
                 moments: arrays.ChannelMoments | None) -> SplitResult:
    """A split that is pixels already (CIFAR): copied in slices, resized when image_size asks."""
    if split.count == 0:
        raise output.fail(None, f"the {name} batches hold no images")
    images = arrays.create_images_file(output.out_dir, name, split.count, output.size)
    resized, row = 0, 0
    with tqdm(total=split.count, desc=f"preprocess {name}", unit="img", disable=not output.progress,
              file=sys.stderr) as bar:
        for batch, _ in split.batches:
            for start in range(0, len(batch), 1024):  # slices keep RAM small at large image sizes
                part = batch[start : start + 1024]
                if part.shape[1] == output.size:
                    block = np.ascontiguousarray(part)  # the N×3×32×32 → N×32×32×3 transpose happens here
                else:
                    block = np.stack([resize_square(np.ascontiguousarray(img), output.size) for img in part])
                    resized += len(part)
                arrays.write_image_rows(images, row, block)
                row += len(block)
                if moments is not None:
                    moments.update(block)
                bar.update(len(part))
    arrays.finish_images_file(images)
    labels = np.concatenate([labels for _, labels in split.batches])
    arrays.write_labels(output.out_dir, name, labels)
    return SplitResult(split_stats(labels, output.num_classes, {}, resized, []), [], [])


def is_generated(archive: Path, fmt: registry.DatasetFormat) -> bool:
    """Whether the archive is one the generated source wrote (own images never are)."""
    if fmt.stand_in_classes is None:
        return False
    try:
        return bool(registry.stand_in(fmt.name).is_stand_in(archive))
    except Exception as exc:  # the reader accepted the archive; this should not fail
        raise PrepareError(f"{archive}: cannot tell whether it is generated ({exc})") from None


def find_archive(raw_dir: str | Path, dataset: str) -> Path:
    """The archive of `dataset` in raw_dir (the download stage's output); PrepareError if it is
    missing or belongs to another dataset."""
    raw_dir = Path(raw_dir)
    fmt = registry.get(dataset)
    if fmt.own_images:
        return _find_own_archive(raw_dir)
    expected = raw_dir / fmt.official.filename
    if expected.is_file():
        return expected
    if not raw_dir.is_dir():
        raise PrepareError(f"{raw_dir}: no such directory; run the download stage first (dvc repro download)")
    others = [f for f in registry.official_formats() if f.name != dataset and (raw_dir / f.official.filename).is_file()]
    if others:
        raise PrepareError(
            f"{raw_dir} holds the {others[0].name} archive ({others[0].official.filename}) but data.dataset is "
            f"{dataset}; run the download stage again (dvc repro) or set data.dataset: {others[0].name}"
        )
    raise PrepareError(f"{expected}: missing; run the download stage first (dvc repro download)")


def _find_own_archive(raw_dir: Path) -> Path:
    stem = registry.OWN_ARCHIVE_STEM
    found = [raw_dir / f"{stem}{suffix}" for suffix in (".tar", ".zip")]
    found = [path for path in found if path.is_file()]
    if found:
        return found[0]
    if raw_dir.is_dir() and any((raw_dir / f.official.filename).is_file() for f in registry.official_formats()):
        raise PrepareError(f"{raw_dir} holds an official dataset archive but data.dataset is folder; "
                           "run the download stage again (dvc repro)")
    raise PrepareError(f"{raw_dir / stem}.tar: missing; run the download stage first (dvc repro download)")
