"""tinyclf.data.arrays: the prepared-array format every later stage reads: a split that is missing
is named with what to run, and classes.json records class groups when a dataset has them."""

from __future__ import annotations

import json

import pytest

from tinyclf.data import arrays


def test_load_split_errors(tmp_path):
    with pytest.raises(arrays.PreparedDataError, match=r"nowhere/train/images\.npy: missing; run the preprocess stage"):
        arrays.load_split(tmp_path / "nowhere", "train")
    with pytest.raises(arrays.PreparedDataError, match=r"stats\.json: missing"):
        arrays.load_stats(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="unknown split 'holdout'; expected one of train, val, test"):
        arrays.load_split(tmp_path, "holdout")


def test_classes_json_records_class_groups(tmp_path):
    arrays.write_classes(tmp_path, dataset="d", generated=False, classes=[("a", "A"), ("b", "B"), ("c", "C")],
                         groups=["first", "second"], class_groups=[1, 0, 1])
    written = json.loads((tmp_path / arrays.CLASSES_FILE).read_text())
    assert written["groups"] == [{"index": 0, "name": "first"}, {"index": 1, "name": "second"}]
    assert [c["group"] for c in written["classes"]] == [1, 0, 1]
    arrays.write_classes(tmp_path, dataset="d", generated=False, classes=[("a", "A")])
    assert "groups" not in json.loads((tmp_path / arrays.CLASSES_FILE).read_text())
