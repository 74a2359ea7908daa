"""The own-photo test data keeps its promises: what FolderSpec says, checked with readers of our own
(PIL, raw header bytes, OpenCV), not with the builder's code. Tests of the folder loader trust these
folders, so a builder that silently wrote something else would make them pass for the wrong reason.
(Archives of a folder: test_own_images_archives.py; bad folders: test_own_images_bad_inputs.py.)"""

from __future__ import annotations

import io
import sys
import zipfile
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps

from support import own_images_archives
from support.helpers import REPO, run
from support.own_images_folders import KINDS, FolderOptions, build_photo_folder
from support.read_back import digest, files_on_disk, pil_reads


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
    assert {k: conversions[k] for k in KINDS} == spec.counts["conversions"]
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


def test_same_arguments_same_bytes_folders_and_archives(spec, subset, tmp_path):
    again = build_photo_folder(tmp_path / "photos", subset)
    assert digest(again.root) == digest(spec.root)
    for pack in (own_images_archives.pack_zip, own_images_archives.pack_tar, own_images_archives.pack_tar_gz):
        first = pack(spec.root, tmp_path / "a", top_dir="photos").read_bytes()
        assert pack(again.root, tmp_path / "b", top_dir="photos").read_bytes() == first
    other = build_photo_folder(tmp_path / "other", subset, FolderOptions(seed=1))
    assert digest(other.root) != digest(spec.root)


def test_flat_layout_with_readable_names_and_classes_txt(subset, tmp_path):
    flat = build_photo_folder(tmp_path / "flat", subset, FolderOptions(
        classes=4, train_per_class=6, val_per_class=2, layout="flat", folder_names="readable",
        names_file="classes.txt", variety=False))
    assert sorted(p.name for p in flat.root.iterdir() if p.is_dir()) == flat.class_dirs
    assert list(flat.splits) == ["all"] and flat.counts["all"] == 32 and flat.non_image_files == []
    lines = (flat.root / "classes.txt").read_text(encoding="utf-8").splitlines()
    assert [line.split("\t") for line in lines] == [[k, v] for k, v in flat.readable.items()]
    assert all(Image.open(flat.root / rel).format == "JPEG" for rel in flat.entries)


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

