"""tinyclf.data.decode_pool: members decoded into rows in a pool of processes. Any worker count gives
the same bytes; a member that cannot be read or decoded fails the run naming it, or with
on_corrupt: skip is left out and counted, the rows after it moving up with their labels; hostile
members (a decompression bomb, a member declaring more bytes than any image) are refused before
their pixels or bytes are produced. Archives: tests/support/data_archives.py's Tiny ImageNet zip.
"""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
from support.bombs import png_bomb
from support.data_archives import ROOT, TRAIN_PER_CLASS, VAL_LABELS, WNIDS, build_tiny_zip, color

from tinyclf.data import arrays
from tinyclf.data.formats.contract import PrepareOptions
from tinyclf.data.formats.generated import write_archive
from tinyclf.data.preprocess import prepare
from tinyclf.errors import PrepareError


def test_parallel_workers_give_identical_output(tmp_path):
    archive = write_archive("tiny-imagenet", tmp_path / "t.zip", num_classes=3, train_per_class=40,
                            val_per_class=10, test_images=2, seed=1)
    prepare(archive, tmp_path / "one", "tiny-imagenet", PrepareOptions(workers=1, progress=False))
    prepare(archive, tmp_path / "two", "tiny-imagenet", PrepareOptions(workers=2, progress=False))
    for name in ("train/images.npy", "train/labels.npy", "val/images.npy", "val/labels.npy", "stats.json",
                 "classes.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name


# ------------------------------------------------------------------------------ corrupt members


@pytest.mark.parametrize(
    "bad_bytes, reason",
    [(b"\xff\xd8\xff\xe0 this is not image data", "truncated JPEG"),
     (b"definitely not an image", "not a decodable image")],
)
def test_corrupt_member_fails_naming_it(tmp_path, bad_bytes, reason):
    archive = build_tiny_zip(tmp_path / "a.zip", special={"n0000002_10.JPEG": bad_bytes})
    with pytest.raises(PrepareError) as err:
        prepare(archive, tmp_path / "out", "tiny-imagenet", PrepareOptions(workers=1, progress=False))
    message = str(err.value)
    assert f"{ROOT}train/n0000002/images/n0000002_10.JPEG" in message and reason in message
    assert "\n" not in message
    assert not (tmp_path / "out").exists()


def test_damaged_zip_bytes_fail_the_crc_naming_the_member(tmp_path):
    archive = build_tiny_zip(tmp_path / "a.zip")
    member = f"{ROOT}val/images/val_4.JPEG"
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo(member)
    raw = bytearray(archive.read_bytes())
    # Inside the member's compressed data: past the local header (30 bytes + name), not the end.
    spot = info.header_offset + 30 + len(member) + info.compress_size // 2
    raw[spot] ^= 0xFF
    archive.write_bytes(bytes(raw))
    with pytest.raises(PrepareError, match=rf"member {member} cannot be read from the zip"):
        prepare(archive, tmp_path / "out", "tiny-imagenet", PrepareOptions(workers=1, progress=False))


def test_corrupt_member_skipped_and_counted(tmp_path):
    bad = "n0000002_10.JPEG"
    archive = build_tiny_zip(tmp_path / "a.zip", special={bad: b"garbage", "val_2.JPEG": b""})
    summary = prepare(archive, tmp_path / "out", "tiny-imagenet",
                      PrepareOptions(workers=1, on_corrupt="skip", progress=False))
    x, y = arrays.load_split(tmp_path / "out", "train")
    vx, vy = arrays.load_split(tmp_path / "out", "val")
    stats = arrays.load_stats(tmp_path / "out")
    assert stats["splits"]["train"]["skipped"] == [f"{ROOT}train/n0000002/images/{bad}"]
    assert stats["splits"]["val"]["skipped"] == [f"{ROOT}val/images/val_2.JPEG"]
    assert x.shape[0] == len(y) == 35 and stats["splits"]["train"]["count"] == 35
    assert stats["splits"]["train"]["per_class"] == [12, 12, 11]
    # The rows after the skipped one moved up with their labels: n0000002_11 follows _9.
    row = 2 * TRAIN_PER_CLASS + 10
    assert y[row] == 2 and np.abs(x[row].astype(int) - color(2, 11)).max() <= 3
    assert vy.tolist() == [WNIDS.index(w) for i, w in enumerate(VAL_LABELS) if i != 2] and len(vx) == 5
    assert summary.stats == stats


# ------------------------------------------------------------------------------ hostile members


def test_a_decompression_bomb_is_refused_from_its_header_naming_it(tmp_path):
    """A 20000x20000 PNG of a few hundred KB, as the first train member: refused before decoding."""
    first = f"{ROOT}train/n0000003/images/n0000003_0.JPEG"  # the first train member (wnids.txt order)
    archive = build_tiny_zip(tmp_path / "a.zip", special={"n0000003_0.JPEG": png_bomb(20000, 20000)})
    with pytest.raises(PrepareError) as err:
        prepare(archive, tmp_path / "out", "tiny-imagenet", PrepareOptions(workers=2, progress=False))
    assert f"member {first}" in str(err.value) and "20000x20000 pixels, over the limit" in str(err.value)
    assert not (tmp_path / "out").exists()
    # With on_corrupt: skip it is left out and counted; nothing was resized into the training set.
    prepare(archive, tmp_path / "out", "tiny-imagenet", PrepareOptions(workers=2, on_corrupt="skip", progress=False))
    stats = arrays.load_stats(tmp_path / "out")
    assert stats["splits"]["train"]["skipped"] == [first] and stats["splits"]["train"]["resized"] == 0
    assert stats["splits"]["train"]["count"] == 3 * TRAIN_PER_CLASS - 1


def test_a_member_declaring_more_bytes_than_any_image_is_not_read(tmp_path):
    """65 MiB of zeros deflate to ~65 KB; the declared size refuses it before it is inflated."""
    archive = build_tiny_zip(tmp_path / "a.zip")
    member = f"{ROOT}train/n0000001/images/n0000001_5.JPEG"
    rebuilt = tmp_path / "b.zip"
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(rebuilt, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if info.filename != member:
                dst.writestr(info, src.read(info))
        with dst.open(member, "w", force_zip64=True) as out:
            for _ in range(65):
                out.write(bytes(2**20))
    assert rebuilt.stat().st_size < 2**20
    with pytest.raises(PrepareError, match=rf"member {member} is refused: it declares 68,157,440 bytes"):
        prepare(rebuilt, tmp_path / "out", "tiny-imagenet", PrepareOptions(workers=1, progress=False))
