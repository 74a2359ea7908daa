"""Your own images (`data.dataset: folder`): an archive of class folders, indexed from its member
names, decoded by preprocess like the official formats.

The layout index (`tinyclf.data.formats.folder_layout`) decides classes and splits from member
names alone; preprocess then decodes the members in parallel straight out of the archive, each
checked from its header before decoding, EXIF-rotated, converted to 8-bit RGB and made square by
`data.resize`.
What the user should know goes to stderr as one line each and into stats.json's `folder` section
(`finish`): files that were not images, links not followed, byte-identical files in two splits, classes
without validation images, and a strong class imbalance. There is no generated stand-in: own
images are always the user's.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from tinyclf.data import arrays
from tinyclf.data.archive_members import ArchiveError, open_archive
from tinyclf.data.formats.folder_layout import FolderIndex, build_index
from tinyclf.data.formats.contract import DecodeRule, FormatData, MemberSplit, PrepareOptions
from tinyclf.errors import PrepareError

# How many names a warning line and stats.json list before saying "and N more".
LISTED = 20


def decode_rule(options: PrepareOptions) -> DecodeRule:
    """Photos: EXIF orientation applied, made square by data.resize."""
    return DecodeRule(fit=options.resize)


def read(archive: Path, options: PrepareOptions) -> FormatData:
    """The archive's classes and its train and val images, and test images when it has some (by member name)."""
    index = read_folder_index(archive, val_fraction=options.val_fraction, split_seed=options.split_seed,
                              test_fraction=options.test_fraction)
    splits = {}
    for split in (s for s in arrays.ALL_SPLITS if s in index.members):
        members = [(entry.name, entry.key) for entry in index.members[split]]
        if not members:
            raise PrepareError(f"{archive}: no {split} images (set data.val_fraction, or add a val/ folder)")
        splits[split] = MemberSplit(members, index.labels[split])
    return FormatData(classes=index.classes, splits=splits, member_prefix="",
                      finish=lambda results: _finish(archive, index, options, results))


def read_folder_index(archive: Path, *, val_fraction: float, split_seed: int, test_fraction: float = 0.0) -> FolderIndex:
    try:
        reader = open_archive(archive)
    except (ArchiveError, OSError) as exc:
        raise PrepareError(f"{archive}: {exc}") from None
    try:
        return build_index(reader.entries(), reader.read, val_fraction=val_fraction, split_seed=split_seed,
                           where=str(archive), test_fraction=test_fraction)
    except (ArchiveError, OSError) as exc:
        raise PrepareError(f"{archive}: cannot be listed ({exc})") from None
    finally:
        reader.close()


def _finish(archive: Path, index: FolderIndex, options: PrepareOptions, results: dict) -> dict:
    """stats.json's `folder` and `class_balance` sections from the decoded splits; warnings on stderr."""
    duplicates = [pair for a, b in _split_pairs(results) for pair in duplicates_across_splits(results[a], results[b])]
    extra = _folder_stats(index, options, duplicates)
    per_class = results["train"].stats["per_class"]
    extra["class_balance"] = arrays.class_balance(per_class)
    _warn(archive, index, duplicates, extra["class_balance"], index.classes, per_class)
    return extra


def _split_pairs(results: dict) -> list[tuple[str, str]]:
    """(train, val), then (train, test) and (val, test) when there is a test split."""
    names = [s for s in arrays.ALL_SPLITS if s in results]
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]


def duplicates_across_splits(train, val) -> list[tuple[str, str]]:
    """(file of the first split, file of the second) pairs with identical bytes: e.g. a val image the
    model has trained on."""
    in_val: dict[bytes, str] = {}
    for name, digest in zip(val.kept_names, val.digests):
        in_val.setdefault(digest, name)
    return [(name, in_val[digest]) for name, digest in zip(train.kept_names, train.digests) if digest in in_val]


def _listed(names: list) -> dict:
    return {"count": len(names), "first": names[:LISTED]}


def _folder_stats(index: FolderIndex, options: PrepareOptions, duplicates: list[tuple[str, str]]) -> dict:
    drawn = "drawn" in index.layout
    return {"folder": {
        "layout": index.layout,
        "resize": options.resize,
        "val_fraction": options.val_fraction if "val drawn" in index.layout else None,
        "test_fraction": options.test_fraction if "test drawn" in index.layout else None,
        "split_seed": options.split_seed if drawn else None,
        "not_images": _listed(index.not_images),
        "links_not_followed": _listed(index.not_followed),
        "ignored_folders": index.ignored,
        "duplicates_across_splits": _listed([list(pair) for pair in duplicates]),
        "notes": index.notes,
    }}


def _more(names: list, shown: int = 3) -> str:
    text = ", ".join(str(n) for n in names[:shown])
    return text + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _warn(archive: Path, index: FolderIndex, duplicates, balance: dict, classes, per_class) -> None:
    lines = list(index.notes)
    if index.not_images:
        lines.append(f"skipped {len(index.not_images)} files that are not images: {_more(index.not_images)}")
    if index.not_followed:
        lines.append(f"did not follow {len(index.not_followed)} links: {_more(index.not_followed)}")
    if duplicates:
        pairs = [f"{a} = {b}" for a, b in duplicates]
        lines.append(f"{len(duplicates)} held-out images are byte-identical to images of another split (val or "
                     f"test accuracy will read high): {_more(pairs, 2)}")
    if balance["imbalanced"]:
        small = classes[int(np.argmin(per_class))][0]
        large = classes[int(np.argmax(per_class))][0]
        lines.append(f"class imbalance: {large} has {balance['max']} train images, {small} {balance['min']} "
                     f"(ratio {balance['ratio'] or 'inf'}); consider train.balance: sampler")
    for line in lines:
        print(f"{archive.name}: {line}", file=sys.stderr)
