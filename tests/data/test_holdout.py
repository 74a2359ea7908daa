"""tinyclf.data.holdout and the held-out splits preprocess writes: with data.val_from_train an
official dataset's val set becomes a test split and val is carved out of train, per class, the same
way every time, with no image in two splits; the generated Tiny ImageNet (members) and CIFAR-10
(pixel batches) formats both."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest

from tinyclf.data import arrays
from tinyclf.data.formats.contract import PrepareOptions
from tinyclf.data.formats.generated import write_archive
from tinyclf.data.holdout import held_out_count
from tinyclf.data.preprocess import prepare


def row_hashes(prepared, split) -> set[bytes]:
    images, _ = arrays.load_split(prepared, split)
    return {hashlib.blake2b(np.ascontiguousarray(img).tobytes(), digest_size=8).digest() for img in images}


@pytest.mark.parametrize("dataset, per_class", [("tiny-imagenet", 10), ("cifar10", 10)])
def test_val_from_train_makes_the_official_val_set_a_test_split(tmp_path, dataset, per_class):
    archive = write_archive(dataset, tmp_path / "raw" / "archive", num_classes=10, train_per_class=per_class,
                            val_per_class=4, test_images=2, seed=3)
    options = PrepareOptions(workers=1, progress=False, val_from_train=0.2)
    plain = prepare(archive, tmp_path / "plain", dataset, PrepareOptions(workers=1, progress=False)).stats
    carved = prepare(archive, tmp_path / "carved", dataset, options).stats

    splits = carved["splits"]
    assert splits["test"]["per_class"] == plain["splits"]["val"]["per_class"] == [4] * 10
    assert splits["val"]["per_class"] == [2] * 10 and splits["train"]["per_class"] == [8] * 10
    assert carved["holdout"]["test"] == "the official validation set"
    # The test split is the official val set, pixel for pixel; val and train partition the official train.
    assert row_hashes(tmp_path / "carved", "test") == row_hashes(tmp_path / "plain", "val")
    assert row_hashes(tmp_path / "carved", "train") | row_hashes(tmp_path / "carved", "val") == \
        row_hashes(tmp_path / "plain", "train")
    assert not row_hashes(tmp_path / "carved", "train") & row_hashes(tmp_path / "carved", "val")
    # Each row still names where it came from.
    sources = {split: arrays.load_sources(tmp_path / "carved", split) for split in ("train", "val", "test")}
    assert sources["test"] == arrays.load_sources(tmp_path / "plain", "val")
    assert sorted(sources["train"] + sources["val"]) == sorted(arrays.load_sources(tmp_path / "plain", "train"))
    pattern = r"data_batch_[1-5]#\d+" if dataset == "cifar10" else r"tiny-imagenet-200/train/\w+/images/\S+\.JPEG"
    assert all(re.fullmatch(pattern, s) for s in sources["val"]), sources["val"][:3]
    # The same draw every time; another seed draws another one.
    again = prepare(archive, tmp_path / "again", dataset, options).stats
    assert again["splits"] == carved["splits"]
    assert row_hashes(tmp_path / "again", "val") == row_hashes(tmp_path / "carved", "val")
    reseeded = prepare(archive, tmp_path / "reseeded", dataset,
                       PrepareOptions(workers=1, progress=False, val_from_train=0.2, split_seed=1))
    assert reseeded.stats["splits"]["val"]["count"] == 20
    assert row_hashes(tmp_path / "reseeded", "val") != row_hashes(tmp_path / "carved", "val")


def test_training_statistics_come_from_the_train_split_only(tmp_path):
    archive = write_archive("tiny-imagenet", tmp_path / "raw" / "archive", num_classes=4, train_per_class=10,
                            val_per_class=4, test_images=1, seed=3)
    stats = prepare(archive, tmp_path / "carved", "tiny-imagenet",
                    PrepareOptions(workers=1, progress=False, val_from_train=0.3)).stats
    images, _ = arrays.load_split(tmp_path / "carved", "train")
    mean = (images.reshape(-1, 3).astype(np.float64) / 255).mean(axis=0)
    assert np.allclose(stats["mean"], mean, atol=1e-6)


@pytest.mark.parametrize("share, n, expected", [(0.2, 10, 2), (0.2, 2, 1), (0.2, 1, 0), (0.0, 10, 0), (0.9, 5, 4)])
def test_a_held_out_share_takes_at_least_one_and_never_all(share, n, expected):
    assert held_out_count(share, n) == expected


def test_an_image_in_two_splits_is_named_by_both_files(tmp_path, capsys):
    """A val JPEG that is a byte copy of a train JPEG (as happens in scraped datasets): with val kept as
    test by val_from_train, preprocess names the pair in stats.json and on stderr."""
    import zipfile

    archive = write_archive("tiny-imagenet", tmp_path / "raw" / "clean.zip", num_classes=3, train_per_class=6,
                            val_per_class=2, test_images=1, seed=3)
    copied = tmp_path / "raw" / "tiny-imagenet-200.zip"
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(copied, "w") as dst:
        names = src.namelist()
        train_member = next(n for n in names if "/train/" in n and n.endswith(".JPEG"))
        val_member = next(n for n in names if "/val/images/" in n)
        for name in names:
            dst.writestr(src.getinfo(name), src.read(train_member if name == val_member else name))
    stats = prepare(copied, tmp_path / "prepared", "tiny-imagenet",
                    PrepareOptions(workers=1, progress=False, val_from_train=0.2)).stats
    duplicates = stats["duplicates_across_splits"]
    assert duplicates["count"] == 1 and duplicates["first"] == [[train_member, val_member]]
    assert "1 image(s) are pixel-identical to images of an earlier split" in capsys.readouterr().err
    clean = prepare(archive, tmp_path / "clean", "tiny-imagenet", PrepareOptions(workers=1, progress=False)).stats
    assert clean["duplicates_across_splits"] == {"count": 0, "first": []}
