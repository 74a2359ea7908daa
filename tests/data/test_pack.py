"""tinyclf.data.pack: a directory of photos versioned as one deterministic tar (the download stage of
data.dataset: folder): the same files pack alike wherever they are, a new photo changes the tar,
system files are left out, links outside the folder are not followed and links inside are copies.
"""

from __future__ import annotations

import os
import shutil
import tarfile

from support import own_images_bad_inputs
from support.own_images_run import download_and_prepare, folder_params, md5

from tinyclf.data.download import run_download
from tinyclf.data.pack import pack_directory


def test_packing_is_deterministic_and_sees_a_new_photo(photos, tmp_path):
    copy = tmp_path / "elsewhere" / "my photos"
    shutil.copytree(photos.root, copy, symlinks=True)
    os.utime(copy / photos.splits["train"][0][0], (1, 1))  # another mtime: must not matter
    first = run_download(folder_params(photos.root), tmp_path / "a", progress=False)
    second = run_download(folder_params(copy), tmp_path / "b", progress=False)
    assert first.name == "images.tar" and sorted(p.name for p in first.parent.iterdir()) == ["images.tar"]
    assert md5(first) == md5(second), "the same files in another place and with other mtimes must pack alike"
    assert pack_directory(photos.root, tmp_path / "c.tar", progress=False).md5 == md5(first)  # the md5 it prints
    new = copy / photos.splits["train"][0][0]
    shutil.copy(new, new.with_name("IMG_new.jpg"))
    third = run_download(folder_params(copy), tmp_path / "b", progress=False)
    assert md5(third) != md5(first)
    with tarfile.open(third) as tar:
        infos = tar.getmembers()
    assert all(i.mtime == 0 and i.uid == 0 and i.uname == "" for i in infos)
    names = [i.name for i in infos]
    assert names[:-1] == sorted(names[:-1]) and names[-1] == ".tinyclf/packed.json"
    assert ".DS_Store" not in names and "Thumbs.db" not in names  # left out, and listed in the manifest


def test_symlinks_outside_are_not_followed_and_inside_ones_are_copies(tmp_path, real_subset):
    outside = own_images_bad_inputs.symlink_outside(tmp_path / "out_link", real_subset)
    _, summary = download_and_prepare(outside.root, tmp_path, name="o")
    links = summary.stats["folder"]["links_not_followed"]
    assert links == {"count": 1, "first": list(outside.names)}
    assert summary.stats["splits"]["train"]["count"] == outside.spec.counts["train"]
    inside = own_images_bad_inputs.symlink_inside(tmp_path / "in_link", real_subset)
    _, summary = download_and_prepare(inside.root, tmp_path, name="i")
    assert summary.stats["folder"]["links_not_followed"]["count"] == 0
    assert summary.stats["splits"]["train"]["count"] == inside.spec.counts["train"] + 1
