"""CIFAR-10: read the official python archive (cifar-10-python.tar.gz) without extracting it.

Layout (as published, and as `tinyclf.data.formats.generated` writes it):

    cifar-10-batches-py/data_batch_1 … data_batch_5   train (pickled dicts: "data", "labels")
    cifar-10-batches-py/test_batch                    used as the val split
    cifar-10-batches-py/batches.meta                  "label_names": the class order

The batches are Python-2 pickles; they are read the way torchvision's CIFAR10 reads them
(`pickle.load(f, encoding="latin1")`, data N×3072 → N×3×32×32 → N×32×32×3), through an
unpickler that only accepts the few numpy globals an array needs, so a hostile archive cannot
run code.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinyclf.data.preprocess import PrepareError

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
VAL_BATCHES = ("test_batch",)
META = "batches.meta"
SIDE = 32

# Globals a pickled numpy array needs (numpy 1.x and 2.x module names, Python-2 and -3 picklers).
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how Python 3 writes bytes into a protocol-2 pickle
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


@dataclass(frozen=True)
class Cifar10Data:
    """Classes in index order and, per split, its batches as (images N×32×32×3 uint8 view, labels)."""

    classes: list[tuple[str, str]]  # (id, name): both the label name, e.g. ("airplane", "airplane")
    batches: dict[str, list[tuple[str, np.ndarray, np.ndarray]]]  # split -> [(member, images, labels)]

    def count(self, split: str) -> int:
        return sum(len(labels) for _, _, labels in self.batches[split])


def _unpickle(data: bytes, member: str, archive: Path) -> dict:
    try:
        obj = _ArrayOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as exc:  # any unpickling failure means the member is not a CIFAR batch
        raise PrepareError(f"{archive}: member {member} is not a readable CIFAR-10 pickle ({exc})") from None
    if not isinstance(obj, dict):
        raise PrepareError(f"{archive}: member {member} holds {type(obj).__name__}, expected a dict")
    return obj


def _batch(obj: dict, member: str, archive: Path) -> tuple[np.ndarray, np.ndarray]:
    data, labels = obj.get("data"), obj.get("labels")
    if not isinstance(data, np.ndarray) or labels is None:
        raise PrepareError(f"{archive}: member {member} lacks the 'data' array or the 'labels' list")
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * SIDE * SIDE:
        raise PrepareError(f"{archive}: member {member} data is {data.dtype} {data.shape}, expected uint8 N×3072")
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (data.shape[0],):
        raise PrepareError(f"{archive}: member {member} has {len(labels)} labels for {data.shape[0]} images")
    # Row layout: 1024 red, 1024 green, 1024 blue values, each plane row-major. A view, no copy.
    images = data.reshape(-1, 3, SIDE, SIDE).transpose(0, 2, 3, 1)
    return images, labels


def read_archive(path: str | Path) -> Cifar10Data:
    """Class names and the train (data_batch_1..5) and val (test_batch) batches. Raises PrepareError."""
    path = Path(path)
    if not path.is_file():
        raise PrepareError(f"{path}: no such file")
    wanted = set(TRAIN_BATCHES + VAL_BATCHES + (META,))
    found: dict[str, tuple[str, dict]] = {}
    try:
        # "r|gz" reads the stream once, front to back: no seeks back through the gzip data.
        with tarfile.open(path, mode="r|gz") as tar:
            for info in tar:
                base = info.name.rsplit("/", 1)[-1]
                if not info.isfile() or base not in wanted or base in found:
                    continue
                fh = tar.extractfile(info)
                found[base] = (info.name, _unpickle(fh.read(), info.name, path))
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise PrepareError(f"{path}: not a gzip-compressed tar archive ({exc}); expected the CIFAR-10 python archive") from None
    missing = [name for name in (META,) + TRAIN_BATCHES + VAL_BATCHES if name not in found]
    if missing:
        raise PrepareError(f"{path}: no {', '.join(missing)} inside; not the CIFAR-10 python archive")

    meta_member, meta = found[META]
    names = meta.get("label_names")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or not names:
        raise PrepareError(f"{path}: member {meta_member} has no 'label_names' list")
    batches: dict[str, list] = {"train": [], "val": []}
    for split, members in (("train", TRAIN_BATCHES), ("val", VAL_BATCHES)):
        for base in members:
            member, obj = found[base]
            images, labels = _batch(obj, member, path)
            if len(labels) and (labels.min() < 0 or labels.max() >= len(names)):
                raise PrepareError(f"{path}: member {member} has a label outside 0..{len(names) - 1}")
            batches[split].append((member, images, labels))
    return Cifar10Data(classes=[(n, n) for n in names], batches=batches)
