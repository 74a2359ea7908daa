"""Your own images (data.dataset: folder), from the download stage's packing to the prepared arrays.

Test folders are real: Tiny ImageNet subset images re-encoded into a user's folder of mixed formats
and sizes, an EXIF-rotated JPEG and stray files (tests/support/own_images.py), as a directory, a zip and a
tar.gz (served over a local HTTP server), plus each bad input the issue lists.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile

import numpy as np
import pytest
from PIL import Image, ImageOps
from support import own_images
from support.helpers import REAL_SUBSET
from support.http_server import FileServer

from tinyclf.data import images as image_files
from tinyclf.data.download import run_download
from tinyclf.data.fetch import DownloadError
from tinyclf.data.file_names import natural_key
from tinyclf.data.formats.contract import PrepareOptions
from tinyclf.data.formats.folder import read_folder_index
from tinyclf.data.pack import pack_directory
from tinyclf.data.preprocess import prepare
from tinyclf.errors import PrepareError
from tinyclf.params import params_from_dict

SIZE = 40


def folder_params(source, **data) -> object:
    return params_from_dict({"data": {"dataset": "folder", "image_size": SIZE, **data},
                             "download": {"source": str(source)}})


def md5(path) -> str:
    return hashlib.md5(open(path, "rb").read()).hexdigest()


def download_and_prepare(source, tmp_path, name="out", on_corrupt="fail", **data):
    params = folder_params(source, **data)
    archive = run_download(params, tmp_path / name / "raw", progress=False, backoff=0.01)
    options = PrepareOptions(image_size=SIZE, workers=1, on_corrupt=on_corrupt, progress=False,
                             resize=params.data.resize, val_fraction=params.data.val_fraction,
                             split_seed=params.data.split_seed)
    summary = prepare(archive, tmp_path / name / "prepared", "folder", options)
    return archive, summary


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    if not REAL_SUBSET.exists():
        pytest.skip(f"real Tiny ImageNet subset not present at {REAL_SUBSET}")
    real_subset = REAL_SUBSET
    root = tmp_path_factory.mktemp("own") / "photos"
    return own_images.build_photo_folder(root, real_subset, classes=6, train_per_class=12, val_per_class=4)


@pytest.fixture(scope="module")
def prepared(photos, tmp_path_factory):
    return download_and_prepare(photos.root, tmp_path_factory.mktemp("prepared"))


# ------------------------------------------------------------------ versioning a directory


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


# ------------------------------------------------------------------ what preprocess makes of it


def test_classes_counts_and_conversions_match_the_folder(photos, prepared):
    _, summary = prepared
    stats = summary.stats
    assert stats["dataset"] == "folder" and stats["generated"] is False and stats["image_size"] == [SIZE, SIZE]
    assert stats["folder"]["layout"] == "train/val folders"
    counts = photos.counts
    assert stats["splits"]["train"]["count"] == counts["train"] and stats["splits"]["val"]["count"] == counts["val"]
    converted = {k: stats["splits"]["train"]["converted"][k] + stats["splits"]["val"]["converted"][k]
                 for k in counts["conversions"]}
    assert converted == counts["conversions"]
    assert stats["splits"]["train"]["rotated"] + stats["splits"]["val"]["rotated"] == counts["rotated"] == 1
    # Stray files are skipped and counted: the pack leaves out hidden/system ones, preprocess the rest.
    assert stats["folder"]["not_images"]["count"] == counts["non_image_files"]
    assert sorted(stats["folder"]["not_images"]["first"]) == sorted(photos.non_image_files)


def test_class_ids_are_folders_and_names_come_from_the_mapping_file(photos, prepared):
    archive, summary = prepared
    classes = [(c["id"], c["name"]) for c in json.loads((archive.parent.parent / "prepared/classes.json").read_text())["classes"]]
    assert [cid for cid, _ in classes] == sorted(photos.class_dirs, key=natural_key)
    assert all(name == photos.readable[cid] for cid, name in classes)


def test_every_image_is_square_rgb_and_the_rotated_photo_is_upright(photos, prepared):
    archive, _ = prepared
    out = archive.parent.parent / "prepared"
    index = read_folder_index(archive, val_fraction=0.2, split_seed=0)
    split = photos.entries[photos.rotated].split
    images = np.load(out / split / "images.npy")
    assert images.shape[1:] == (SIZE, SIZE, 3) and images.dtype == np.uint8
    row = [e.name for e in index.members[split]].index(photos.rotated)
    upright = ImageOps.exif_transpose(Image.open(photos.root / photos.rotated)).convert("RGB")
    assert upright.size == photos.rotated_upright_size
    expected = image_files.fit_square(np.asarray(upright), SIZE, "center_crop")
    sideways = image_files.fit_square(np.asarray(Image.open(photos.root / photos.rotated).convert("RGB")),
                                      SIZE, "center_crop")
    err = np.abs(images[row].astype(int) - expected.astype(int)).mean()
    assert err < 4 < np.abs(images[row].astype(int) - sideways.astype(int)).mean(), err


def test_flat_folder_draws_a_stratified_val_split_stable_under_additions(tmp_path, real_subset):
    spec = own_images.build_photo_folder(tmp_path / "flat", real_subset, classes=3, train_per_class=10,
                                         val_per_class=0, layout="flat", variety=False, names_file=None)
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


def test_zip_and_served_tar_gz_give_the_same_arrays_as_the_folder(photos, prepared, tmp_path, capsys):
    archive, _ = prepared
    reference = archive.parent.parent / "prepared"
    zipped = own_images.pack_zip(photos.root, tmp_path / "photos.zip", top_dir="photos", macos_junk=True)
    targz = own_images.pack_tar_gz(photos.root, tmp_path / "photos.tar.gz", top_dir="My Photos")
    with FileServer({"/datasets/photos.tar.gz": targz.read_bytes()}, drop_after=5000) as server:
        # The connection drops once mid-file: the download resumes it, as for official archives.
        sources = [("zip", zipped), ("url", server.url("/datasets/photos.tar.gz"))]
        results = [(name, download_and_prepare(source, tmp_path, name=name)[0]) for name, source in sources]
        assert any("Range" in headers for _, headers, _ in server.requests)
    # Without download.md5 the stage says what it got, so the user can pin it: the md5 of the file
    # as fetched (the .tar.gz, not the tar it is unpacked to).
    said = capsys.readouterr().err
    for archive_file in (zipped, targz):
        assert f"md5 {md5(archive_file)} (set download.md5 to pin it)" in said
    for name, got in results:
        assert got.name == ("images.zip" if name == "zip" else "images.tar")
        assert sorted(p.name for p in got.parent.iterdir()) == [got.name]
        for split in ("train", "val"):
            for array in ("images.npy", "labels.npy"):
                assert np.array_equal(np.load(reference / split / array),
                                      np.load(got.parent.parent / "prepared" / split / array)), (name, split, array)


def test_a_wrong_md5_or_a_file_that_is_no_archive_keeps_nothing(photos, tmp_path):
    zipped = own_images.pack_zip(photos.root, tmp_path / "photos.zip")
    params = params_from_dict({"data": {"dataset": "folder", "image_size": SIZE},
                               "download": {"source": str(zipped), "md5": "0" * 32}})
    with pytest.raises(DownloadError, match="md5 mismatch"):
        run_download(params, tmp_path / "raw", progress=False)
    assert list((tmp_path / "raw").iterdir()) == []
    text = tmp_path / "notes.tar"
    text.write_text("not an archive\n" * 100)
    with pytest.raises(DownloadError, match="not a zip, tar or tar.gz archive"):
        run_download(folder_params(text), tmp_path / "raw", progress=False)
    assert list((tmp_path / "raw").iterdir()) == []


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("builder,message", [
    (own_images.empty_class_folder, "holds no images"),
    (own_images.val_class_missing_from_train, "is a class that train/ does not have"),
    (own_images.only_one_class, "fewer than two class folders"),
    # The user added train/lemon/ to a folder of class folders: say so, rather than "only 'lemon'".
    (own_images.train_folder_beside_class_folders,
     r"mixes two layouts, a train/ split folder \(only \w+\) and 11 top-level class folders \(\w+, \w+, \w+, …\) "
     r"that are ignored beside it: use either <root>/<class>/… or <root>/train/<class>/… \[\+ val/<class>/…\], "
     r"not both"),
    # val/ split off with the training classes left at the top: val must not become a class.
    (own_images.val_folder_beside_class_folders,
     r"has a val/ split folder but no train/ beside 4 top-level folder\(s\) \(\w+, \w+, \w+, …\): move the "
     r"training class folders into train/ \(<root>/train/<class>/… \+ val/<class>/…\), or rename val/ if it is a class"),
])
def test_a_broken_layout_is_refused_naming_the_folder(builder, message, tmp_path, real_subset):
    bad = builder(tmp_path / "bad", real_subset)
    out = tmp_path / "out" / "prepared"
    with pytest.raises(PrepareError, match=message) as err:
        download_and_prepare(bad.root, tmp_path)
    assert all(name in str(err.value) for name in bad.names), (str(err.value), bad.names)
    assert "\n" not in str(err.value) and not out.exists()


@pytest.mark.parametrize("builder", [own_images.truncated_jpeg, own_images.zero_byte_jpeg, own_images.text_as_image,
                                     own_images.decompression_bomb])
def test_a_bad_image_fails_naming_it_or_is_skipped_and_counted(builder, tmp_path, real_subset):
    bad = builder(tmp_path / "bad", real_subset)
    with pytest.raises(PrepareError) as err:
        download_and_prepare(bad.root, tmp_path)
    assert bad.names[0] in str(err.value) and "on_corrupt: skip" in str(err.value)
    assert not (tmp_path / "out" / "prepared").exists()
    _, summary = download_and_prepare(bad.root, tmp_path, name="skip", on_corrupt="skip")
    skipped = summary.stats["splits"]["train"]["skipped"] + summary.stats["splits"]["val"]["skipped"]
    assert [s.endswith(bad.names[0]) for s in skipped] == [True]


def test_gifs_in_a_class_folder_are_trained_on_their_first_frame(tmp_path, real_subset):
    """An animated GIF is one image, its first frame (what OpenCV decodes); a still GIF is an image too."""
    spec = own_images.build_photo_folder(tmp_path / "gifs", real_subset, classes=2, train_per_class=4,
                                         val_per_class=3, names_file=None, variety=False)
    frames = [Image.open(spec.root / rel).convert("RGB") for rel, _ in spec.splits["val"]
              if Image.open(spec.root / rel).mode == "RGB"][:3]  # real photos not among the train ones
    folder = spec.root / "train" / spec.class_dirs[0]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=200, loop=0)
    frames[2].save(folder / "still.GIF")
    assert Image.open(folder / "animated.gif").n_frames == 3 and not Image.open(folder / "still.GIF").is_animated
    archive, summary = download_and_prepare(spec.root, tmp_path)
    train = summary.stats["splits"]["train"]
    assert train["count"] == spec.counts["train"] + 2 and train["skipped"] == []
    assert summary.stats["folder"]["not_images"]["count"] == 0
    assert train["converted"]["palette"] == 2  # GIF stores a palette: counted like a palette PNG
    names = [e.name for e in read_folder_index(archive, val_fraction=0.2, split_seed=0).members["train"]]
    images = np.load(archive.parent.parent / "prepared" / "train" / "images.npy")

    def as_prepared(gif_name: str, frame: int) -> np.ndarray:  # PIL's reading of that frame, made square
        with Image.open(folder / gif_name) as gif:
            gif.seek(frame)
            return image_files.fit_square(np.asarray(gif.convert("RGB")), SIZE, "center_crop").astype(int)

    animated = images[names.index(f"train/{spec.class_dirs[0]}/animated.gif")].astype(int)
    assert np.abs(animated - as_prepared("animated.gif", 0)).max() <= 1
    assert np.abs(animated - as_prepared("animated.gif", 1)).mean() > 20  # not another frame
    still = images[names.index(f"train/{spec.class_dirs[0]}/still.GIF")].astype(int)
    assert np.abs(still - as_prepared("still.GIF", 0)).max() <= 1


def test_a_bomb_is_refused_from_its_header(tmp_path, real_subset):
    bad = own_images.decompression_bomb(tmp_path / "bad", real_subset, kind="png", width=30000, height=30000)
    with pytest.raises(PrepareError, match="refused before decoding"):
        download_and_prepare(bad.root, tmp_path)


def test_symlinks_outside_are_not_followed_and_inside_ones_are_copies(tmp_path, real_subset):
    outside = own_images.symlink_outside(tmp_path / "out_link", real_subset)
    _, summary = download_and_prepare(outside.root, tmp_path, name="o")
    links = summary.stats["folder"]["links_not_followed"]
    assert links == {"count": 1, "first": list(outside.names)}
    assert summary.stats["splits"]["train"]["count"] == outside.spec.counts["train"]
    inside = own_images.symlink_inside(tmp_path / "in_link", real_subset)
    _, summary = download_and_prepare(inside.root, tmp_path, name="i")
    assert summary.stats["folder"]["links_not_followed"]["count"] == 0
    assert summary.stats["splits"]["train"]["count"] == inside.spec.counts["train"] + 1


def test_duplicates_across_splits_are_named(tmp_path, real_subset, capsys):
    bad = own_images.duplicate_across_splits(tmp_path / "dup", real_subset)
    _, summary = download_and_prepare(bad.root, tmp_path)
    pairs = summary.stats["folder"]["duplicates_across_splits"]
    assert pairs["count"] == 1 and pairs["first"] == [list(bad.names)]
    assert "byte-identical" in capsys.readouterr().err


def test_a_missing_directory_or_image_size_is_a_one_line_error(tmp_path):
    from tinyclf.params import ParamsError

    with pytest.raises(ParamsError, match="data.image_size must be set"):
        params_from_dict({"data": {"dataset": "folder"}, "download": {"source": str(tmp_path)}})
    with pytest.raises(ParamsError, match="download.source must be your images"):
        params_from_dict({"data": {"dataset": "folder", "image_size": 64}})
    with pytest.raises(DownloadError, match="no such file"):
        run_download(folder_params(tmp_path / "nope"), tmp_path / "raw", progress=False)


def test_a_tar_made_with_dot_prefixes_and_a_lone_image_class(tmp_path, real_subset):
    """`tar -C photos -cf photos.tar .` names members ./cats/…; a class of one photo stays in train, noted."""
    spec = own_images.build_photo_folder(tmp_path / "flat", real_subset, classes=3, train_per_class=5,
                                         val_per_class=0, layout="flat", variety=False, names_file=None)
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
