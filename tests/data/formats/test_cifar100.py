"""CIFAR-100, the fourth dataset: its official python archive, read; its generated stand-in, in the
exact official layout; the superclasses, recorded and reported.

The stand-in's `meta` is the official file byte for byte (its md5 is the one torchvision checks), and
torchvision's own CIFAR100 reads the extracted stand-in. The pipeline test runs every stage script
on a generated CIFAR-100 and finds per-superclass accuracy in the report.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import sys
import tarfile

import numpy as np
import pytest
from support.helpers import REPO, run, shrunk_params, torchvision_cifar_splits, venv_env, write_params

from tinyclf.data import arrays
from tinyclf.data.formats import cifar100, registry
from tinyclf.data.formats.contract import PrepareOptions
from tinyclf.data.formats.generated import is_generated, write_archive
from tinyclf.data.preprocess import prepare
from tinyclf.errors import PrepareError

# torchvision's CIFAR100.meta["md5"]: the official cifar-100-python/meta.
OFFICIAL_META_MD5 = "7973b15100ade9c7d40fb424638fde48"
SMALL = dict(num_classes=100, train_per_class=3, val_per_class=1, test_images=0, seed=2)


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory):
    return write_archive("cifar100", tmp_path_factory.mktemp("c100") / "cifar-100-python.tar.gz", **SMALL)


def test_registry_facts_are_the_official_archive():
    fmt = registry.get("cifar100")
    assert fmt.official.filename == "cifar-100-python.tar.gz"
    assert fmt.official.md5 == "eb9058c3a382ffc7106e4002c42a8d85"
    assert fmt.official.url == "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
    assert (fmt.native_size, fmt.stand_in_classes) == (32, (100, 100))


def test_stand_in_has_the_official_members_and_meta(stand_in):
    with tarfile.open(stand_in, "r:gz") as tf:
        names = tf.getnames()
        meta = tf.extractfile("cifar-100-python/meta").read()
        train = pickle.loads(tf.extractfile("cifar-100-python/train").read(), encoding="latin1")
    assert names == ["cifar-100-python", "cifar-100-python/tinyclf-generated", "cifar-100-python/file.txt~",
                     "cifar-100-python/train", "cifar-100-python/test", "cifar-100-python/meta"]
    assert hashlib.md5(meta).hexdigest() == OFFICIAL_META_MD5
    assert list(train) == ["filenames", "batch_label", "fine_labels", "coarse_labels", "data"]
    assert train["data"].shape == (300, 3072) and train["data"].dtype == np.uint8
    # Every image carries its class's real superclass: apple (0) is fruit_and_vegetables (4), ...
    pairs = set(zip(train["fine_labels"], train["coarse_labels"]))
    assert {(0, 4), (1, 1), (2, 14), (99, 13)} <= pairs and len(pairs) == 100
    assert is_generated(stand_in)


def test_torchvision_reads_the_extracted_stand_in(stand_in, tmp_path):
    train, test = torchvision_cifar_splits(stand_in, "CIFAR100", tmp_path)
    assert train.data.shape == (300, 32, 32, 3) and test.data.shape == (100, 32, 32, 3)
    assert train.classes == list(cifar100.FINE_NAMES) and len(train.classes) == 100
    assert np.bincount(train.targets).tolist() == [3] * 100


def test_prepare_records_classes_and_their_superclasses(stand_in, tmp_path):
    summary = prepare(stand_in, tmp_path / "p", "cifar100", PrepareOptions(progress=False))
    assert summary.stats["generated"] is True and summary.stats["image_size"] == [32, 32]
    assert [summary.stats["splits"][s]["count"] for s in ("train", "val")] == [300, 100]
    classes = arrays.load_classes(tmp_path / "p")
    assert [g["name"] for g in classes["groups"]] == list(cifar100.COARSE_NAMES) and len(classes["groups"]) == 20
    by_name = {c["name"]: c for c in classes["classes"]}
    assert by_name["whale"]["group"] == cifar100.COARSE_NAMES.index("aquatic_mammals")
    assert by_name["tractor"]["group"] == cifar100.COARSE_NAMES.index("vehicles_2")
    assert np.bincount([c["group"] for c in classes["classes"]]).tolist() == [5] * 20
    images, labels = arrays.load_split(tmp_path / "p", "val")
    assert images.shape == (100, 32, 32, 3) and sorted(labels.tolist()) == list(range(100))


def _tar_gz(path, members: dict[str, object]):
    with tarfile.open(path, "w:gz") as tar:
        for name, obj in members.items():
            data = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _split(fine, coarse):
    n = len(fine)
    return {"data": np.zeros((n, 3072), np.uint8), "fine_labels": fine, "coarse_labels": coarse}


def test_a_class_in_two_superclasses_is_refused(tmp_path):
    meta = {"fine_label_names": ["a", "b"], "coarse_label_names": ["x", "y"]}
    path = _tar_gz(tmp_path / "c.tar.gz", {"meta": meta, "train": _split([0, 0, 1], [0, 1, 1]),
                                           "test": _split([0, 1], [0, 1])})
    with pytest.raises(PrepareError, match=r"class a has images of superclasses 0 and 1"):
        prepare(path, tmp_path / "p", "cifar100", PrepareOptions(progress=False))
    assert not (tmp_path / "p").exists()


def test_missing_members_and_labels_are_named(tmp_path):
    meta = {"fine_label_names": ["a", "b"], "coarse_label_names": ["x"]}
    with pytest.raises(PrepareError, match=r"no test inside; not the CIFAR-100 python archive"):
        cifar100.read(_tar_gz(tmp_path / "a.tar.gz", {"meta": meta, "train": _split([0], [0])}), PrepareOptions())
    without_coarse = {"data": np.zeros((1, 3072), np.uint8), "fine_labels": [0]}
    path = _tar_gz(tmp_path / "b.tar.gz", {"meta": meta, "train": without_coarse, "test": _split([1], [0])})
    with pytest.raises(PrepareError, match=r"member cifar-100-python/train lacks the 'data' array or the "
                                           r"'coarse_labels' list"):
        cifar100.read(path, PrepareOptions())
    # The CIFAR-10 archive is not a CIFAR-100 one.
    cifar10 = write_archive("cifar10", tmp_path / "c10.tar.gz", num_classes=10, train_per_class=1, val_per_class=1,
                            test_images=0, seed=0)
    with pytest.raises(PrepareError, match=r"no meta, train, test inside"):
        cifar100.read(cifar10, PrepareOptions())


@pytest.mark.slow
def test_pipeline_on_generated_cifar100_reports_superclass_accuracy(tmp_path):
    params = write_params(tmp_path / "params.yaml", shrunk_params(
        data__dataset="cifar100", data__image_size=0, download__generated__num_classes=100,
        download__generated__train_per_class=2, download__generated__val_per_class=1, train__epochs=1,
        train__batch_size=40))
    env = venv_env(REPO)
    common = ["--params", str(params)]
    out = {name: tmp_path / name for name in ("raw", "prepared", "train", "evaluate", "summary")}
    for script, args in [
        ("download.py", ["--out", out["raw"]]),
        ("preprocess.py", ["--raw", out["raw"], "--out", out["prepared"]]),
        ("train.py", ["--data", out["prepared"], "--model-out", tmp_path / "model.pt", "--live", out["train"],
                      "--checkpoints", tmp_path / "checkpoints"]),
        ("evaluate.py", ["--data", out["prepared"], "--model", tmp_path / "model.pt", "--out", out["evaluate"]]),
        ("summarize.py", ["--data", out["prepared"], "--model", tmp_path / "model.pt", "--train", out["train"],
                          "--evaluate", out["evaluate"], "--out", out["summary"]]),
    ]:
        run([sys.executable, f"stages/{script}", *common, *map(str, args)], REPO, env, timeout=300)
    evaluated = json.loads((out["evaluate"] / "per_class.json").read_text())
    assert evaluated["num_images"] == 100 and evaluated["generated"] is True
    report = (out["summary"] / "report.md").read_text()
    assert "cifar100" in report and "Per-superclass accuracy" in report
    assert "aquatic_mammals" in report and "vehicles_2" in report
