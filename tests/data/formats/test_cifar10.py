"""tinyclf.data.formats.cifar10: the CIFAR-10 python archive read into prepared arrays (exactly what
torchvision's CIFAR10 yields), and its generated stand-in in the exact official format (compared
with the real batches.meta where present): Python-2 pickles that torchvision reads."""

from __future__ import annotations

import hashlib
import io
import pickle
import pickletools
import tarfile

import numpy as np
import pytest
from support.data_archives import build_tiny_zip
from support.helpers import SHARED_DATA, torchvision_cifar_splits

from tinyclf.data import arrays
from tinyclf.data.formats import cifar10
from tinyclf.data.formats.cifar10 import LABEL_NAMES as CIFAR10_LABEL_NAMES
from tinyclf.data.formats.cifar10 import meta_bytes as cifar10_meta_bytes
from tinyclf.data.formats.contract import PrepareOptions
from tinyclf.data.formats.generated import is_generated
from tinyclf.data.preprocess import prepare
from tinyclf.errors import PrepareError

REAL_META = SHARED_DATA / "cifar-10-batches-py-meta" / "batches.meta"
META_MD5 = "5ff9c542aee3614f3951f8cda6e48888"  # torchvision's md5 of the official batches.meta


# ------------------------------------------------------------------------------ reading the archive


def test_cifar10_equals_torchvision(cifar10_archive, tmp_path):
    """Our arrays are exactly what torchvision's CIFAR10 yields from the extracted archive."""
    from torchvision.datasets import CIFAR10

    class LocalCIFAR10(CIFAR10):
        # torchvision checks each batch against the official md5; these are generated batches.
        def _check_integrity(self) -> bool:
            return True

    with tarfile.open(cifar10_archive) as tar:
        tar.extractall(tmp_path / "extracted", filter="data")
    prepare(cifar10_archive, tmp_path / "p", "cifar10", PrepareOptions(progress=False))
    classes = arrays.load_classes(tmp_path / "p")
    for split, train in (("train", True), ("val", False)):
        ours_x, ours_y = arrays.load_split(tmp_path / "p", split)
        theirs = LocalCIFAR10(tmp_path / "extracted", train=train, download=False)
        assert ours_x.shape == theirs.data.shape == (150 if train else 60, 32, 32, 3)
        np.testing.assert_array_equal(ours_x, theirs.data)
        assert ours_y.tolist() == list(theirs.targets)
        assert [c["name"] for c in classes["classes"]] == theirs.classes
        # And __getitem__'s PIL image is the same pixels.
        img, target = theirs[7]
        np.testing.assert_array_equal(np.asarray(img), ours_x[7])
        assert target == ours_y[7]
    assert [c["id"] for c in classes["classes"]][:2] == ["airplane", "automobile"]
    stats = arrays.load_stats(tmp_path / "p")
    assert stats["generated"] is True and stats["splits"]["train"]["per_class"] == [15] * 10
    assert stats["splits"]["train"]["converted"] == {"grayscale": 0, "palette": 0, "cmyk": 0, "rgba": 0, "16bit": 0,
                                                     "other": 0}


def test_cifar10_resize(cifar10_archive, tmp_path):
    prepare(cifar10_archive, tmp_path / "p", "cifar10", PrepareOptions(image_size=16, progress=False))
    x, y = arrays.load_split(tmp_path / "p", "val")
    assert x.shape == (60, 16, 16, 3) and len(y) == 60
    assert arrays.load_stats(tmp_path / "p")["splits"]["val"]["resized"] == 60


def test_not_a_gzip_tar_archive(tmp_path):
    junk = tmp_path / "tiny-imagenet-200.zip"
    junk.write_text("<html>404 not found</html>")
    with pytest.raises(PrepareError, match=r"tiny-imagenet-200\.zip: not a gzip-compressed tar archive"):
        prepare(junk, tmp_path / "out", "cifar10", PrepareOptions(progress=False))
    # The other dataset's archive: clear, names the file.
    tiny = build_tiny_zip(tmp_path / "t.zip")
    with pytest.raises(PrepareError, match=r"t\.zip: not a gzip-compressed tar archive"):
        cifar10.read(tiny, PrepareOptions())
    assert not (tmp_path / "out").exists()


def test_tar_without_batches(tmp_path):
    path = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/readme.html")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    with pytest.raises(PrepareError, match=r"no batches\.meta, data_batch_1.*test_batch inside"):
        cifar10.read(path, PrepareOptions())


# ------------------------------------------------------------------------------ the generated stand-in


def test_cifar_members_and_marker(generated_cifar10_tgz):
    with tarfile.open(generated_cifar10_tgz, "r:gz") as tf:
        names = tf.getnames()
        readme = tf.extractfile("cifar-10-batches-py/readme.html").read().decode()
        members = tf.getmembers()
    assert set(names) == {"cifar-10-batches-py", "cifar-10-batches-py/tinyclf-generated",
                          "cifar-10-batches-py/batches.meta", "cifar-10-batches-py/readme.html",
                          "cifar-10-batches-py/test_batch"} | {f"cifar-10-batches-py/data_batch_{i}"
                                                               for i in range(1, 6)}
    assert "tinyclf-generated" in readme
    assert all(m.mtime == members[0].mtime and m.uid == 0 and m.uname == "" for m in members)
    assert is_generated(generated_cifar10_tgz)


def test_plain_cifar_tar_is_not_generated(tmp_path):
    path = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        info = tarfile.TarInfo("cifar-10-batches-py/batches.meta")
        data = cifar10_meta_bytes()
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    assert not is_generated(path)


def _batch(generated_cifar10_tgz, name) -> bytes:
    with tarfile.open(generated_cifar10_tgz, "r:gz") as tf:
        return tf.extractfile(f"cifar-10-batches-py/{name}").read()


def test_cifar_batches_are_python2_pickles(generated_cifar10_tgz):
    raw = _batch(generated_cifar10_tgz, "data_batch_1")
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
    test = pickle.loads(_batch(generated_cifar10_tgz, "test_batch"), encoding="latin1")
    assert test["batch_label"] == "testing batch 1 of 1" and np.bincount(test["labels"]).tolist() == [10] * 10


def test_cifar_meta_is_the_official_bytes(generated_cifar10_tgz):
    meta = _batch(generated_cifar10_tgz, "batches.meta")
    assert meta == cifar10_meta_bytes()
    assert hashlib.md5(meta).hexdigest() == META_MD5
    assert pickle.loads(meta, encoding="latin1")["label_names"] == list(CIFAR10_LABEL_NAMES)
    if not REAL_META.exists():
        pytest.skip(f"real batches.meta not present at {REAL_META}")
    assert meta == REAL_META.read_bytes()


def test_torchvision_reads_extracted_archive(generated_cifar10_tgz, tmp_path):
    train, test = torchvision_cifar_splits(generated_cifar10_tgz, "CIFAR10", tmp_path)
    assert train.data.shape == (500, 32, 32, 3) and test.data.shape == (100, 32, 32, 3)
    assert train.classes == list(CIFAR10_LABEL_NAMES)
    assert np.bincount(train.targets).tolist() == [50] * 10
    img, label = train[0]
    assert img.size == (32, 32) and img.mode == "RGB" and 0 <= label < 10
    # Rows are R, G, B planes: a red-disc (airplane = class 0) image is red where it is brightest.
    reds = train.data[np.array(train.targets) == 0].reshape(-1, 3).astype(int)
    bright = reds[reds.sum(1) > 300]
    assert (bright[:, 0] > bright[:, 2]).mean() > 0.9
