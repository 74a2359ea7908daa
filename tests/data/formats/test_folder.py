"""tinyclf.data.formats.folder: your own images (data.dataset: folder) prepared from a real photo
folder: counts and conversions as the folder holds them, every image square and upright, bad
images failed on by name or skipped and counted, GIFs, duplicates across the splits.

Test folders are real: Tiny ImageNet subset images re-encoded into a user's folder of mixed formats
and sizes, an EXIF-rotated JPEG and stray files (tests/support/own_images_folders.py), plus each bad
input the issue lists (tests/support/own_images_bad_inputs.py). The layout (classes, splits, refused
layouts): test_folder_layout.py; packing a directory: tests/data/test_pack.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageOps
from support import own_images_bad_inputs
from support.own_images_folders import FolderOptions, build_photo_folder
from support.own_images_run import SIZE, download_and_prepare

from tinyclf.data import images as image_files
from tinyclf.data.formats.folder import read_folder_index
from tinyclf.errors import PrepareError


def test_classes_counts_and_conversions_match_the_folder(photos, photos_prepared):
    _, summary = photos_prepared
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


def test_every_image_is_square_rgb_and_the_rotated_photo_is_upright(photos, photos_prepared):
    archive, _ = photos_prepared
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


@pytest.mark.parametrize("builder", [own_images_bad_inputs.truncated_jpeg, own_images_bad_inputs.zero_byte_jpeg,
                                     own_images_bad_inputs.text_as_image, own_images_bad_inputs.decompression_bomb])
def test_a_bad_image_fails_naming_it_or_is_skipped_and_counted(builder, tmp_path, real_subset):
    bad = builder(tmp_path / "bad", real_subset)
    with pytest.raises(PrepareError) as err:
        download_and_prepare(bad.root, tmp_path)
    assert bad.names[0] in str(err.value) and "on_corrupt: skip" in str(err.value)
    if builder is own_images_bad_inputs.decompression_bomb:  # refused from its header, never decoded
        assert "refused before decoding" in str(err.value)
    assert not (tmp_path / "out" / "prepared").exists()
    _, summary = download_and_prepare(bad.root, tmp_path, name="skip", on_corrupt="skip")
    skipped = summary.stats["splits"]["train"]["skipped"] + summary.stats["splits"]["val"]["skipped"]
    assert [s.endswith(bad.names[0]) for s in skipped] == [True]


def test_gifs_in_a_class_folder_are_trained_on_their_first_frame(tmp_path, real_subset):
    """An animated GIF is one image, its first frame (what OpenCV decodes); a still GIF is an image too."""
    spec = build_photo_folder(tmp_path / "gifs", real_subset, FolderOptions(
        classes=2, train_per_class=4, val_per_class=3, names_file=None, variety=False))
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


def test_duplicates_across_splits_are_named(tmp_path, real_subset, capsys):
    bad = own_images_bad_inputs.duplicate_across_splits(tmp_path / "dup", real_subset)
    _, summary = download_and_prepare(bad.root, tmp_path)
    pairs = summary.stats["folder"]["duplicates_across_splits"]
    assert pairs["count"] == 1 and pairs["first"] == [list(bad.names)]
    assert "byte-identical" in capsys.readouterr().err
