"""Archives of a photo folder (tests/support/own_images_archives.py) hold exactly the folder: every
file under the names users' tools give them, with or without a wrapping directory, and Finder's
__MACOSX junk when asked for."""

from __future__ import annotations

import tarfile
import zipfile

import pytest

from support.own_images_archives import pack_tar, pack_tar_gz, pack_zip
from support.read_back import files_on_disk


@pytest.mark.parametrize("top_dir", [None, "photos"])
def test_archives_list_the_folder(spec, tmp_path, top_dir):
    prefix = f"{top_dir}/" if top_dir else ""
    files = {prefix + rel for rel in files_on_disk(spec.root)}
    zipped = pack_zip(spec.root, tmp_path / "p.zip", top_dir=top_dir)
    with zipfile.ZipFile(zipped) as zf:
        assert {n for n in zf.namelist() if not n.endswith("/")} == files
        assert zf.read(prefix + spec.rotated) == (spec.root / spec.rotated).read_bytes()
        assert (f"{prefix}train/" in zf.namelist()) and (top_dir is None or "photos/" in zf.namelist())
    for pack, name in ((pack_tar, "p.tar"), (pack_tar_gz, "p.tar.gz")):
        with tarfile.open(pack(spec.root, tmp_path / name, top_dir=top_dir)) as tf:
            assert {m.name for m in tf.getmembers() if m.isfile()} == files
            tops = {m.name.split("/")[0] for m in tf.getmembers()}
            assert tops == ({"photos"} if top_dir else {"train", "val", "README.txt", ".DS_Store", "classes.json"})


def test_zip_with_finder_junk(spec, tmp_path):
    with zipfile.ZipFile(pack_zip(spec.root, tmp_path / "p.zip", top_dir="photos", macos_junk=True)) as zf:
        junk = [n for n in zf.namelist() if n.startswith("__MACOSX/")]
    assert len(junk) == len(files_on_disk(spec.root)) and "__MACOSX/photos/._README.txt" in junk


