"""The generated source (`download.source: generated`): a small, learnable, synthetic dataset written
as the official archive of any format that has a stand-in, and the check that an archive is one.

    write_archive("tiny-imagenet", "data/raw/tiny-imagenet-200.zip", num_classes=10,
                  train_per_class=100, val_per_class=20, test_images=20, seed=0)

Each format writes its own stand-in in its exact official layout (`registry.stand_in(name)`), so
the real readers are exercised; the images are `tinyclf.data.formats.synthetic`'s, which a ResNet
learns in a few CPU epochs. Same arguments, same bytes: archive timestamps, owners and headers are fixed, and
each split draws from its own random stream. Generated archives mark themselves, so everything
derived from them says it was trained on generated data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinyclf.atomic import atomic_path
from tinyclf.data.formats import registry
from tinyclf.data.formats.contract import StandInSpec


def write_archive(dataset: str, path: str | Path, *, num_classes: int, train_per_class: int, val_per_class: int,
                  test_images: int, seed: int) -> Path:
    """Write a generated dataset as the official archive of `dataset`, atomically; return the path.

    The class count must fit the format (`registry` `stand_in_classes`: Tiny ImageNet 2-200, the
    CIFARs exactly their own count); test_images applies to formats with an unlabeled split.
    """
    writer = registry.stand_in(dataset)  # ValueError for an unknown dataset or one without a stand-in
    _check_size(registry.get(dataset), num_classes, train_per_class, val_per_class, test_images)
    # Independent streams per split: changing the test count leaves train and val bytes unchanged.
    rng_train, rng_val, rng_test = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    spec = StandInSpec(num_classes, train_per_class, val_per_class, test_images, rng_train, rng_val, rng_test)
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        writer.write_stand_in(fh, spec)
    return path


def _check_size(fmt: registry.DatasetFormat, num_classes: int, train_per_class: int, val_per_class: int,
                test_images: int) -> None:
    low, high = fmt.stand_in_classes
    if low == high and num_classes != low:
        raise ValueError(f"the {fmt.title} format has exactly {low} classes, got num_classes={num_classes}")
    if not low <= num_classes <= high:
        raise ValueError(f"num_classes must be {low}-{high}, got {num_classes}")
    if train_per_class < 1 or val_per_class < 1 or test_images < 0:
        raise ValueError("train_per_class and val_per_class must be >= 1 and test_images >= 0")


def is_generated(archive_path: str | Path) -> bool:
    """Whether an archive of a format with a stand-in was written by write_archive.

    Raises ValueError naming the file when it starts like none of those formats' archives.
    """
    archive_path = Path(archive_path)
    with open(archive_path, "rb") as fh:
        head = fh.read(8)
    formats = [f for f in registry.official_formats() if f.stand_in_classes and head.startswith(f.official.magic)]
    if not formats:
        kinds = dict.fromkeys(f.official.kind for f in registry.official_formats() if f.stand_in_classes)
        raise ValueError(f"{archive_path}: neither a {' nor a '.join(kinds)} archive")
    return any(registry.stand_in(f.name).is_stand_in(archive_path) for f in formats)
