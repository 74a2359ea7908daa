"""One split of the prepared arrays as a torch Dataset: uint8 images read from the memory-mapped
`images.npy`, with their labels, optionally augmented per sample.

The augment is any callable `augment(image, epoch, key) -> image` whose randomness depends only on
its arguments (`tinyclf.augment.per_image.PerImageAugment` for training); evaluation passes none,
so loading needs no augmentation code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from tinyclf.data import arrays

# (HWC uint8 image, epoch, augmentation key) -> HWC uint8 image
Augment = Callable[[np.ndarray, int, int], np.ndarray]


class PreparedDataset(Dataset):
    """One split of the prepared arrays (`<prepared_dir>/<split>/{images,labels}.npy`).

    `dataset[i]`, `dataset[(i, epoch)]` or `dataset[(i, epoch, aug_key)]` -> (uint8 tensor 3×H×W,
    int label). The augment, if any, is called with (image, epoch, aug_key), the key being the
    index unless given (a balanced epoch keys each draw by its position, so an image
    drawn twice is augmented twice differently). The image array is memory-mapped lazily in the
    process that reads it, so the dataset pickles small into DataLoader workers.
    """

    def __init__(self, prepared_dir: str | Path, split: str, augment: Augment | None = None):
        # Validates the format; a missing or malformed split raises arrays.PreparedDataError naming the file.
        images, labels = arrays.load_split(prepared_dir, split, mmap=True)
        self.images_path = Path(prepared_dir) / split / arrays.IMAGES_FILE
        self.labels = np.asarray(labels, dtype=np.int64)
        self.image_shape = tuple(images.shape[1:])
        self.num_classes = _num_classes(Path(prepared_dir), self.labels)
        self.augment = augment
        self._images: np.ndarray | None = None  # opened on first use, in each process

    @property
    def images(self) -> np.ndarray:
        if self._images is None:
            self._images = np.load(self.images_path, mmap_mode="r")
        return self._images

    def __getstate__(self) -> dict:
        # Pickling a memmap would copy its data; workers reopen the file instead.
        state = dict(self.__dict__)
        state["_images"] = None
        return state

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: int | tuple[int, int] | tuple[int, int, int]) -> tuple[torch.Tensor, int]:
        index, epoch, aug_key = sample_key(key)
        image = self.images[index]
        if self.augment is not None:
            image = self.augment(image, epoch, aug_key)
        # Copy when the image is still the read-only memmap row (no augment) or has strides
        # torch.from_numpy refuses (a flip's negative ones); augment output is usually neither.
        if not (image.flags.c_contiguous and image.flags.writeable):
            image = np.array(image, order="C")
        return torch.from_numpy(image).permute(2, 0, 1), int(self.labels[index])


def sample_key(key: int | tuple) -> tuple[int, int, int]:
    """(index, epoch, augmentation key) of a dataset key: `i`, `(i, epoch)` or `(i, epoch, aug_key)`."""
    if not isinstance(key, tuple):
        return int(key), 0, int(key)
    index, epoch = int(key[0]), int(key[1])
    return index, epoch, int(key[2]) if len(key) > 2 else index


def _num_classes(prepared_dir: Path, labels: np.ndarray) -> int:
    classes = prepared_dir / arrays.CLASSES_FILE
    if classes.is_file():
        return len(json.loads(classes.read_text())["classes"])
    return int(labels.max()) + 1 if len(labels) else 0
