"""tinyclf.data.formats.tiny_imagenet: the Tiny ImageNet zip read into prepared arrays, and its
generated stand-in written in the exact official layout.

Archives are real files: small zips built member by member (tests/support/data_archives.py, with
the awkward members a real archive has: grayscale, CMYK, alpha, palette), the generated stand-in,
and the real subset (../shared/data/tiny-imagenet-200-subset.zip): what a faithful reading of the
published archive must give, checked against the archive itself and against PIL as an independent
decoder (those tests skip when the subset is not present).
"""

from __future__ import annotations

import io
import re
import zipfile

import numpy as np
import pytest
from PIL import Image
from support.data_archives import (ROOT, TRAIN_PER_CLASS, VAL_LABELS, WNIDS, WORDS, build_tiny_zip, color,
                                   jpeg)
from support.helpers import REAL_SUBSET

from tinyclf.data import arrays
from tinyclf.data.formats import tiny_imagenet
from tinyclf.data.formats.contract import PrepareOptions
from tinyclf.data.formats.generated import is_generated, write_archive
from tinyclf.data.formats.synthetic import class_description
from tinyclf.data.preprocess import prepare
from tinyclf.errors import PrepareError

REAL_TRAIN_PER_CLASS = 100  # the subset keeps the first 100 train images of each class


# ------------------------------------------------------------------------------ reading the zip


def test_tiny_imagenet_arrays_labels_and_classes(tiny_zip, tmp_path):
    out = tmp_path / "prepared"
    summary = prepare(tiny_zip, out, "tiny-imagenet", PrepareOptions(workers=1, progress=False))

    train_x, train_y = arrays.load_split(out, "train")
    val_x, val_y = arrays.load_split(out, "val")
    assert isinstance(train_x, np.memmap)
    assert train_x.shape == (3 * TRAIN_PER_CLASS, 64, 64, 3) and val_x.shape == (len(VAL_LABELS), 64, 64, 3)
    assert train_x.dtype == np.uint8 and train_y.dtype == np.int64 and val_y.dtype == np.int64
    assert train_x.flags["C_CONTIGUOUS"] and val_x.flags["C_CONTIGUOUS"]

    # Class order and names: wnids.txt order, synonyms from words.txt verbatim.
    classes = arrays.load_classes(out)
    assert classes["dataset"] == "tiny-imagenet" and classes["generated"] is False
    assert [c["id"] for c in classes["classes"]] == WNIDS
    assert [c["index"] for c in classes["classes"]] == [0, 1, 2]
    assert [c["name"] for c in classes["classes"]] == [WORDS[w] for w in WNIDS]

    # Train: grouped by class in wnids order, images in natural order (_2 before _10).
    assert train_y.tolist() == [c for c in range(3) for _ in range(TRAIN_PER_CLASS)]
    for row, (c, i) in enumerate((c, i) for c in range(3) for i in range(TRAIN_PER_CLASS)):
        if (WNIDS[c], i) in {("n0000001", 0), ("n0000001", 1), ("n0000002", 0), ("n0000002", 1)}:
            continue  # the odd members, checked below
        assert np.abs(train_x[row].astype(int) - color(c, i)).max() <= 3, (row, c, i)
    # Val: labels from val_annotations.txt, rows in its order.
    assert val_y.tolist() == [WNIDS.index(w) for w in VAL_LABELS]
    assert np.abs(val_x[0].astype(int) - color(WNIDS.index(VAL_LABELS[0]), 20)).max() <= 3

    # Conversions: grayscale -> three equal channels, CMYK/RGBA/palette -> their RGB colour.
    gold, tabby = TRAIN_PER_CLASS * WNIDS.index("n0000001"), TRAIN_PER_CLASS * WNIDS.index("n0000002")
    gray = train_x[gold]
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    assert abs(int(gray[0, 0, 0]) - 90) <= 2
    assert (val_x[1][..., 0] == val_x[1][..., 2]).all()
    assert np.abs(train_x[gold + 1].astype(int) - (30, 90, 200)).max() <= 6  # CMYK
    assert (train_x[tabby] == (10, 200, 30)).all()  # RGBA: alpha dropped
    assert (train_x[tabby + 1] == (255, 0, 51)).all()  # palette

    stats = arrays.load_stats(out)
    assert stats == summary.stats
    assert stats["dataset"] == "tiny-imagenet" and stats["image_size"] == [64, 64] and stats["generated"] is False
    assert stats["splits"]["train"]["converted"] == {"grayscale": 1, "palette": 1, "cmyk": 1, "rgba": 1, "16bit": 0,
                                                     "other": 0}
    assert stats["splits"]["val"]["converted"] == {"grayscale": 1, "palette": 0, "cmyk": 0, "rgba": 0, "16bit": 0,
                                                   "other": 0}
    assert stats["splits"]["train"]["per_class"] == [TRAIN_PER_CLASS] * 3
    assert stats["splits"]["val"]["per_class"] == [VAL_LABELS.count(w) for w in WNIDS]
    assert stats["splits"]["train"]["count"] == 36 and stats["splits"]["val"]["count"] == 6
    assert stats["splits"]["train"]["resized"] == 0 and stats["splits"]["train"]["skipped"] == []
    # mean/std: of the train split on the 0-1 scale, as numpy computes them from the array.
    pixels = np.asarray(train_x, dtype=np.float64).reshape(-1, 3) / 255
    np.testing.assert_allclose(stats["mean"], pixels.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(stats["std"], pixels.std(axis=0), atol=1e-6)


def test_generated_tiny_imagenet_is_marked_generated(tmp_path):
    archive = write_archive("tiny-imagenet", tmp_path / "t.zip", num_classes=4, train_per_class=30,
                            val_per_class=5, test_images=3, seed=0)
    summary = prepare(archive, tmp_path / "p", "tiny-imagenet", PrepareOptions(workers=1, progress=False))
    classes = arrays.load_classes(tmp_path / "p")
    assert classes["generated"] is True and summary.stats["generated"] is True
    assert [c["id"] for c in classes["classes"]] == [f"g{c:07d}" for c in range(4)]
    assert summary.stats["splits"]["train"]["per_class"] == [30] * 4
    assert summary.stats["splits"]["train"]["converted"]["grayscale"] >= 1  # the generator's 1-in-50 grayscale
    assert "GENERATED" in summary.describe()


def test_a_member_of_another_size_is_not_the_published_archive(tmp_path):
    member = f"{ROOT}val/images/val_3.JPEG"
    archive = build_tiny_zip(tmp_path / "a.zip", special={"val_3.JPEG": jpeg((1, 2, 3), size=500)})
    with pytest.raises(PrepareError, match=rf"member {member} cannot be decoded: is 500x500, not 64x64"):
        prepare(archive, tmp_path / "out", "tiny-imagenet", PrepareOptions(workers=1, progress=False))


def test_not_a_zip_archive(tmp_path):
    junk = tmp_path / "tiny-imagenet-200.zip"
    junk.write_text("<html>404 not found</html>")
    with pytest.raises(PrepareError, match=r"tiny-imagenet-200\.zip: not a zip archive"):
        prepare(junk, tmp_path / "out", "tiny-imagenet", PrepareOptions(progress=False))
    assert not (tmp_path / "out").exists()


def test_zip_without_wnids_or_annotations(tmp_path):
    with pytest.raises(PrepareError, match=r"no wnids\.txt inside"):
        tiny_imagenet.read_index(build_tiny_zip(tmp_path / "a.zip", drop=("wnids.txt",)))
    with pytest.raises(PrepareError, match=r"val_annotations\.txt inside"):
        tiny_imagenet.read_index(build_tiny_zip(tmp_path / "b.zip", drop=("val_annotations.txt",)))
    with pytest.raises(PrepareError, match=r"val_5\.JPEG, which the archive lacks"):
        tiny_imagenet.read_index(build_tiny_zip(tmp_path / "c.zip", drop=("val_5.JPEG",)))


# ------------------------------------------------------------------------------ the generated stand-in


def _layout_pattern(names: list[str], wnids: list[str]) -> tuple[list[str], int]:
    """The archive's shape: member names as templates (<wnid>, <n>) in order of first appearance,
    and the number of runs of equal templates (images then boxes, once per class, means 2 x classes)."""
    runs = []
    for name in names:
        parts = name.split("/")
        if len(parts) > 2 and parts[1] == "train":
            name = name.replace(parts[2], "<wnid>")
        name = re.sub(r"_\d+\.JPEG$", "_<n>.JPEG", name)
        if not runs or runs[-1] != name:
            runs.append(name)
    return list(dict.fromkeys(runs)), len(runs) - 2 * len(wnids)


BOX_LINE = re.compile(r"(?P<file>[^\t]+)\t(\d+)\t(\d+)\t(\d+)\t(\d+)")
VAL_LINE = re.compile(r"val_(\d+)\.JPEG\t([gn]\d{8}|g\d{7})\t(\d+)\t(\d+)\t(\d+)\t(\d+)")


def test_tiny_imagenet_member_layout(generated_tiny_zip):
    with zipfile.ZipFile(generated_tiny_zip) as zf:
        names = zf.namelist()
        wnids = zf.read("tiny-imagenet-200/wnids.txt").decode().split("\n")
    assert wnids[-1] == "" and wnids[:-1] == [f"g{c:07d}" for c in range(10)]  # final newline, g ids
    wnids = wnids[:-1]
    expected = ["tiny-imagenet-200/wnids.txt", "tiny-imagenet-200/words.txt"]
    for w in wnids:
        expected += [f"tiny-imagenet-200/train/{w}/images/{w}_{i}.JPEG" for i in range(50)]
        expected.append(f"tiny-imagenet-200/train/{w}/{w}_boxes.txt")
    expected.append("tiny-imagenet-200/val/val_annotations.txt")
    expected += [f"tiny-imagenet-200/val/images/val_{i}.JPEG" for i in range(100)]
    expected += [f"tiny-imagenet-200/test/images/test_{i}.JPEG" for i in range(7)]
    assert names == expected


def test_tiny_imagenet_matches_real_subset_structure(generated_tiny_zip):
    if not REAL_SUBSET.exists():
        pytest.skip(f"real subset not present at {REAL_SUBSET}")
    with zipfile.ZipFile(REAL_SUBSET) as real, zipfile.ZipFile(generated_tiny_zip) as gen:
        real_wnids = real.read("tiny-imagenet-200/wnids.txt").decode().split()
        gen_wnids = gen.read("tiny-imagenet-200/wnids.txt").decode().split()
        assert _layout_pattern(gen.namelist(), gen_wnids) == _layout_pattern(real.namelist(), real_wnids)
        for zf in (real, gen):
            words = zf.read("tiny-imagenet-200/words.txt").decode()
            assert not words.endswith("\n") and all(re.fullmatch(r"[gn]\d+\t.+", l) for l in words.split("\n")[:500])
            assert zf.read("tiny-imagenet-200/wnids.txt").endswith(b"\n")
            w = (real_wnids if zf is real else gen_wnids)[0]
            boxes = zf.read(f"tiny-imagenet-200/train/{w}/{w}_boxes.txt").decode()
            assert boxes.endswith("\n")
            for i, line in enumerate(boxes.splitlines()):
                m = BOX_LINE.fullmatch(line)
                assert m and m["file"] == f"{w}_{i}.JPEG", line
            val = zf.read("tiny-imagenet-200/val/val_annotations.txt").decode()
            assert val.endswith("\n")
            lines = val.splitlines()
            assert all(VAL_LINE.fullmatch(l) for l in lines)
            assert [int(VAL_LINE.fullmatch(l)[1]) for l in lines] == list(range(len(lines)))
            info = zf.getinfo(f"tiny-imagenet-200/train/{w}/images/{w}_0.JPEG")
            assert (info.compress_type, info.create_system, info.external_attr >> 16 & 0o170000) == (
                zipfile.ZIP_DEFLATED, 3, 0o100000)
    assert is_generated(generated_tiny_zip) and not is_generated(REAL_SUBSET)


def test_tiny_imagenet_images_labels_and_grayscale(generated_tiny_zip):
    with zipfile.ZipFile(generated_tiny_zip) as zf:
        assert zf.comment == b"tinyclf-generated"
        modes = {}
        for name in zf.namelist():
            if name.endswith(".JPEG"):
                img = Image.open(io.BytesIO(zf.read(name)))
                assert img.format == "JPEG" and img.size == (64, 64), name
                modes[img.mode] = modes.get(img.mode, 0) + 1
        words = dict(l.split("\t") for l in zf.read("tiny-imagenet-200/words.txt").decode().split("\n"))
        val = [l.split("\t") for l in zf.read("tiny-imagenet-200/val/val_annotations.txt").decode().splitlines()]
    assert set(modes) == {"RGB", "L"}
    total = sum(modes.values())
    assert 0.01 <= modes["L"] / total <= 0.04, modes  # ~2%, like the real set
    assert words["g0000003"] == class_description(3) and "generated" in words["g0000003"]
    counts = {}
    for _, wnid, *box in val:
        counts[wnid] = counts.get(wnid, 0) + 1
        x0, y0, x1, y1 = map(int, box)
        assert 0 <= x0 <= x1 <= 63 and 0 <= y0 <= y1 <= 63
    assert counts == {f"g{c:07d}": 10 for c in range(10)}


# ------------------------------------------------------------------------------ the real subset


@pytest.fixture(scope="module")
def real_prepared(tmp_path_factory):
    if not REAL_SUBSET.exists():
        pytest.skip(f"real Tiny ImageNet subset not present at {REAL_SUBSET}")
    out = tmp_path_factory.mktemp("real") / "prepared"
    summary = prepare(REAL_SUBSET, out, "tiny-imagenet", PrepareOptions(workers=0, progress=False))
    return out, summary


@pytest.fixture(scope="module")
def real_archive():
    if not REAL_SUBSET.exists():
        pytest.skip(f"real Tiny ImageNet subset not present at {REAL_SUBSET}")
    with zipfile.ZipFile(REAL_SUBSET) as zf:
        yield zf


def test_classes_in_wnids_order_with_words_names(real_prepared, real_archive):
    out, _ = real_prepared
    wnids = real_archive.read(ROOT + "wnids.txt").decode().split()
    classes = arrays.load_classes(out)
    assert len(wnids) == 200
    assert [c["id"] for c in classes["classes"]] == wnids
    assert [c["index"] for c in classes["classes"]] == list(range(200))
    assert classes["dataset"] == "tiny-imagenet" and classes["generated"] is False
    words = dict(line.split("\t", 1) for line in real_archive.read(ROOT + "words.txt").decode().split("\n"))
    assert len(words) == 82115
    assert all(c["name"] == words[c["id"]] for c in classes["classes"])
    by_id = {c["id"]: c["name"] for c in classes["classes"]}
    assert by_id["n01443537"] == "goldfish, Carassius auratus"
    assert by_id["n02124075"] == "Egyptian cat"


def test_counts_shapes_and_labels(real_prepared, real_archive):
    out, summary = real_prepared
    train_x, train_y = arrays.load_split(out, "train")
    val_x, val_y = arrays.load_split(out, "val")
    assert train_x.shape == (20000, 64, 64, 3) and val_x.shape == (10000, 64, 64, 3)
    assert train_x.dtype == val_x.dtype == np.uint8 and train_y.dtype == val_y.dtype == np.int64
    assert train_x.flags["C_CONTIGUOUS"]
    assert train_y.tolist() == [c for c in range(200) for _ in range(REAL_TRAIN_PER_CLASS)]

    wnids = real_archive.read(ROOT + "wnids.txt").decode().split()
    # Known entries of val_annotations.txt, then the whole file line by line.
    assert wnids[val_y[0]] == "n03444034" and wnids[val_y[1]] == "n04067472" and wnids[val_y[2]] == "n04070727"
    lines = real_archive.read(ROOT + "val/val_annotations.txt").decode().splitlines()
    assert [line.split("\t")[0] for line in lines] == [f"val_{i}.JPEG" for i in range(10000)]
    assert [wnids[y] for y in val_y] == [line.split("\t")[1] for line in lines]

    stats = summary.stats
    assert stats["splits"]["train"]["per_class"] == [100] * 200 and stats["splits"]["val"]["per_class"] == [50] * 200
    assert stats["splits"]["train"]["resized"] == 0 and stats["splits"]["train"]["skipped"] == []
    np.testing.assert_allclose(stats["mean"], [0.4814, 0.4491, 0.3986], atol=2e-4)  # measured on this subset


def test_pixels_match_pil_and_grayscale_converted(real_prepared, real_archive):
    """Rows equal PIL's decode + convert("RGB") of the member they should come from."""
    out, summary = real_prepared
    train_x, _ = arrays.load_split(out, "train")
    val_x, _ = arrays.load_split(out, "val")
    wnids = real_archive.read(ROOT + "wnids.txt").decode().split()
    rows = [("train", r) for r in range(0, 20000, 97)] + [("val", r) for r in range(0, 10000, 101)]
    gray_seen = 0
    for split, row in rows:
        if split == "train":
            wnid = wnids[row // REAL_TRAIN_PER_CLASS]
            member, ours = f"{ROOT}train/{wnid}/images/{wnid}_{row % REAL_TRAIN_PER_CLASS}.JPEG", train_x[row]
        else:
            member, ours = f"{ROOT}val/images/val_{row}.JPEG", val_x[row]
        pil = Image.open(io.BytesIO(real_archive.read(member)))
        if pil.mode == "L":
            gray_seen += 1
            assert (ours[..., 0] == ours[..., 1]).all() and (ours[..., 1] == ours[..., 2]).all(), member
        np.testing.assert_array_equal(ours, np.asarray(pil.convert("RGB")), err_msg=member)

    converted = {split: summary.stats["splits"][split]["converted"] for split in ("train", "val")}
    assert converted["train"]["grayscale"] > 0 and converted["val"]["grayscale"] > 0
    assert converted["train"]["cmyk"] == converted["train"]["rgba"] == 0
    # Every grayscale JPEG is counted: the count equals the one-component JPEGs in the archive.
    gray_members = sum(
        1 for name in real_archive.namelist()
        if name.startswith(ROOT + "train/") and name.endswith(".JPEG")
        and Image.open(io.BytesIO(real_archive.read(name))).mode == "L"
    )
    assert converted["train"]["grayscale"] == gray_members
    assert gray_seen > 0
