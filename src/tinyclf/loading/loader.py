"""A DataLoader with the speed options from params (workers, prefetch, pinned memory)."""

from __future__ import annotations

import cv2
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def make_loader(dataset: Dataset, sampler: Sampler | None, batch_size: int, *, workers: int, prefetch_factor: int,
                pin_memory: bool, drop_last: bool, persistent_workers: bool = True, collate=None) -> DataLoader:
    """A DataLoader with the speed options from params; workers=0 loads in the calling process.

    With workers, OpenCV in this process is set to one thread: each worker already owns a core, and
    the forked workers inherit the setting. (Setting it in the workers instead hangs them, in
    cv2.setNumThreads, whenever this process had already started OpenCV's thread pool.)
    """
    kwargs: dict = {}
    if workers > 0:
        cv2.setNumThreads(1)
        kwargs = dict(prefetch_factor=prefetch_factor, persistent_workers=persistent_workers)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      # Pinned memory only helps (and only exists) with a CUDA device.
                      pin_memory=pin_memory and torch.cuda.is_available(),
                      drop_last=drop_last, collate_fn=collate, **kwargs)
