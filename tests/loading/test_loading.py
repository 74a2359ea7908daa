"""Loading the prepared arrays: dataset items and their per-sample determinism, loaders with and
without worker processes, the epoch order over replicas, normalization to model input (the
augmentations themselves: augment/test_per_image.py and augment/test_device_augment.py)."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from support.helpers import REPO

from tinyclf.augment.per_image import PerImageAugment, build_augment
from tinyclf.data.arrays import PreparedDataError
from tinyclf.loading.dataset import PreparedDataset
from tinyclf.loading.loader import LoaderSpeed, make_loader
from tinyclf.loading.normalize import to_model_input
from tinyclf.loading.samplers import BalancedDraw, EpochSampler, epoch_order, epoch_positions
from tinyclf.params import TrainParams

SIZE = 32


@pytest.fixture(autouse=True)
def one_thread():
    # Small tensors: one thread is faster and leaves the other core to the rest of the suite.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_prepared(root, n=24, size=SIZE, num_classes=3, seed=0):
    """A tiny prepared dir in the format of docs/architecture.md (random images, generated)."""
    rng = np.random.default_rng(seed)
    split = root / "train"
    split.mkdir(parents=True)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    labels = (np.arange(n) % num_classes).astype(np.int64)
    np.save(split / "images.npy", images)
    np.save(split / "labels.npy", labels)
    classes = [{"index": i, "id": f"g{i:07d}", "name": f"class {i}"} for i in range(num_classes)]
    (root / "classes.json").write_text(json.dumps({"dataset": "tiny-imagenet", "generated": True, "classes": classes}))
    return images, labels


def tp_with(**kw) -> TrainParams:
    return dataclasses.replace(TrainParams(), **kw)


@pytest.fixture
def prepared(tmp_path):
    images, labels = write_prepared(tmp_path)
    return tmp_path, images, labels


# ---- dataset --------------------------------------------------------------------------------

def test_items_are_uint8_chw_with_int_labels(prepared):
    root, images, labels = prepared
    plain = PreparedDataset(root, "train")
    assert len(plain) == 24 and plain.num_classes == 3
    x, y = plain[5]
    assert x.dtype == torch.uint8 and x.shape == (3, SIZE, SIZE) and y == labels[5] and isinstance(y, int)
    assert torch.equal(x, torch.from_numpy(images[5]).permute(2, 0, 1))  # no augment: the stored image
    assert torch.equal(plain[(5, 3)][0], x)

    aug = PreparedDataset(root, "train", PerImageAugment(build_augment(TrainParams(), SIZE), seed=1))
    x, y = aug[(5, 0)]
    assert x.dtype == torch.uint8 and x.shape == (3, SIZE, SIZE) and y == labels[5]
    assert not torch.equal(x, plain[5][0])  # random_resized_crop did change it


def test_dataset_pickles_without_the_image_data(prepared):
    root, _, _ = prepared
    ds = PreparedDataset(root, "train")
    ds[0]  # opens the memmap
    blob = pickle.dumps(ds)
    assert len(blob) < 24 * SIZE * SIZE * 3  # labels and paths only, not the images
    assert torch.equal(pickle.loads(blob)[7][0], ds[7][0])


def test_missing_or_malformed_split_names_the_file(tmp_path):
    with pytest.raises(PreparedDataError, match="images.npy"):
        PreparedDataset(tmp_path, "train")
    (tmp_path / "train").mkdir()
    np.save(tmp_path / "train" / "images.npy", np.zeros((4, 8, 8), np.uint8))
    np.save(tmp_path / "train" / "labels.npy", np.zeros(4, np.int64))
    with pytest.raises(PreparedDataError, match=r"images.npy: expected uint8 N×H×W×3"):
        PreparedDataset(tmp_path, "train")


def test_sample_depends_only_on_seed_epoch_index(prepared):
    root, _, _ = prepared
    a = PreparedDataset(root, "train", PerImageAugment(build_augment(TrainParams(), SIZE), seed=7))
    b = PreparedDataset(root, "train", PerImageAugment(build_augment(TrainParams(), SIZE), seed=7))
    keys = [(i, e) for e in (0, 1) for i in range(len(a))]
    first = {k: a[k][0] for k in keys}
    for k in reversed(keys):  # another instance, opposite call order
        assert torch.equal(b[k][0], first[k]), k
    # Epochs and seeds change the crops (nearly every image; allow a coincidence or two).
    assert sum(not torch.equal(first[(i, 0)], first[(i, 1)]) for i in range(len(a))) >= len(a) - 2
    c = PreparedDataset(root, "train", PerImageAugment(build_augment(TrainParams(), SIZE), seed=8))
    assert sum(not torch.equal(first[(i, 0)], c[(i, 0)][0]) for i in range(len(a))) >= len(a) - 2


def test_loader_batches_identical_for_0_and_2_workers(prepared):
    root, _, _ = prepared
    batches = {}
    for workers in (0, 2):
        ds = PreparedDataset(root, "train", PerImageAugment(build_augment(tp_with(crop="pad_crop", color_jitter=0.4), SIZE), seed=3))
        sampler = EpochSampler(len(ds), seed=3)
        loader = make_loader(ds, sampler, 8, LoaderSpeed(workers=workers, prefetch_factor=2, pin_memory=False),
                             drop_last=False)
        got = []
        for epoch in (0, 1):
            sampler.set_epoch(epoch)
            got += [(x.clone(), y.clone()) for x, y in loader]
        batches[workers] = got
        del loader
    assert len(batches[0]) == len(batches[2]) == 6
    for (x0, y0), (x2, y2) in zip(batches[0], batches[2]):
        assert x0.dtype == torch.uint8 and x0.shape == (8, 3, SIZE, SIZE)
        assert torch.equal(x0, x2) and torch.equal(y0, y2)


def test_loader_workers_start_after_this_process_used_opencv_threads(prepared):
    """A process that already ran OpenCV on its thread pool (a notebook, or an earlier preprocess)
    then trains with loader workers: the forked workers must not hang (they did, in
    cv2.setNumThreads, when each worker set its own thread count)."""
    root, _, _ = prepared
    script = f"""
import cv2, numpy as np, torch
from tinyclf.params import TrainParams
from tinyclf.augment.per_image import PerImageAugment, build_augment
from tinyclf.loading.dataset import PreparedDataset
from tinyclf.loading.loader import LoaderSpeed, make_loader
from tinyclf.loading.samplers import EpochSampler
big = np.random.default_rng(0).integers(0, 256, (3000, 3000, 3), dtype=np.uint8)
for _ in range(3):
    cv2.GaussianBlur(cv2.resize(big, (1500, 1500), interpolation=cv2.INTER_AREA), (9, 9), 0)
ds = PreparedDataset({str(root)!r}, "train", PerImageAugment(build_augment(TrainParams(crop="pad_crop"), {SIZE}), seed=0))
loader = make_loader(ds, EpochSampler(len(ds)), 8, LoaderSpeed(workers=2, prefetch_factor=2, pin_memory=False),
                     drop_last=False)
print(sum(len(y) for _, y in loader), cv2.getNumThreads())
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["24", "1"]  # every image loaded; OpenCV here on one thread, as in the workers


# ---- sampler --------------------------------------------------------------------------------

def test_one_and_two_replicas_cover_the_same_samples_per_step():
    n, global_batch = 40, 8
    one = EpochSampler(n, num_replicas=1, rank=0, seed=5)
    two = [EpochSampler(n, num_replicas=2, rank=r, seed=5) for r in (0, 1)]
    for epoch in (0, 3):
        for s in (one, *two):
            s.set_epoch(epoch)
        single = list(one)
        assert all(e == epoch for _, e in single)
        order = [i for i, _ in single]
        assert sorted(order) == list(range(n))
        shards = [[i for i, _ in s] for s in two]
        assert shards[0] == order[0::2] and shards[1] == order[1::2]
        assert len(two[0]) == len(two[1]) == n // 2 and len(one) == n
        half = global_batch // 2
        for step in range(n // global_batch):
            union = set(shards[0][step * half:(step + 1) * half]) | set(shards[1][step * half:(step + 1) * half])
            assert union == set(order[step * global_batch:(step + 1) * global_batch])
    one.set_epoch(0)
    first = [i for i, _ in one]
    one.set_epoch(1)
    assert [i for i, _ in one] != first and sorted(first) == list(range(n))
    unshuffled = EpochSampler(n, shuffle=False)
    assert [i for i, _ in unshuffled] == list(range(n))


# ---- normalization --------------------------------------------------------------------------

@pytest.mark.parametrize("channels_last", [False, True])
def test_to_model_input_standardizes_with_the_given_stats(channels_last):
    mean, std = [0.3, 0.5, 0.6], [0.07, 0.1, 0.06]  # 4+ std from 0 and 1: no clipping
    rng = np.random.default_rng(0)
    data = rng.normal(np.array(mean)[None, :, None, None], np.array(std)[None, :, None, None], (64, 3, 16, 16))
    batch = torch.from_numpy(np.clip(np.round(data * 255), 0, 255).astype(np.uint8))
    x = to_model_input(batch, mean, std, channels_last=channels_last)
    assert x.dtype == torch.float32 and x.shape == batch.shape
    assert x.is_contiguous(memory_format=torch.channels_last) == channels_last
    per_channel_mean = x.mean(dim=(0, 2, 3))
    per_channel_std = x.std(dim=(0, 2, 3))
    assert torch.allclose(per_channel_mean, torch.zeros(3), atol=0.02), per_channel_mean
    assert torch.allclose(per_channel_std, torch.ones(3), atol=0.02), per_channel_std
    # exact formula on one pixel
    assert x[0, 1, 2, 3].item() == pytest.approx((batch[0, 1, 2, 3].item() / 255 - 0.5) / 0.1, abs=1e-5)




@pytest.mark.parametrize("balanced", [False, True], ids=["permutation", "balanced"])
@pytest.mark.parametrize("length, world", [(24, 1), (23, 2), (10, 3), (2, 4)])
def test_epoch_order_is_the_samplers_order(length, world, balanced):
    """The device backend's per-epoch order (one tensor) is the DataLoader sampler's, padding included;
    with train.balance: sampler too, where both also key augmentation by the same epoch positions."""
    balance = BalancedDraw(np.arange(length) % 3 == 0) if balanced else None  # a skewed 2-class split
    for rank in range(world):
        for epoch in (0, 3):
            sampler = EpochSampler(length, num_replicas=world, rank=rank, seed=5, balance=balance)
            sampler.set_epoch(epoch)
            items = list(sampler)
            expected = [item[0] for item in items]
            assert epoch_order(length, seed=5, epoch=epoch, num_replicas=world, rank=rank,
                               balance=balance).tolist() == expected
            if balanced:
                assert [item[2] for item in items] == epoch_positions(length, num_replicas=world, rank=rank).tolist()
