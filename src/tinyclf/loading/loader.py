"""A DataLoader with the speed options from params (workers, prefetch, pinned memory)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


@dataclass(frozen=True)
class LoaderSpeed:
    """How fast a DataLoader loads, never what it yields: worker processes (0: load in the calling
    process), batches each worker prefetches, pinned host memory (only with CUDA), and whether the
    workers outlive an epoch."""

    workers: int
    prefetch_factor: int
    pin_memory: bool
    persistent_workers: bool = True


def make_loader(dataset: Dataset, sampler: Sampler | None, batch_size: int, speed: LoaderSpeed, *, drop_last: bool,
                collate=None) -> DataLoader:
    """A DataLoader over `dataset` in `sampler`'s order, loading as `speed` says.

    With workers, OpenCV in this process is set to one thread: each worker already owns a core, and
    the forked workers inherit the setting. (Setting it in the workers instead hangs them, in
    cv2.setNumThreads, whenever this process had already started OpenCV's thread pool.)
    """
    kwargs: dict = {}
    if speed.workers > 0:
        cv2.setNumThreads(1)
        kwargs = dict(prefetch_factor=speed.prefetch_factor, persistent_workers=speed.persistent_workers)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=speed.workers,
                      # Pinned memory only helps (and only exists) with a CUDA device.
                      pin_memory=speed.pin_memory and torch.cuda.is_available(),
                      drop_last=drop_last, collate_fn=collate, **kwargs)
