"""tinyclf.data.formats.generated: any format's stand-in, written atomically, the same bytes for the
same arguments, with the class counts the registry allows; and is_generated, which tells a stand-in
from any other file. (Each stand-in's own layout: the format's test module.)"""

from __future__ import annotations

import pytest
from support.data_archives import GENERATED_SMALL, small_stand_in

from tinyclf.data.formats import registry
from tinyclf.data.formats.generated import is_generated, write_archive
from tinyclf.params import ParamsError, params_from_dict

STAND_INS = [f for f in registry.FORMATS if f.stand_in_classes]


@pytest.mark.parametrize("fmt", STAND_INS, ids=lambda f: f.name)
def test_stand_in_bytes_depend_only_on_the_arguments(fmt, tmp_path):
    assert small_stand_in(fmt, tmp_path / "a").read_bytes() == small_stand_in(fmt, tmp_path / "b").read_bytes()


def test_deterministic_bytes(tmp_path, generated_tiny_zip, generated_cifar10_tgz):
    again_zip = write_archive("tiny-imagenet", tmp_path / "a.zip", **GENERATED_SMALL)
    again_tgz = write_archive("cifar10", tmp_path / "b.tar.gz", **GENERATED_SMALL)
    assert again_zip.read_bytes() == generated_tiny_zip.read_bytes()
    assert again_tgz.read_bytes() == generated_cifar10_tgz.read_bytes()
    other = write_archive("cifar10", tmp_path / "c.tar.gz", **{**GENERATED_SMALL, "seed": 4})
    assert other.read_bytes() != generated_cifar10_tgz.read_bytes()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []  # atomic: no temp left


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


def test_write_archive_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="exactly 10 classes"):
        write_archive("cifar10", tmp_path / "x", **{**GENERATED_SMALL, "num_classes": 12})
    with pytest.raises(ValueError, match="unknown dataset"):
        write_archive("mnist", tmp_path / "x", **GENERATED_SMALL)
    assert not (tmp_path / "x").exists()


def test_is_generated_rejects_other_files(tmp_path):
    junk = tmp_path / "page.html"
    junk.write_bytes(b"<html>not an archive</html>")
    with pytest.raises(ValueError, match="neither a zip nor a gzip"):
        is_generated(junk)
