"""train.balance: sampler — class-balanced epochs drawn with replacement, seeded from (seed, epoch),
the same in the workers and device backends, for any number of processes and across a resume.

Real components: the prepared arrays, both backends' batch sources as training builds them
(`train.data_setup.load_train_data`), the checkpoint fingerprint; no mocks.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support.helpers import shrunk_params
from support.host_reads import steady_epoch
from support.synthetic_prepared import write_prepared

from tinyclf.augment.per_image import PerImageAugment, build_augment
from tinyclf.loading.dataset import PreparedDataset
from tinyclf.loading.samplers import BalancedDraw, EpochSampler, epoch_order
from tinyclf.params import params_from_dict
from tinyclf.train import checkpoint
from tinyclf.train.distributed import DistInfo
from tinyclf.train.data_setup import load_train_data

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CPU = torch.device("cpu")
SKEWED = np.repeat(np.arange(3), [900, 90, 10])  # 90:9:1


def skewed_labels(seed: int = 0) -> np.ndarray:
    return SKEWED[np.random.default_rng(seed).permutation(len(SKEWED))]


def test_each_class_is_drawn_equally_often_with_replacement():
    labels = skewed_labels()
    draw = BalancedDraw(labels)
    counts = np.zeros(3, dtype=np.int64)
    for epoch in range(6):
        order = draw.draw(seed=42, epoch=epoch)
        assert order.dtype == torch.int64 and len(order) == len(labels)  # epoch length unchanged
        counts += np.bincount(labels[order.numpy()], minlength=3)
    # 6000 draws, 2000 per class expected (binomial sd ~37): the rare class is oversampled ~33x.
    assert np.all(np.abs(counts - 2000) < 200), counts
    # Within a class, every image can be drawn: the 10 rare images all appear.
    drawn = np.concatenate([draw.draw(seed=42, epoch=e).numpy() for e in range(6)])
    assert set(drawn[labels[drawn] == 2]) == set(np.flatnonzero(labels == 2))


def test_the_draw_depends_only_on_seed_and_epoch():
    labels = skewed_labels()
    first = BalancedDraw(labels).draw(seed=7, epoch=3)
    assert torch.equal(BalancedDraw(labels).draw(seed=7, epoch=3), first)
    assert not torch.equal(BalancedDraw(labels).draw(seed=7, epoch=4), first)
    assert not torch.equal(BalancedDraw(labels).draw(seed=8, epoch=3), first)


def test_a_class_without_images_is_never_drawn():
    labels = np.array([0, 0, 0, 2, 2, 3])  # class 1 is empty
    order = BalancedDraw(labels).draw(seed=0, epoch=0)
    assert set(labels[order.numpy()]) <= {0, 2, 3}


def test_one_and_two_replicas_see_the_same_global_order():
    """Rank r takes every world-th draw of the one global order, as with the permutation: one process
    with batch B and two with B/2 each cover the same draws at every step."""
    labels = skewed_labels()[:101]  # odd: the two-replica order is padded
    draw = BalancedDraw(labels)
    for epoch in (0, 5):
        single = [i for i, *_ in _epoch(EpochSampler(len(labels), seed=3, balance=draw), epoch)]
        shards = [[i for i, *_ in _epoch(EpochSampler(len(labels), num_replicas=2, rank=r, seed=3, balance=draw),
                                         epoch)] for r in (0, 1)]
        padded = single + single[:1]
        assert shards[0] == padded[0::2] and shards[1] == padded[1::2]
        assert single == draw.draw(seed=3, epoch=epoch).tolist()


def _epoch(sampler: EpochSampler, epoch: int) -> list:
    sampler.set_epoch(epoch)
    return list(sampler)


def test_a_repeated_image_is_augmented_differently_per_draw(tmp_path):
    """A balanced epoch keys augmentation by the draw's position, so the oversampled images do not
    repeat the same crop."""
    write_prepared(tmp_path, num_classes=2, train_per_class=4, val_per_class=1)
    train_params = params_from_dict(shrunk_params(train__crop="random_resized_crop")).train
    dataset = PreparedDataset(tmp_path, "train", PerImageAugment(build_augment(train_params, 32), seed=1))
    first, second = dataset[(0, 2, 10)][0], dataset[(0, 2, 11)][0]
    assert not torch.equal(first, second)
    assert torch.equal(dataset[(0, 2, 10)][0], first)  # and the same draw gives the same image
    assert torch.equal(dataset[(0, 2)][0], dataset[(0, 2, 0)][0])  # unbalanced epochs: keyed by the index


def skewed_prepared(tmp_path):
    """A train split of 30 images of class 0 and 3 of class 1 (stats.json's per_class is not read here)."""
    root = write_prepared(tmp_path / "prepared", num_classes=2, train_per_class=30, val_per_class=2)
    labels = np.load(root / "train" / "labels.npy")
    keep = np.concatenate([np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)[:3]])
    for name in ("images", "labels"):
        np.save(root / "train" / f"{name}.npy", np.load(root / "train" / f"{name}.npy")[keep])
    return root


def batch_labels(tmp_path, backend: str, world: int, rank: int, epoch: int, skip_micro: int = 0) -> list[int]:
    """The labels of one rank's micro-batches of `epoch`, as training would load them."""
    params = params_from_dict(shrunk_params(train__balance="sampler", train__aug_backend=backend,
                                            train__batch_size=4, train__crop="pad_crop"))
    info = DistInfo(rank=rank, world_size=world, local_rank=rank, local_world_size=world, device=CPU)
    data = load_train_data(tmp_path, params.train, info)
    return [int(v) for _, labels in data.train_batches.epoch(epoch, skip_micro=skip_micro) for v in labels]


def test_workers_and_device_backends_load_the_same_balanced_batches_and_resume_alike(tmp_path):
    prepared = skewed_prepared(tmp_path)
    whole = batch_labels(prepared, "workers", 1, 0, epoch=1)
    assert whole == batch_labels(prepared, "device", 1, 0, epoch=1)
    assert len(whole) == 32  # 8 steps of 4: the epoch length of the 33-image split, drop_last
    assert 0.25 < np.mean(whole) < 0.75  # 3 images of class 1 out of 33, drawn about half the time
    # A resumed epoch (3 micro-batches consumed) continues the same order, in both backends.
    assert batch_labels(prepared, "workers", 1, 0, epoch=1, skip_micro=3) == whole[12:]
    assert batch_labels(prepared, "device", 1, 0, epoch=1, skip_micro=3) == whole[12:]
    # Two processes: rank r's micro-batches are the r-th halves of the one-process batches' draws.
    for rank in (0, 1):
        expected = epoch_order(33, seed=42, epoch=1, num_replicas=2, rank=rank,
                               balance=BalancedDraw(np.load(prepared / "train" / "labels.npy")))
        labels = np.load(prepared / "train" / "labels.npy")[expected.numpy()][:16].tolist()
        assert batch_labels(prepared, "device", 2, rank, epoch=1) == labels
        assert batch_labels(prepared, "workers", 2, rank, epoch=1) == labels


def test_a_resume_with_another_balance_is_refused():
    old = checkpoint.fingerprint(params_from_dict(shrunk_params()), {}, 4)
    new = checkpoint.fingerprint(params_from_dict(shrunk_params(train__balance="sampler")), {}, 4)
    assert checkpoint.fingerprint_diff(old, new) == ["train.balance: 'none' -> 'sampler'"]


def test_a_balanced_epoch_on_the_device_backend_stays_sync_free(tmp_path, monkeypatch):
    """The balanced order is built once per epoch from tensors: the steady epoch reads no more often."""
    epoch = steady_epoch(tmp_path, monkeypatch, sync_every=8, train__balance="sampler")
    assert epoch.reads <= epoch.steps // 8, epoch.reads
    assert epoch.metrics["images"] == 24 * 8
    assert epoch.from_python_data == []
