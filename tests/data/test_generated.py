"""Generated archives: the exact official formats (compared with the real files where present),
grayscale JPEGs, Python-2 CIFAR pickles read by torchvision, byte-identical output."""

from __future__ import annotations

import hashlib
import io
import pickle
import pickletools
import re
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support.helpers import REAL_SUBSET, SHARED_DATA, torchvision_cifar_splits

from tinyclf.data.cifar_python import py2_pickle
from tinyclf.data.formats.cifar10 import LABEL_NAMES as CIFAR10_LABEL_NAMES
from tinyclf.data.formats.cifar10 import meta_bytes as cifar10_meta_bytes
from tinyclf.data.formats.generated import is_generated, write_archive
from tinyclf.data.synthetic import class_description

REAL_META = SHARED_DATA / "cifar-10-batches-py-meta" / "batches.meta"
META_MD5 = "5ff9c542aee3614f3951f8cda6e48888"  # torchvision's md5 of the official batches.meta

SMALL = dict(num_classes=10, train_per_class=50, val_per_class=10, test_images=7, seed=3)


@pytest.fixture(scope="module")
def tiny_zip(tmp_path_factory) -> Path:
    return write_archive("tiny-imagenet", tmp_path_factory.mktemp("tiny") / "tiny-imagenet-200.zip", **SMALL)


@pytest.fixture(scope="module")
def cifar_tgz(tmp_path_factory) -> Path:
    return write_archive("cifar10", tmp_path_factory.mktemp("cifar") / "cifar-10-python.tar.gz", **SMALL)


# --- Tiny ImageNet -------------------------------------------------------------------------------


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


def test_tiny_imagenet_member_layout(tiny_zip):
    with zipfile.ZipFile(tiny_zip) as zf:
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


def test_tiny_imagenet_matches_real_subset_structure(tiny_zip):
    if not REAL_SUBSET.exists():
        pytest.skip(f"real subset not present at {REAL_SUBSET}")
    with zipfile.ZipFile(REAL_SUBSET) as real, zipfile.ZipFile(tiny_zip) as gen:
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
    assert is_generated(tiny_zip) and not is_generated(REAL_SUBSET)


def test_tiny_imagenet_images_labels_and_grayscale(tiny_zip):
    with zipfile.ZipFile(tiny_zip) as zf:
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


def test_classes_differ_in_pixels(tiny_zip):
    """Not a learnability proof (training shows that), but class means must differ clearly."""
    with zipfile.ZipFile(tiny_zip) as zf:
        means = []
        for c in range(10):
            w = f"g{c:07d}"
            imgs = [np.asarray(Image.open(io.BytesIO(zf.read(f"tiny-imagenet-200/train/{w}/images/{w}_{i}.JPEG")))
                               .convert("RGB"), np.float32) for i in range(10)]
            means.append(np.mean([im.reshape(-1, 3).max(0) for im in imgs], 0))  # the dominant bright colour
    means = np.array(means)
    dist = np.linalg.norm(means[:, None] - means[None], axis=-1) + np.eye(10) * 1e9
    assert dist.min() > 20, dist.min()


def test_deterministic_bytes(tmp_path, tiny_zip, cifar_tgz):
    again_zip = write_archive("tiny-imagenet", tmp_path / "a.zip", **SMALL)
    again_tgz = write_archive("cifar10", tmp_path / "b.tar.gz", **SMALL)
    assert again_zip.read_bytes() == tiny_zip.read_bytes()
    assert again_tgz.read_bytes() == cifar_tgz.read_bytes()
    other = write_archive("cifar10", tmp_path / "c.tar.gz", **{**SMALL, "seed": 4})
    assert other.read_bytes() != cifar_tgz.read_bytes()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []  # atomic: no temp left


def test_write_archive_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="exactly 10 classes"):
        write_archive("cifar10", tmp_path / "x", **{**SMALL, "num_classes": 12})
    with pytest.raises(ValueError, match="unknown dataset"):
        write_archive("mnist", tmp_path / "x", **SMALL)
    assert not (tmp_path / "x").exists()


def test_is_generated_rejects_other_files(tmp_path):
    junk = tmp_path / "page.html"
    junk.write_bytes(b"<html>not an archive</html>")
    with pytest.raises(ValueError, match="neither a zip nor a gzip"):
        is_generated(junk)


# --- CIFAR-10 ------------------------------------------------------------------------------------


def test_cifar_members_and_marker(cifar_tgz):
    with tarfile.open(cifar_tgz, "r:gz") as tf:
        names = tf.getnames()
        readme = tf.extractfile("cifar-10-batches-py/readme.html").read().decode()
        members = tf.getmembers()
    assert set(names) == {"cifar-10-batches-py", "cifar-10-batches-py/tinyclf-generated",
                          "cifar-10-batches-py/batches.meta", "cifar-10-batches-py/readme.html",
                          "cifar-10-batches-py/test_batch"} | {f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)}
    assert "tinyclf-generated" in readme
    assert all(m.mtime == members[0].mtime and m.uid == 0 and m.uname == "" for m in members)
    assert is_generated(cifar_tgz)


def test_plain_cifar_tar_is_not_generated(tmp_path):
    path = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        info = tarfile.TarInfo("cifar-10-batches-py/batches.meta")
        data = cifar10_meta_bytes()
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    assert not is_generated(path)


def _batch(cifar_tgz, name) -> bytes:
    with tarfile.open(cifar_tgz, "r:gz") as tf:
        return tf.extractfile(f"cifar-10-batches-py/{name}").read()


def test_cifar_batches_are_python2_pickles(cifar_tgz):
    raw = _batch(cifar_tgz, "data_batch_1")
    ops = {op.name for op, _, _ in pickletools.genops(raw)}
    assert {"SHORT_BINSTRING", "BINSTRING"} <= ops and not ops & {"BINUNICODE", "SHORT_BINUNICODE", "BINBYTES"}
    latin1 = pickle.loads(raw, encoding="latin1")
    assert list(latin1) == ["batch_label", "labels", "data", "filenames"]
    assert latin1["batch_label"] == "training batch 1 of 5"
    data = latin1["data"]
    assert data.dtype == np.uint8 and data.shape == (100, 3072) and data.flags.c_contiguous
    assert len(latin1["labels"]) == 100 and all(isinstance(y, int) and 0 <= y < 10 for y in latin1["labels"])
    assert all(isinstance(f, str) and f.endswith(".png") for f in latin1["filenames"])
    as_bytes = pickle.loads(raw, encoding="bytes")
    assert set(as_bytes) == {b"batch_label", b"labels", b"data", b"filenames"}
    np.testing.assert_array_equal(as_bytes[b"data"], data)
    with pytest.raises(UnicodeDecodeError):
        pickle.loads(raw)  # default ASCII decoding fails, as on the real batches
    test = pickle.loads(_batch(cifar_tgz, "test_batch"), encoding="latin1")
    assert test["batch_label"] == "testing batch 1 of 1" and np.bincount(test["labels"]).tolist() == [10] * 10


def test_cifar_meta_is_the_official_bytes(cifar_tgz):
    meta = _batch(cifar_tgz, "batches.meta")
    assert meta == cifar10_meta_bytes()
    assert hashlib.md5(meta).hexdigest() == META_MD5
    assert pickle.loads(meta, encoding="latin1")["label_names"] == list(CIFAR10_LABEL_NAMES)
    if not REAL_META.exists():
        pytest.skip(f"real batches.meta not present at {REAL_META}")
    assert meta == REAL_META.read_bytes()


def test_py2_pickle_round_trips_memo_beyond_255():
    obj = {"names": [f"n{i}" for i in range(1500)], "x": -1, "big": 70000, "t": (1, "a", None, True)}
    assert pickle.loads(py2_pickle(obj), encoding="latin1") == {**obj, "t": (1, "a", None, True)}


def test_torchvision_reads_extracted_archive(cifar_tgz, tmp_path):
    train, test = torchvision_cifar_splits(cifar_tgz, "CIFAR10", tmp_path)
    assert train.data.shape == (500, 32, 32, 3) and test.data.shape == (100, 32, 32, 3)
    assert train.classes == list(CIFAR10_LABEL_NAMES)
    assert np.bincount(train.targets).tolist() == [50] * 10
    img, label = train[0]
    assert img.size == (32, 32) and img.mode == "RGB" and 0 <= label < 10
    # Rows are R, G, B planes: a red-disc (airplane = class 0) image is red where it is brightest.
    reds = train.data[np.array(train.targets) == 0].reshape(-1, 3).astype(int)
    bright = reds[reds.sum(1) > 300]
    assert (bright[:, 0] > bright[:, 2]).mean() > 0.9
