"""tinyclf.data.formats.folder_layout: a photo folder's classes and splits from member names alone.
Class ids are the folder names and readable names come from the mapping file; a flat folder's val
split is stratified and stable when photos are added; broken layouts are refused naming the folder;
`tar -C photos .` prefixes and a class of one photo are handled.
"""

from __future__ import annotations

import json
import shutil
import tarfile

import numpy as np
import pytest
from support import own_images_bad_inputs
from support.own_images_folders import FolderOptions, build_photo_folder
from support.own_images_run import download_and_prepare

from tinyclf.data.file_names import natural_key
from tinyclf.data.formats.folder import read_folder_index
from tinyclf.errors import PrepareError


def test_class_ids_are_folders_and_names_come_from_the_mapping_file(photos, photos_prepared):
    archive, summary = photos_prepared
    written = json.loads((archive.parent.parent / "prepared/classes.json").read_text())
    classes = [(c["id"], c["name"]) for c in written["classes"]]
    assert [cid for cid, _ in classes] == sorted(photos.class_dirs, key=natural_key)
    assert all(name == photos.readable[cid] for cid, name in classes)


def test_flat_folder_draws_a_stratified_val_split_stable_under_additions(tmp_path, real_subset):
    spec = build_photo_folder(tmp_path / "flat", real_subset, FolderOptions(
        classes=3, train_per_class=10, val_per_class=0, layout="flat", variety=False, names_file=None))
    shutil.make_archive(str(tmp_path / "flat"), "zip", spec.root)
    before = read_folder_index(tmp_path / "flat.zip", val_fraction=0.2, split_seed=0)
    per_class_val = np.bincount(before.labels["val"], minlength=3)
    assert per_class_val.tolist() == [2, 2, 2] and len(before.members["train"]) == 24
    assert before.classes == [(c, c) for c in sorted(spec.class_dirs)]
    # Two more photos in the last class: the first two classes keep exactly their split.
    last = spec.root / spec.class_dirs[-1]
    for i, source in enumerate(sorted(last.iterdir())[:2]):
        shutil.copy(source, last / f"extra_{i}.jpg")
    shutil.make_archive(str(tmp_path / "flat2"), "zip", spec.root)
    after = read_folder_index(tmp_path / "flat2.zip", val_fraction=0.2, split_seed=0)

    def val_names(index, label):
        return {e.name for e, y in zip(index.members["val"], index.labels["val"]) if y == label}

    assert val_names(before, 0) == val_names(after, 0) and val_names(before, 1) == val_names(after, 1)
    reseeded = read_folder_index(tmp_path / "flat.zip", val_fraction=0.2, split_seed=1)
    assert {e.name for e in reseeded.members["val"]} != {e.name for e in before.members["val"]}


@pytest.mark.parametrize("builder,message", [
    (own_images_bad_inputs.empty_class_folder, "holds no images"),
    (own_images_bad_inputs.val_class_missing_from_train, "is a class that train/ does not have"),
    (own_images_bad_inputs.only_one_class, "fewer than two class folders"),
    # The user added train/lemon/ to a folder of class folders: say so, rather than "only 'lemon'".
    (own_images_bad_inputs.train_folder_beside_class_folders,
     r"mixes two layouts, a train/ split folder \(only \w+\) and 11 top-level class folders \(\w+, \w+, \w+, …\) "
     r"that are ignored beside it: use either <root>/<class>/… or <root>/train/<class>/… \[\+ val/<class>/…\], "
     r"not both"),
    # val/ split off with the training classes left at the top: val must not become a class.
    (own_images_bad_inputs.val_folder_beside_class_folders,
     r"has a val/ split folder but no train/ beside 4 top-level folder\(s\) \(\w+, \w+, \w+, …\): move the "
     r"training class folders into train/ \(<root>/train/<class>/… \+ val/<class>/…\), or rename val/ if it is a "
     r"class"),
])
def test_a_broken_layout_is_refused_naming_the_folder(builder, message, tmp_path, real_subset):
    bad = builder(tmp_path / "bad", real_subset)
    out = tmp_path / "out" / "prepared"
    with pytest.raises(PrepareError, match=message) as err:
        download_and_prepare(bad.root, tmp_path)
    assert all(name in str(err.value) for name in bad.names), (str(err.value), bad.names)
    assert "\n" not in str(err.value) and not out.exists()


def test_a_tar_made_with_dot_prefixes_and_a_lone_image_class(tmp_path, real_subset):
    """`tar -C photos -cf photos.tar .` names members ./cats/…; a class of one photo stays in train, noted."""
    spec = build_photo_folder(tmp_path / "flat", real_subset, FolderOptions(
        classes=3, train_per_class=5, val_per_class=0, layout="flat", variety=False, names_file=None))
    lone = spec.root / "zz_single"
    lone.mkdir()
    shutil.copy(next((spec.root / spec.class_dirs[0]).iterdir()), lone / "only.jpg")
    archive = tmp_path / "dots.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(spec.root, arcname=".")
    index = read_folder_index(archive, val_fraction=0.2, split_seed=0)
    assert [cid for cid, _ in index.classes] == sorted(spec.class_dirs) + ["zz_single"]
    assert len(index.members["train"]) == 3 * 4 + 1 and len(index.members["val"]) == 3
    assert any("single image" in note and "zz_single" in note for note in index.notes)


# ------------------------------------------------------------------------------ the test split
def listing(paths: list[str]):
    """Archive entries for `paths` (files; their folders implied), and a reader no test calls."""
    from tinyclf.data.archive_members import Entry

    folders = sorted({"/".join(p.split("/")[:i]) for p in paths for i in range(1, p.count("/") + 1)})
    entries = [Entry(f, "directory", 0, f) for f in folders] + [Entry(p, "file", 10, p) for p in paths]
    return entries, lambda key: b""


def index_of(paths: list[str], **options):
    from tinyclf.data.formats.folder_layout import build_index

    entries, read = listing(paths)
    return build_index(entries, read, where="photos.zip", **{"val_fraction": 0.2, "split_seed": 0, **options})


def names(index, split: str) -> set[str]:
    return {e.name for e in index.members.get(split, [])}


def test_a_test_folder_is_a_third_split_and_val_is_drawn_beside_it():
    paths = ([f"train/{c}/{i}.jpg" for c in ("cat", "dog") for i in range(10)]
             + [f"testing/{c}/t{i}.jpg" for c in ("cat", "dog") for i in range(3)])
    index = index_of(paths)
    assert names(index, "test") == {p for p in paths if p.startswith("testing/")}
    assert index.labels["test"] == [0, 0, 0, 1, 1, 1]
    assert len(index.members["val"]) == 4 and len(index.members["train"]) == 16
    assert index.layout == "train folder + test folder, val drawn" and index.ignored == []
    assert not names(index, "test") & (names(index, "train") | names(index, "val"))


def test_a_test_class_that_train_lacks_is_refused_naming_it():
    paths = [f"train/{c}/{i}.jpg" for c in ("cat", "dog") for i in range(4)] + ["test/fox/1.jpg"]
    with pytest.raises(PrepareError, match=r"photos.zip: test/fox/ is a class that train/ does not have"):
        index_of(paths)


def test_test_fraction_draws_a_stable_test_split_after_val():
    paths = [f"{c}/{i:02d}.jpg" for c in ("cat", "dog", "eel") for i in range(20)]
    before = index_of(paths, test_fraction=0.1)
    assert np.bincount(before.labels["val"]).tolist() == [4, 4, 4]
    assert np.bincount(before.labels["test"]).tolist() == [2, 2, 2]
    assert before.layout == "class folders, val drawn, test drawn"
    # val is the split it was without a test share: test comes out of what was train.
    assert names(index_of(paths), "val") == names(before, "val")
    # Photos added to one class move nothing of the others between the three splits.
    after = index_of(paths + [f"eel/new_{i}.jpg" for i in range(5)], test_fraction=0.1)
    for split in ("train", "val", "test"):
        kept = {n for n in names(after, split) if not n.startswith("eel/")}
        assert kept == {n for n in names(before, split) if not n.startswith("eel/")}, split


def test_a_share_that_leaves_a_class_nothing_to_train_on_is_refused_naming_the_class():
    paths = [f"cat/{i}.jpg" for i in range(10)] + ["owl/1.jpg", "owl/2.jpg"]
    with pytest.raises(PrepareError, match=r"photos.zip: class owl has 2 image\(s\): data.val_fraction 0.2 and "
                                           r"data.test_fraction 0.1 would leave it none to train on"):
        index_of(paths, test_fraction=0.1)
