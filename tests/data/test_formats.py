"""The dataset registry and the format modules: one home per dataset, one shape for preprocess.

Every format the registry names is checked the same way here, so a new format (a registry entry
and its module) is covered by these tests without editing them: its module provides the
contract, its generated stand-in is recognised as generated, lands in data/raw under the official
file name, and prepares into arrays of the registry's native size.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tinyclf.data import arrays
from tinyclf.data.formats import registry
from tinyclf.data.formats.contract import FormatData, PrepareOptions
from tinyclf.data.formats.generated import is_generated, write_archive
from tinyclf.data.preprocess import find_archive, prepare
from tinyclf.errors import PrepareError
from tinyclf.params import ParamsError, params_from_dict

STAND_INS = [f for f in registry.FORMATS if f.stand_in_classes]


@pytest.mark.parametrize("fmt", registry.FORMATS, ids=lambda f: f.name)
def test_each_format_module_provides_the_contract(fmt):
    module = registry.implementation(fmt.name)
    assert callable(module.read)
    has_stand_in = fmt.stand_in_classes is not None
    assert callable(getattr(module, "write_stand_in", None)) == has_stand_in
    assert callable(getattr(module, "is_stand_in", None)) == has_stand_in
    # Own images have no official archive and no native size; an official format has both.
    assert (fmt.official is None) == (fmt.native_size is None) == fmt.own_images


def test_params_know_exactly_the_registered_datasets():
    for name in registry.names():
        assert params_from_dict({"data": {"dataset": name, "image_size": 64},
                                 "download": {"source": "/photos"}}).data.dataset == name
    with pytest.raises(ParamsError) as err:
        params_from_dict({"data": {"dataset": "cifar-10"}})
    assert f"must be one of {', '.join(registry.names())}" in str(err.value)
    assert "did you mean 'cifar10'" in str(err.value)


def test_unknown_dataset_is_named_with_a_suggestion():
    with pytest.raises(ValueError, match=r"unknown dataset 'tiny_imagenet'.*did you mean 'tiny-imagenet'"):
        registry.get("tiny_imagenet")
    with pytest.raises(ValueError, match="has no generated stand-in"):
        registry.stand_in("folder")


def _stand_in(fmt, path):
    low, _ = fmt.stand_in_classes
    return write_archive(fmt.name, path, num_classes=max(low, 3), train_per_class=2, val_per_class=1, test_images=1,
                         seed=5)


@pytest.mark.parametrize("fmt", STAND_INS, ids=lambda f: f.name)
def test_stand_in_prepares_like_the_official_archive(fmt, tmp_path):
    raw = tmp_path / "raw"
    archive = _stand_in(fmt, raw / fmt.official.filename)
    assert archive.read_bytes().startswith(fmt.official.magic)
    assert registry.stand_in(fmt.name).is_stand_in(archive) and is_generated(archive)
    assert find_archive(raw, fmt.name) == archive

    data = registry.implementation(fmt.name).read(archive, PrepareOptions())
    assert isinstance(data, FormatData) and set(data.splits) == set(arrays.SPLITS)
    summary = prepare(archive, tmp_path / "prepared", fmt.name, PrepareOptions(workers=1, progress=False))
    assert summary.stats["image_size"] == [fmt.native_size, fmt.native_size]
    assert summary.stats["generated"] is True and summary.stats["dataset"] == fmt.name
    classes = arrays.load_classes(tmp_path / "prepared")
    assert len(classes["classes"]) == len(data.classes) and classes["generated"] is True
    images, labels = arrays.load_split(tmp_path / "prepared", "train")
    assert images.shape[1:] == (fmt.native_size, fmt.native_size, 3) and len(images) == len(labels)
    assert np.bincount(labels).min() >= 1  # every class has its train images


@pytest.mark.parametrize("fmt", STAND_INS, ids=lambda f: f.name)
def test_stand_in_bytes_depend_only_on_the_arguments(fmt, tmp_path):
    assert _stand_in(fmt, tmp_path / "a").read_bytes() == _stand_in(fmt, tmp_path / "b").read_bytes()


@pytest.mark.parametrize("fmt", STAND_INS, ids=lambda f: f.name)
def test_stand_in_class_count_follows_the_registry(fmt, tmp_path):
    low, high = fmt.stand_in_classes
    with pytest.raises(ValueError, match="num_classes|exactly"):
        write_archive(fmt.name, tmp_path / "x", num_classes=high + 1, train_per_class=1, val_per_class=1,
                      test_images=0, seed=0)
    params = {"data": {"dataset": fmt.name}, "download": {"source": "generated", "generated": {"num_classes": low}}}
    assert params_from_dict(params).download.generated.num_classes == low
    if low == high:  # the CIFARs: exactly their own count, said before any work
        params["download"]["generated"]["num_classes"] = low - 1
        with pytest.raises(ParamsError, match=f"must be {low} for data.dataset={fmt.name}"):
            params_from_dict(params)
    assert not (tmp_path / "x").exists()


def test_one_format_archive_is_not_taken_for_another(tmp_path):
    """preprocess names the archive and what it expected when data.dataset and the file disagree."""
    tiny, cifar = registry.get("tiny-imagenet"), registry.get("cifar10")
    archive = _stand_in(tiny, tmp_path / "raw" / tiny.official.filename)
    with pytest.raises(PrepareError, match=r"holds the tiny-imagenet archive .* but data.dataset is cifar10"):
        find_archive(tmp_path / "raw", "cifar10")
    with pytest.raises(PrepareError, match="not a gzip-compressed tar archive"):
        prepare(archive, tmp_path / "p", cifar.name, PrepareOptions(progress=False))
    assert not (tmp_path / "p").exists()


def test_classes_json_records_class_groups(tmp_path):
    arrays.write_classes(tmp_path, dataset="d", generated=False, classes=[("a", "A"), ("b", "B"), ("c", "C")],
                         groups=["first", "second"], class_groups=[1, 0, 1])
    written = json.loads((tmp_path / arrays.CLASSES_FILE).read_text())
    assert written["groups"] == [{"index": 0, "name": "first"}, {"index": 1, "name": "second"}]
    assert [c["group"] for c in written["classes"]] == [1, 0, 1]
    arrays.write_classes(tmp_path, dataset="d", generated=False, classes=[("a", "A")])
    assert "groups" not in json.loads((tmp_path / arrays.CLASSES_FILE).read_text())
