"""Bad photo folders (tests/support/own_images_bad_inputs.py) hold the one defect each promises, and
the decompression bombs (tests/support/bombs.py) promise their pixels and are valid files. The
folder loader's tests trust these, so the defects are checked here with PIL and the filesystem."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from support import bombs, own_images_bad_inputs
from support.read_back import pil_reads


def test_bad_inputs_hold_their_defect(subset, tmp_path):
    built = {b.__name__: b(tmp_path / b.__name__ / "photos", subset) for b in own_images_bad_inputs.BAD_INPUTS
             if b is not own_images_bad_inputs.decompression_bomb}
    for bad in built.values():
        assert bad.names and bad.root.is_dir()
    assert not any((built["empty_class_folder"].root / "train" / "untitled folder").iterdir())
    missing = built["val_class_missing_from_train"]
    assert (missing.root / "val" / missing.names[0]).is_dir()
    assert not (missing.root / "train" / missing.names[0]).exists()
    assert len(built["only_one_class"].spec.class_dirs) == 1
    outside, inside = built["symlink_outside"], built["symlink_inside"]
    assert not (outside.root / outside.names[0]).resolve().is_relative_to(outside.root.resolve())
    assert pil_reads((outside.root / outside.names[0]).read_bytes()) is not None
    assert (inside.root / inside.names[0]).resolve().parent == (inside.root / inside.names[0]).parent.resolve()
    assert pil_reads((built["truncated_jpeg"].root / built["truncated_jpeg"].names[0]).read_bytes()) is None
    assert (built["zero_byte_jpeg"].root / built["zero_byte_jpeg"].names[0]).stat().st_size == 0
    dup = built["duplicate_across_splits"]
    assert (dup.root / dup.names[0]).read_bytes() == (dup.root / dup.names[1]).read_bytes()
    assert dup.names[0].startswith("train/") and dup.names[1].startswith("val/")
    assert pil_reads((built["text_as_image"].root / built["text_as_image"].names[0]).read_bytes()) is None
    mixed = built["train_folder_beside_class_folders"]
    assert [p.name for p in (mixed.root / "train").iterdir()] == [mixed.names[0]]
    assert sorted(p.name for p in mixed.root.iterdir() if p.name != "train") == mixed.spec.class_dirs[:11]
    split_off = built["val_folder_beside_class_folders"]
    assert not (split_off.root / "train").exists()
    assert sorted(p.name for p in (split_off.root / "val").iterdir()) == sorted(split_off.spec.class_dirs)
    assert all(any((split_off.root / cls).iterdir()) for cls in split_off.spec.class_dirs)


@pytest.mark.parametrize("kind", ["png", "jpeg", "tiff"])
def test_decompression_bombs_promise_400m_pixels_and_are_valid(subset, tmp_path, kind):
    """PIL refuses each (more than twice its 89 M pixel limit), from the header alone."""
    bad = own_images_bad_inputs.decompression_bomb(tmp_path / "photos", subset, kind=kind)
    with pytest.raises(Image.DecompressionBombError):
        Image.open(bad.root / bad.names[0])
    small = bombs.jpeg_bomb(800, 600) if kind == "jpeg" else None
    if small is not None:  # the same construction, small enough to decode: a real, valid JPEG
        assert np.unique(np.asarray(Image.open(io.BytesIO(small)))).tolist() == [128]


