"""preprocess on the real Tiny ImageNet subset (../shared/data/tiny-imagenet-200-subset.zip).

Checks what a faithful reading of the published archive must give, against the archive itself
and against PIL as an independent decoder. Skips when the subset is not present.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from PIL import Image
from support.helpers import REAL_SUBSET

from tinyclf.data import arrays
from tinyclf.data.formats.contract import PrepareOptions
from tinyclf.data.preprocess import prepare

pytestmark = pytest.mark.skipif(not REAL_SUBSET.exists(), reason=f"real Tiny ImageNet subset not present at {REAL_SUBSET}")

ROOT = "tiny-imagenet-200/"
TRAIN_PER_CLASS = 100  # the subset keeps the first 100 train images of each class


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("real") / "prepared"
    summary = prepare(REAL_SUBSET, out, "tiny-imagenet", PrepareOptions(workers=0, progress=False))
    return out, summary


@pytest.fixture(scope="module")
def archive():
    with zipfile.ZipFile(REAL_SUBSET) as zf:
        yield zf


def test_classes_in_wnids_order_with_words_names(prepared, archive):
    out, _ = prepared
    wnids = archive.read(ROOT + "wnids.txt").decode().split()
    classes = arrays.load_classes(out)
    assert len(wnids) == 200
    assert [c["id"] for c in classes["classes"]] == wnids
    assert [c["index"] for c in classes["classes"]] == list(range(200))
    assert classes["dataset"] == "tiny-imagenet" and classes["generated"] is False
    words = dict(line.split("\t", 1) for line in archive.read(ROOT + "words.txt").decode().split("\n"))
    assert len(words) == 82115
    assert all(c["name"] == words[c["id"]] for c in classes["classes"])
    by_id = {c["id"]: c["name"] for c in classes["classes"]}
    assert by_id["n01443537"] == "goldfish, Carassius auratus"
    assert by_id["n02124075"] == "Egyptian cat"


def test_counts_shapes_and_labels(prepared, archive):
    out, summary = prepared
    train_x, train_y = arrays.load_split(out, "train")
    val_x, val_y = arrays.load_split(out, "val")
    assert train_x.shape == (20000, 64, 64, 3) and val_x.shape == (10000, 64, 64, 3)
    assert train_x.dtype == val_x.dtype == np.uint8 and train_y.dtype == val_y.dtype == np.int64
    assert train_x.flags["C_CONTIGUOUS"]
    assert train_y.tolist() == [c for c in range(200) for _ in range(TRAIN_PER_CLASS)]

    wnids = archive.read(ROOT + "wnids.txt").decode().split()
    # Known entries of val_annotations.txt, then the whole file line by line.
    assert wnids[val_y[0]] == "n03444034" and wnids[val_y[1]] == "n04067472" and wnids[val_y[2]] == "n04070727"
    lines = archive.read(ROOT + "val/val_annotations.txt").decode().splitlines()
    assert [line.split("\t")[0] for line in lines] == [f"val_{i}.JPEG" for i in range(10000)]
    assert [wnids[y] for y in val_y] == [line.split("\t")[1] for line in lines]

    stats = summary.stats
    assert stats["splits"]["train"]["per_class"] == [100] * 200 and stats["splits"]["val"]["per_class"] == [50] * 200
    assert stats["splits"]["train"]["resized"] == 0 and stats["splits"]["train"]["skipped"] == []
    np.testing.assert_allclose(stats["mean"], [0.4814, 0.4491, 0.3986], atol=2e-4)  # measured on this subset


def test_pixels_match_pil_and_grayscale_converted(prepared, archive):
    """Rows equal PIL's decode + convert("RGB") of the member they should come from."""
    out, summary = prepared
    train_x, _ = arrays.load_split(out, "train")
    val_x, _ = arrays.load_split(out, "val")
    wnids = archive.read(ROOT + "wnids.txt").decode().split()
    rows = [("train", r) for r in range(0, 20000, 97)] + [("val", r) for r in range(0, 10000, 101)]
    gray_seen = 0
    for split, row in rows:
        if split == "train":
            wnid = wnids[row // TRAIN_PER_CLASS]
            member, ours = f"{ROOT}train/{wnid}/images/{wnid}_{row % TRAIN_PER_CLASS}.JPEG", train_x[row]
        else:
            member, ours = f"{ROOT}val/images/val_{row}.JPEG", val_x[row]
        pil = Image.open(io.BytesIO(archive.read(member)))
        if pil.mode == "L":
            gray_seen += 1
            assert (ours[..., 0] == ours[..., 1]).all() and (ours[..., 1] == ours[..., 2]).all(), member
        np.testing.assert_array_equal(ours, np.asarray(pil.convert("RGB")), err_msg=member)

    converted = {split: summary.stats["splits"][split]["converted"] for split in ("train", "val")}
    assert converted["train"]["grayscale"] > 0 and converted["val"]["grayscale"] > 0
    assert converted["train"]["cmyk"] == converted["train"]["rgba"] == 0
    # Every grayscale JPEG is counted: the count equals the one-component JPEGs in the archive.
    gray_members = sum(
        1 for name in archive.namelist()
        if name.startswith(ROOT + "train/") and name.endswith(".JPEG") and Image.open(io.BytesIO(archive.read(name))).mode == "L"
    )
    assert converted["train"]["grayscale"] == gray_members
    assert gray_seen > 0
