"""Held-out splits drawn by a seeded hash, per class: which images go to val (and test) so that a
file's split depends only on its own name and its class's size, never on the other classes.

- `split_rank(seed, key)`: the sort key. Within a class, the lowest ranks are held out.
- `carve_val_from_train(data, share, seed)`: for the official datasets (`data.val_from_train`):
  the official val set becomes the test split, and `share` of each train class becomes val. Tiny
  ImageNet's images are ranked by member name, CIFAR's by their position in the training batches
  (the official files never change, so neither does the draw).
- `pixel_duplicates(prepared_dir)`: images that are pixel for pixel the same in two prepared splits
  (by a hash of each row), named by their sources: a held-out image the model has trained on.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from tinyclf.data.formats.contract import ArraySplit, FormatData, MemberSplit


def split_rank(seed: int, key: str) -> bytes:
    """The sort key that decides a file's split: a hash of the seed and its path inside its class folder
    (or, for an official archive, its member name or row)."""
    return hashlib.blake2b(f"{seed}\0{key}".encode(), digest_size=8).digest()


def pixel_duplicates(prepared_dir: Path, splits: list[str], sources: dict[str, list[str]]) -> list[list[str]]:
    """[source in the earlier split, source in the later one] for every image of a later split (in
    `splits` order) whose pixels equal an image of an earlier one; in row order."""
    from tinyclf.data import arrays

    first_seen: dict[bytes, str] = {}
    pairs = []
    for split in splits:
        images, _ = arrays.load_split(prepared_dir, split)
        seen_here: dict[bytes, str] = {}
        for row in range(len(images)):
            digest = hashlib.blake2b(images[row].tobytes(), digest_size=16).digest()
            if digest in first_seen:
                pairs.append([first_seen[digest], sources[split][row]])
            seen_here.setdefault(digest, sources[split][row])
        for digest, source in seen_here.items():
            first_seen.setdefault(digest, source)
    return pairs


def held_out_count(share: float, n: int) -> int:
    """round(share × n), at least one when share > 0, never all (a class of one image stays in train)."""
    if share <= 0 or n <= 1:
        return 0
    return min(max(round(share * n), 1), n - 1)


def carve_val_from_train(data: FormatData, share: float, seed: int) -> tuple[FormatData, dict]:
    """`data` with val = `share` of each train class (by split_rank) and test = the official val set;
    and the stats.json record of how."""
    train = data.splits["train"]
    labels = np.asarray(train.labels if isinstance(train, MemberSplit) else
                        np.concatenate([lab for _, lab in train.batches]), dtype=np.int64)
    keys = ([name for name, _ in train.members] if isinstance(train, MemberSplit)
            else [str(row) for row in range(len(labels))])
    to_val = np.zeros(len(labels), dtype=bool)
    for cls in np.unique(labels):
        rows = np.flatnonzero(labels == cls)
        ranked = sorted(rows, key=lambda row: split_rank(seed, keys[row]))
        to_val[ranked[:held_out_count(share, len(rows))]] = True
    new_train, new_val = _subset(train, ~to_val), _subset(train, to_val)
    splits = {"train": new_train, "val": new_val, "test": data.splits["val"]}
    record = {"val_from_train": share, "split_seed": seed, "val": f"{share:.0%} of each official train class",
              "test": "the official validation set"}
    return FormatData(classes=data.classes, splits=splits, groups=data.groups, class_groups=data.class_groups,
                      member_prefix=data.member_prefix, finish=data.finish), record


def _subset(split: MemberSplit | ArraySplit, keep: np.ndarray) -> MemberSplit | ArraySplit:
    """The rows of `split` where `keep` is true, in their order."""
    if isinstance(split, MemberSplit):
        rows = np.flatnonzero(keep)
        return MemberSplit([split.members[i] for i in rows], [split.labels[i] for i in rows])
    batches, start = [], 0
    for pixels, labels in split.batches:
        mask = keep[start:start + len(labels)]
        batches.append((pixels[mask], labels[mask]))
        start += len(labels)
    sources = None if split.sources is None else [s for s, k in zip(split.sources, keep) if k]
    return ArraySplit(batches, sources)
