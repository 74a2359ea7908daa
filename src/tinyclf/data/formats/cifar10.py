"""CIFAR-10: the official python archive (cifar-10-python.tar.gz), read without extracting it, and
its generated stand-in.

Layout (as published, and as `write_stand_in` writes it):

    cifar-10-batches-py/data_batch_1 … data_batch_5   train (pickled dicts: "data", "labels")
    cifar-10-batches-py/test_batch                    used as the val split
    cifar-10-batches-py/batches.meta                  "label_names": the class order
    cifar-10-batches-py/readme.html

The batches are Python-2 pickles (`tinyclf.data.formats.cifar_python` reads and writes them). The
stand-in's batches.meta is the official one byte for byte, so a stand-in has exactly 10 classes
and carries a `tinyclf-generated` member before its batches.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinyclf.data.formats.cifar_python import (batch, label_names, pixel_rows, py2_pickle, read_members,
                                               tar_has_member, write_tar_gz)
from tinyclf.data.formats.contract import ArraySplit, FormatData, PrepareOptions, StandInSpec
from tinyclf.data.formats.synthetic import MARKER, render_images

TITLE = "CIFAR-10"
ROOT = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
VAL_BATCHES = ("test_batch",)
META = "batches.meta"
# The real label names: batches.meta is reproduced byte for byte, so these are fixed.
LABEL_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def decode_rule(options: PrepareOptions) -> None:
    return None  # the batches are pixels already: nothing to decode


def read(archive: Path, options: PrepareOptions) -> FormatData:
    """Class names and the train (data_batch_1..5) and val (test_batch) batches. Raises PrepareError."""
    found = read_members(archive, (META,) + TRAIN_BATCHES + VAL_BATCHES, TITLE)
    meta_member, meta = found[META]
    names = label_names(meta, "label_names", meta_member, archive)
    splits = {}
    for split, members in (("train", TRAIN_BATCHES), ("val", VAL_BATCHES)):
        batches = [batch(found[base][1], found[base][0], archive, "labels", len(names)) for base in members]
        sources = [f"{base}#{row}" for base, (_, labels) in zip(members, batches) for row in range(len(labels))]
        splits[split] = ArraySplit(batches, sources)
    # Ids and readable names are both the label name, e.g. ("airplane", "airplane").
    return FormatData(classes=[(n, n) for n in names], splits=splits)


# ------------------------------------------------------------------------------ generated stand-in


def meta_bytes() -> bytes:
    """The official `batches.meta` (md5 5ff9c542aee3614f3951f8cda6e48888), byte for byte.

    It is kept verbatim (num_cases_per_batch stays 10000 even for smaller generated batches) so
    that readers relying on its exact form behave as on the real archive.
    """
    return py2_pickle({"num_cases_per_batch": 10000, "label_names": list(LABEL_NAMES), "num_vis": 3072})


_README = (
    '<meta HTTP-EQUIV="REFRESH" content="0; url=http://www.cs.toronto.edu/~kriz/cifar.html">\n'
    "<!-- tinyclf-generated: synthetic images in the CIFAR-10 python format, not the real CIFAR-10 data -->\n"
)


def _batch_bytes(label: str, labels: np.ndarray, images: np.ndarray, first_index: int) -> bytes:
    filenames = [f"generated_{LABEL_NAMES[int(y)]}_s_{first_index + i:06d}.png" for i, y in enumerate(labels)]
    # Key order of the real batches (as Python 2 iterated the dict).
    return py2_pickle({"batch_label": label, "labels": [int(y) for y in labels], "data": pixel_rows(images),
                       "filenames": filenames})


def write_stand_in(fh, spec: StandInSpec) -> None:
    """32×32 synthetic images of 10 classes as cifar-10-python.tar.gz (the test images count is
    ignored: CIFAR-10 has no unlabeled split)."""
    train_labels = spec.rng_train.permutation(np.repeat(np.arange(10), spec.train_per_class))
    train_images, _ = render_images(train_labels, 32, spec.rng_train)
    test_labels = spec.rng_val.permutation(np.repeat(np.arange(10), spec.val_per_class))
    test_images, _ = render_images(test_labels, 32, spec.rng_val)
    members: list[tuple[str, bytes | None]] = [
        ("", None),
        # The marker comes first so is_stand_in() can answer without reading the batches.
        (MARKER, b"Synthetic images written by tinyclf in the CIFAR-10 python format; not CIFAR-10.\n"),
        (META, meta_bytes()),
    ]
    bounds = np.linspace(0, len(train_labels), 6).astype(int)
    for b in range(5):
        lo, hi = bounds[b], bounds[b + 1]
        batch_bytes = _batch_bytes(f"training batch {b + 1} of 5", train_labels[lo:hi], train_images[lo:hi], lo)
        members.append((TRAIN_BATCHES[b], batch_bytes))
    members.append(("readme.html", _README.encode()))
    members.append((VAL_BATCHES[0], _batch_bytes("testing batch 1 of 1", test_labels, test_images, 0)))
    write_tar_gz(fh, ROOT, members)


def is_stand_in(archive: Path) -> bool:
    return tar_has_member(archive, MARKER)
