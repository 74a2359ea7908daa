"""The format contract: every format the registry names provides what tinyclf.data.formats.contract
says, and gives preprocess one shape (FormatData).

Every format is checked the same way here, so a new format (a registry entry and its module) is
covered by these tests without editing them: its module provides the contract, its generated
stand-in is recognised as generated, lands in data/raw under the official file name, and prepares
into arrays of the registry's native size.
"""

from __future__ import annotations

import numpy as np
import pytest
from support.data_archives import small_stand_in

from tinyclf.data import arrays
from tinyclf.data.formats import registry
from tinyclf.data.formats.contract import FormatData, PrepareOptions
from tinyclf.data.formats.generated import is_generated
from tinyclf.data.preprocess import find_archive, prepare

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


@pytest.mark.parametrize("fmt", STAND_INS, ids=lambda f: f.name)
def test_stand_in_prepares_like_the_official_archive(fmt, tmp_path):
    raw = tmp_path / "raw"
    archive = small_stand_in(fmt, raw / fmt.official.filename)
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
