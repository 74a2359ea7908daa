"""The own-photo test data keeps its promises: what FolderSpec says, checked with readers of our own
(PIL, raw header bytes, OpenCV), not with the builder's code. Tests of the folder loader trust these
folders, so a builder that silently wrote something else would make them pass for the wrong reason."""

from __future__ import annotations

import hashlib
import io
import os
import sys
import tarfile
import zipfile
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from support import own_images
from support.helpers import REAL_SUBSET, REPO, run


@pytest.fixture(scope="module")
def subset():
    """The real subset the folders are made from (module-scoped twin of conftest's real_subset)."""
    if not REAL_SUBSET.exists():
        pytest.skip(f"real Tiny ImageNet subset not present at {REAL_SUBSET}")
    return REAL_SUBSET


@pytest.fixture(scope="module")
def spec(tmp_path_factory, subset):
    return own_images.build_photo_folder(tmp_path_factory.mktemp("own") / "photos", subset)


def files_on_disk(root: Path) -> dict[str, bytes]:
    """Every regular file under root by relative POSIX path (the folder's whole content)."""
    found = {}
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath) / name
            found[path.relative_to(root).as_posix()] = path.read_bytes()
    return found


def pil_reads(data: bytes) -> Image.Image | None:
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
        return img
    except Exception:  # noqa: BLE001 - anything PIL cannot read is "not an image" here
        return None


def test_every_file_on_disk_is_an_image_or_a_listed_stray(spec):
    on_disk = files_on_disk(spec.root)
    images = {rel for rel, data in on_disk.items() if pil_reads(data) is not None}
    assert images == set(spec.entries)
    assert set(on_disk) - images == set(spec.non_image_files) | {spec.mapping_file}
    assert spec.counts["images"] == len(images) == 400 and spec.counts["non_image_files"] == 6
    assert {"README.txt", ".DS_Store"} <= set(spec.non_image_files)
    assert any(Path(rel).name.startswith("._") and rel.endswith(".jpg") for rel in spec.non_image_files)
    assert any(" " in rel for rel in images) and any(not rel.isascii() for rel in images)


def test_formats_modes_and_sizes_are_what_the_spec_says(spec):
    formats, conversions = Counter(), Counter()
    for rel, entry in spec.entries.items():
        img = Image.open(spec.root / rel)
        assert (img.format, img.mode, img.size) == (entry.format, entry.mode, entry.size), rel
        formats[img.format] += 1
        kind = {"L": "grayscale", "P": "palette", "CMYK": "cmyk", "RGBA": "rgba", "I;16": "16bit"}.get(img.mode)
        conversions[kind] += 1
    assert formats == spec.counts["formats"] and {"JPEG", "PNG", "WEBP", "BMP", "TIFF"} == set(formats)
    assert {k: conversions[k] for k in own_images.KINDS} == spec.counts["conversions"]
    assert spec.counts["conversions"]["grayscale"] >= 2  # a real grayscale JPEG and the converted one
    assert all(spec.counts["conversions"][k] == 1 for k in ("palette", "cmyk", "rgba", "16bit"))
    odd = {entry.size for entry in spec.entries.values()} - {(64, 64)}
    assert {(171, 97), (90, 150)} <= odd


def test_the_rotated_jpeg_is_upright_once_its_exif_tag_is_applied(spec, subset):
    assert spec.counts["rotated"] == 1
    stored = Image.open(spec.root / spec.rotated)
    assert stored.getexif()[0x0112] in (6, 8)
    upright = ImageOps.exif_transpose(stored)
    assert upright.size == spec.rotated_upright_size != stored.size
    with zipfile.ZipFile(subset) as zf:
        source = Image.open(io.BytesIO(zf.read(spec.entries[spec.rotated].source))).convert("RGB")
    expected = np.asarray(source.resize(upright.size, Image.Resampling.BICUBIC), dtype=float)
    wrong_way = stored.transpose(Image.Transpose.ROTATE_90)  # what the opposite tag would give
    error = np.abs(np.asarray(upright.convert("RGB"), dtype=float) - expected).mean()
    assert error < 4 < np.abs(np.asarray(wrong_way.convert("RGB"), dtype=float) - expected).mean()


def the_one(spec, kind: str) -> Path:
    (rel,) = [rel for rel, entry in spec.entries.items() if entry.kind == kind]
    return spec.root / rel


def test_the_16_bit_png_and_the_cmyk_jpeg_really_are(spec):
    sixteen = the_one(spec, "16bit").read_bytes()
    assert sixteen[12:16] == b"IHDR" and sixteen[24] == 16  # bit depth, straight from the header
    wide = cv2.imread(str(the_one(spec, "16bit")), cv2.IMREAD_UNCHANGED)
    assert wide.dtype == np.uint16 and wide.max() > 255
    cmyk = Image.open(the_one(spec, "cmyk"))
    assert cmyk.format == "JPEG" and cmyk.mode == "CMYK" and len(cmyk.getbands()) == 4
    assert Image.open(the_one(spec, "palette")).mode == "P"
    assert Image.open(the_one(spec, "rgba")).mode == "RGBA"


def digest(root: Path) -> str:
    return hashlib.sha256(repr(sorted(files_on_disk(root).items())).encode()).hexdigest()


def test_same_arguments_same_bytes_folders_and_archives(spec, subset, tmp_path):
    again = own_images.build_photo_folder(tmp_path / "photos", subset)
    assert digest(again.root) == digest(spec.root)
    for pack in (own_images.pack_zip, own_images.pack_tar, own_images.pack_tar_gz):
        first = pack(spec.root, tmp_path / "a", top_dir="photos").read_bytes()
        assert pack(again.root, tmp_path / "b", top_dir="photos").read_bytes() == first
    other = own_images.build_photo_folder(tmp_path / "other", subset, seed=1)
    assert digest(other.root) != digest(spec.root)


@pytest.mark.parametrize("top_dir", [None, "photos"])
def test_archives_list_the_folder(spec, tmp_path, top_dir):
    prefix = f"{top_dir}/" if top_dir else ""
    files = {prefix + rel for rel in files_on_disk(spec.root)}
    zipped = own_images.pack_zip(spec.root, tmp_path / "p.zip", top_dir=top_dir)
    with zipfile.ZipFile(zipped) as zf:
        assert {n for n in zf.namelist() if not n.endswith("/")} == files
        assert zf.read(prefix + spec.rotated) == (spec.root / spec.rotated).read_bytes()
        assert (f"{prefix}train/" in zf.namelist()) and (top_dir is None or "photos/" in zf.namelist())
    for pack, name in ((own_images.pack_tar, "p.tar"), (own_images.pack_tar_gz, "p.tar.gz")):
        with tarfile.open(pack(spec.root, tmp_path / name, top_dir=top_dir)) as tf:
            assert {m.name for m in tf.getmembers() if m.isfile()} == files
            tops = {m.name.split("/")[0] for m in tf.getmembers()}
            assert tops == ({"photos"} if top_dir else {"train", "val", "README.txt", ".DS_Store", "classes.json"})


def test_zip_with_finder_junk(spec, tmp_path):
    with zipfile.ZipFile(own_images.pack_zip(spec.root, tmp_path / "p.zip", top_dir="photos", macos_junk=True)) as zf:
        junk = [n for n in zf.namelist() if n.startswith("__MACOSX/")]
    assert len(junk) == len(files_on_disk(spec.root)) and "__MACOSX/photos/._README.txt" in junk


def test_flat_layout_with_readable_names_and_classes_txt(subset, tmp_path):
    flat = own_images.build_photo_folder(tmp_path / "flat", subset, classes=4, train_per_class=6,
                                         val_per_class=2, layout="flat", folder_names="readable",
                                         names_file="classes.txt", variety=False)
    assert sorted(p.name for p in flat.root.iterdir() if p.is_dir()) == flat.class_dirs
    assert list(flat.splits) == ["all"] and flat.counts["all"] == 32 and flat.non_image_files == []
    lines = (flat.root / "classes.txt").read_text(encoding="utf-8").splitlines()
    assert [line.split("\t") for line in lines] == [[k, v] for k, v in flat.readable.items()]
    assert all(Image.open(flat.root / rel).format == "JPEG" for rel in flat.entries)


def test_bad_inputs_hold_their_defect(subset, tmp_path):
    built = {b.__name__: b(tmp_path / b.__name__ / "photos", subset) for b in own_images.BAD_INPUTS
             if b is not own_images.decompression_bomb}
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
    bad = own_images.decompression_bomb(tmp_path / "photos", subset, kind=kind)
    with pytest.raises(Image.DecompressionBombError):
        Image.open(bad.root / bad.names[0])
    small = own_images.jpeg_bomb(800, 600) if kind == "jpeg" else None
    if small is not None:  # the same construction, small enough to decode: a real, valid JPEG
        assert np.unique(np.asarray(Image.open(io.BytesIO(small)))).tolist() == [128]


def test_the_large_folder_generator_is_deterministic_and_photo_like(tmp_path):
    """benchmarks/own_images_data.py, run as the benchmark runs it: same seed, same bytes, whatever
    the worker count; JPEGs of varied sizes within size_range."""
    for workers in (1, 2):
        run([sys.executable, str(REPO / "benchmarks" / "own_images_data.py"), str(tmp_path / f"w{workers}"),
             "--images", "300", "--classes", "3", "--workers", str(workers)], cwd=REPO)
    assert digest(tmp_path / "w1") == digest(tmp_path / "w2")
    files = files_on_disk(tmp_path / "w1")
    assert len(files) == 300 and sum(rel.startswith("val/") for rel in files) == 30
    sizes = {Image.open(io.BytesIO(data)).size for data in files.values()}
    assert len(sizes) > 250 and all(100 <= side <= 400 for size in sizes for side in size)
    assert 5_000 < np.median([len(data) for data in files.values()]) < 40_000
