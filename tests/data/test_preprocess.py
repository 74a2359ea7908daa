"""preprocess: archive readers, image decoding, the prepared-array format, the stage script.

Archives are real files: small Tiny ImageNet zips built here (with the awkward members a real
archive has: grayscale, CMYK, alpha, corrupt ones) and generated archives of both official formats.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support.bombs import png_bomb
from support.helpers import REPO, shrunk_params, venv_env, write_params

from tinyclf.data import arrays
from tinyclf.data.formats import cifar10, tiny_imagenet
from tinyclf.data.formats.contract import PrepareOptions
from tinyclf.data.formats.generated import write_archive
from tinyclf.data.images import decode_image
from tinyclf.data.preprocess import prepare
from tinyclf.errors import PrepareError

ROOT = "tiny-imagenet-200/"
# Deliberately not sorted: the class order must be wnids.txt's, not alphabetical.
WNIDS = ["n0000003", "n0000001", "n0000002"]
WORDS = {
    "n0000001": "goldfish, Carassius auratus",
    "n0000002": "tabby, tabby cat",
    "n0000003": "lesser panda, red panda, panda, bear cat, cat bear, Ailurus fulgens",
    "n0000009": "unused id, as most of the 82,115 lines are",
}
TRAIN_PER_CLASS = 12  # > 10, so "_10" must sort after "_2"
VAL_LABELS = ["n0000001", "n0000003", "n0000003", "n0000002", "n0000001", "n0000002"]


def _color(c: int, i: int) -> tuple[int, int, int]:
    """A distinct flat colour per (class, image) that survives JPEG nearly exactly."""
    return (40 + 60 * c, 10 + 9 * i, 250 - 9 * i)  # i < 27 stays within 0-255


def _jpeg(rgb, mode: str = "RGB", size: int = 64) -> bytes:
    img = Image.new("RGB", (size, size), rgb).convert(mode)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95)
    return buf.getvalue()


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def build_tiny_zip(path: Path, *, special: dict[str, bytes] | None = None, drop: tuple[str, ...] = ()) -> Path:
    """A Tiny ImageNet zip in the official layout; `special` replaces member bytes by name suffix."""
    special = special or {}
    members: dict[str, bytes] = {
        ROOT + "wnids.txt": ("\n".join(WNIDS) + "\n").encode(),
        # words.txt as published: tab-separated, no final newline.
        ROOT + "words.txt": "\n".join(f"{k}\t{v}" for k, v in WORDS.items()).encode(),
    }
    for c, wnid in enumerate(WNIDS):
        boxes = []
        for i in range(TRAIN_PER_CLASS):
            members[f"{ROOT}train/{wnid}/images/{wnid}_{i}.JPEG"] = _jpeg(_color(c, i))
            boxes.append(f"{wnid}_{i}.JPEG\t0\t0\t63\t63")
        members[f"{ROOT}train/{wnid}/{wnid}_boxes.txt"] = "\n".join(boxes).encode()
    lines = []
    for i, wnid in enumerate(VAL_LABELS):
        members[f"{ROOT}val/images/val_{i}.JPEG"] = _jpeg(_color(WNIDS.index(wnid), 20 + i))
        lines.append(f"val_{i}.JPEG\t{wnid}\t1\t2\t50\t60")
    members[ROOT + "val/val_annotations.txt"] = "\n".join(lines).encode() + b"\n"
    members[ROOT + "test/images/test_0.JPEG"] = b"unlabelled and never read"
    for suffix, data in special.items():
        (name,) = [n for n in members if n.endswith(suffix)]
        members[name] = data
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in sorted(members.items(), key=lambda kv: hash(kv[0]) % 97):  # zip order is arbitrary
            if not any(name.endswith(d) for d in drop):
                zf.writestr(name, data)
    return path


def _odd_members() -> dict[str, bytes]:
    """The member kinds a real archive can hold, each converted to RGB in a known way."""
    rgba = Image.new("RGBA", (64, 64), (10, 200, 30, 128))
    palette = Image.new("RGB", (64, 64), (255, 0, 51)).convert("P")  # a web-palette colour
    return {
        "n0000001_0.JPEG": _jpeg((90, 90, 90), mode="L"),
        "n0000001_1.JPEG": _jpeg((30, 90, 200), mode="CMYK"),
        "n0000002_0.JPEG": _png(rgba),  # content decides, not the name
        "n0000002_1.JPEG": _png(palette),
        "val_1.JPEG": _jpeg((120, 120, 120), mode="L"),
    }


@pytest.fixture
def tiny_zip(tmp_path):
    return build_tiny_zip(tmp_path / "tiny-imagenet-200.zip", special=_odd_members())


# ------------------------------------------------------------------------------ Tiny ImageNet


def test_tiny_imagenet_arrays_labels_and_classes(tiny_zip, tmp_path):
    out = tmp_path / "prepared"
    summary = prepare(tiny_zip, out, "tiny-imagenet", PrepareOptions(workers=1, progress=False))

    train_x, train_y = arrays.load_split(out, "train")
    val_x, val_y = arrays.load_split(out, "val")
    assert isinstance(train_x, np.memmap)
    assert train_x.shape == (3 * TRAIN_PER_CLASS, 64, 64, 3) and val_x.shape == (len(VAL_LABELS), 64, 64, 3)
    assert train_x.dtype == np.uint8 and train_y.dtype == np.int64 and val_y.dtype == np.int64
    assert train_x.flags["C_CONTIGUOUS"] and val_x.flags["C_CONTIGUOUS"]

    # Class order and names: wnids.txt order, synonyms from words.txt verbatim.
    classes = arrays.load_classes(out)
    assert classes["dataset"] == "tiny-imagenet" and classes["generated"] is False
    assert [c["id"] for c in classes["classes"]] == WNIDS
    assert [c["index"] for c in classes["classes"]] == [0, 1, 2]
    assert [c["name"] for c in classes["classes"]] == [WORDS[w] for w in WNIDS]

    # Train: grouped by class in wnids order, images in natural order (_2 before _10).
    assert train_y.tolist() == [c for c in range(3) for _ in range(TRAIN_PER_CLASS)]
    for row, (c, i) in enumerate((c, i) for c in range(3) for i in range(TRAIN_PER_CLASS)):
        if (WNIDS[c], i) in {("n0000001", 0), ("n0000001", 1), ("n0000002", 0), ("n0000002", 1)}:
            continue  # the odd members, checked below
        assert np.abs(train_x[row].astype(int) - _color(c, i)).max() <= 3, (row, c, i)
    # Val: labels from val_annotations.txt, rows in its order.
    assert val_y.tolist() == [WNIDS.index(w) for w in VAL_LABELS]
    assert np.abs(val_x[0].astype(int) - _color(WNIDS.index(VAL_LABELS[0]), 20)).max() <= 3

    # Conversions: grayscale -> three equal channels, CMYK/RGBA/palette -> their RGB colour.
    gold, tabby = TRAIN_PER_CLASS * WNIDS.index("n0000001"), TRAIN_PER_CLASS * WNIDS.index("n0000002")
    gray = train_x[gold]
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    assert abs(int(gray[0, 0, 0]) - 90) <= 2
    assert (val_x[1][..., 0] == val_x[1][..., 2]).all()
    assert np.abs(train_x[gold + 1].astype(int) - (30, 90, 200)).max() <= 6  # CMYK
    assert (train_x[tabby] == (10, 200, 30)).all()  # RGBA: alpha dropped
    assert (train_x[tabby + 1] == (255, 0, 51)).all()  # palette

    stats = arrays.load_stats(out)
    assert stats == summary.stats
    assert stats["dataset"] == "tiny-imagenet" and stats["image_size"] == [64, 64] and stats["generated"] is False
    assert stats["splits"]["train"]["converted"] == {"grayscale": 1, "palette": 1, "cmyk": 1, "rgba": 1, "16bit": 0, "other": 0}
    assert stats["splits"]["val"]["converted"] == {"grayscale": 1, "palette": 0, "cmyk": 0, "rgba": 0, "16bit": 0, "other": 0}
    assert stats["splits"]["train"]["per_class"] == [TRAIN_PER_CLASS] * 3
    assert stats["splits"]["val"]["per_class"] == [VAL_LABELS.count(w) for w in WNIDS]
    assert stats["splits"]["train"]["count"] == 36 and stats["splits"]["val"]["count"] == 6
    assert stats["splits"]["train"]["resized"] == 0 and stats["splits"]["train"]["skipped"] == []
    # mean/std: of the train split on the 0-1 scale, as numpy computes them from the array.
    pixels = np.asarray(train_x, dtype=np.float64).reshape(-1, 3) / 255
    np.testing.assert_allclose(stats["mean"], pixels.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(stats["std"], pixels.std(axis=0), atol=1e-6)


def test_resize_only_when_asked(tiny_zip, tmp_path):
    prepare(tiny_zip, tmp_path / "p32", "tiny-imagenet", PrepareOptions(image_size=32, workers=1, progress=False))
    x, _ = arrays.load_split(tmp_path / "p32", "train")
    stats = arrays.load_stats(tmp_path / "p32")
    assert x.shape == (36, 32, 32, 3) and stats["image_size"] == [32, 32]
    assert stats["splits"]["train"]["resized"] == 36 and stats["splits"]["val"]["resized"] == 6
    assert np.abs(x[2].astype(int) - _color(0, 2)).max() <= 3  # INTER_AREA keeps a flat colour flat


def test_parallel_workers_give_identical_output(tmp_path):
    archive = write_archive("tiny-imagenet", tmp_path / "t.zip", num_classes=3, train_per_class=40,
                            val_per_class=10, test_images=2, seed=1)
    prepare(archive, tmp_path / "one", "tiny-imagenet", PrepareOptions(workers=1, progress=False))
    prepare(archive, tmp_path / "two", "tiny-imagenet", PrepareOptions(workers=2, progress=False))
    for name in ("train/images.npy", "train/labels.npy", "val/images.npy", "val/labels.npy", "stats.json", "classes.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name


def test_generated_tiny_imagenet_is_marked_generated(tmp_path):
    archive = write_archive("tiny-imagenet", tmp_path / "t.zip", num_classes=4, train_per_class=30,
                            val_per_class=5, test_images=3, seed=0)
    summary = prepare(archive, tmp_path / "p", "tiny-imagenet", PrepareOptions(workers=1, progress=False))
    classes = arrays.load_classes(tmp_path / "p")
    assert classes["generated"] is True and summary.stats["generated"] is True
    assert [c["id"] for c in classes["classes"]] == [f"g{c:07d}" for c in range(4)]
    assert summary.stats["splits"]["train"]["per_class"] == [30] * 4
    assert summary.stats["splits"]["train"]["converted"]["grayscale"] >= 1  # the generator's 1-in-50 grayscale
    assert "GENERATED" in summary.describe()


# ------------------------------------------------------------------------------ corrupt members


@pytest.mark.parametrize(
    "bad_bytes, reason",
    [(b"\xff\xd8\xff\xe0 this is not image data", "truncated JPEG"), (b"definitely not an image", "not a decodable image")],
)
def test_corrupt_member_fails_naming_it(tmp_path, bad_bytes, reason):
    archive = build_tiny_zip(tmp_path / "a.zip", special={"n0000002_10.JPEG": bad_bytes})
    with pytest.raises(PrepareError) as err:
        prepare(archive, tmp_path / "out", "tiny-imagenet", PrepareOptions(workers=1, progress=False))
    message = str(err.value)
    assert f"{ROOT}train/n0000002/images/n0000002_10.JPEG" in message and reason in message
    assert "\n" not in message
    assert not (tmp_path / "out").exists()


def test_truncated_jpeg_is_corrupt_not_half_grey():
    whole = _jpeg((10, 20, 30))
    with pytest.raises(ValueError, match="truncated"):
        decode_image(whole[: len(whole) - 40], 64)
    # Bytes after the end-of-image marker (some writers append metadata) are not corruption.
    img, _, _ = decode_image(whole + b"\x00\x00trailer", 64)
    assert np.abs(img.astype(int) - (10, 20, 30)).max() <= 3


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
    assert y[row] == 2 and np.abs(x[row].astype(int) - _color(2, 11)).max() <= 3
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


def test_a_member_of_another_size_is_not_the_published_archive(tmp_path):
    member = f"{ROOT}val/images/val_3.JPEG"
    archive = build_tiny_zip(tmp_path / "a.zip", special={"val_3.JPEG": _jpeg((1, 2, 3), size=500)})
    with pytest.raises(PrepareError, match=rf"member {member} cannot be decoded: is 500x500, not 64x64"):
        prepare(archive, tmp_path / "out", "tiny-imagenet", PrepareOptions(workers=1, progress=False))


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


# ------------------------------------------------------------------------------ not the expected archive


def test_not_an_archive(tmp_path):
    junk = tmp_path / "tiny-imagenet-200.zip"
    junk.write_text("<html>404 not found</html>")
    with pytest.raises(PrepareError, match=r"tiny-imagenet-200\.zip: not a zip archive"):
        prepare(junk, tmp_path / "out", "tiny-imagenet", PrepareOptions(progress=False))
    with pytest.raises(PrepareError, match=r"tiny-imagenet-200\.zip: not a gzip-compressed tar archive"):
        prepare(junk, tmp_path / "out", "cifar10", PrepareOptions(progress=False))
    # The other dataset's archive: clear, names the file.
    tiny = build_tiny_zip(tmp_path / "t.zip")
    with pytest.raises(PrepareError, match=r"t\.zip: not a gzip-compressed tar archive"):
        cifar10.read(tiny, PrepareOptions())
    assert not (tmp_path / "out").exists()


def test_zip_without_wnids_or_annotations(tmp_path):
    with pytest.raises(PrepareError, match=r"no wnids\.txt inside"):
        tiny_imagenet.read_index(build_tiny_zip(tmp_path / "a.zip", drop=("wnids.txt",)))
    with pytest.raises(PrepareError, match=r"val_annotations\.txt inside"):
        tiny_imagenet.read_index(build_tiny_zip(tmp_path / "b.zip", drop=("val_annotations.txt",)))
    with pytest.raises(PrepareError, match=r"val_5\.JPEG, which the archive lacks"):
        tiny_imagenet.read_index(build_tiny_zip(tmp_path / "c.zip", drop=("val_5.JPEG",)))


def test_tar_without_batches(tmp_path):
    path = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/readme.html")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    with pytest.raises(PrepareError, match=r"no batches\.meta, data_batch_1.*test_batch inside"):
        cifar10.read(path, PrepareOptions())


# ------------------------------------------------------------------------------ CIFAR-10


@pytest.fixture(scope="module")
def cifar_archive(tmp_path_factory):
    path = tmp_path_factory.mktemp("cifar") / "cifar-10-python.tar.gz"
    return write_archive("cifar10", path, num_classes=10, train_per_class=15, val_per_class=6, test_images=0, seed=3)


def test_cifar10_equals_torchvision(cifar_archive, tmp_path):
    """Our arrays are exactly what torchvision's CIFAR10 yields from the extracted archive."""
    from torchvision.datasets import CIFAR10

    class LocalCIFAR10(CIFAR10):
        # torchvision checks each batch against the official md5; these are generated batches.
        def _check_integrity(self) -> bool:
            return True

    with tarfile.open(cifar_archive) as tar:
        tar.extractall(tmp_path / "extracted", filter="data")
    prepare(cifar_archive, tmp_path / "p", "cifar10", PrepareOptions(progress=False))
    classes = arrays.load_classes(tmp_path / "p")
    for split, train in (("train", True), ("val", False)):
        ours_x, ours_y = arrays.load_split(tmp_path / "p", split)
        theirs = LocalCIFAR10(tmp_path / "extracted", train=train, download=False)
        assert ours_x.shape == theirs.data.shape == (150 if train else 60, 32, 32, 3)
        np.testing.assert_array_equal(ours_x, theirs.data)
        assert ours_y.tolist() == list(theirs.targets)
        assert [c["name"] for c in classes["classes"]] == theirs.classes
        # And __getitem__'s PIL image is the same pixels.
        img, target = theirs[7]
        np.testing.assert_array_equal(np.asarray(img), ours_x[7])
        assert target == ours_y[7]
    assert [c["id"] for c in classes["classes"]][:2] == ["airplane", "automobile"]
    stats = arrays.load_stats(tmp_path / "p")
    assert stats["generated"] is True and stats["splits"]["train"]["per_class"] == [15] * 10
    assert stats["splits"]["train"]["converted"] == {"grayscale": 0, "palette": 0, "cmyk": 0, "rgba": 0, "16bit": 0, "other": 0}


def test_cifar10_resize(cifar_archive, tmp_path):
    prepare(cifar_archive, tmp_path / "p", "cifar10", PrepareOptions(image_size=16, progress=False))
    x, y = arrays.load_split(tmp_path / "p", "val")
    assert x.shape == (60, 16, 16, 3) and len(y) == 60
    assert arrays.load_stats(tmp_path / "p")["splits"]["val"]["resized"] == 60


def test_cifar10_refuses_code_in_pickles(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    import pickle

    path = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name in ("batches.meta",) + cifar10.TRAIN_BATCHES + cifar10.VAL_BATCHES:
            data = pickle.dumps({"label_names": ["a"], "evil": Evil()}, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(PrepareError, match=r"batches\.meta is not a readable CIFAR-10 pickle \(refusing to load (__builtin__|builtins)\.print\)"):
        cifar10.read(path, PrepareOptions())


# ------------------------------------------------------------------------------ atomicity


def test_failure_leaves_no_output_and_keeps_old_one(tmp_path):
    good = build_tiny_zip(tmp_path / "good.zip")
    bad = build_tiny_zip(tmp_path / "bad.zip", special={"val_3.JPEG": b"broken"})
    out = tmp_path / "data" / "prepared"

    with pytest.raises(PrepareError):
        prepare(bad, out, "tiny-imagenet", PrepareOptions(workers=1, progress=False))
    assert not out.exists()
    assert list(out.parent.iterdir()) == []  # no temp directory left behind either

    prepare(good, out, "tiny-imagenet", PrepareOptions(workers=1, progress=False))
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(PrepareError, match="val_3.JPEG"):
        prepare(bad, out, "tiny-imagenet", PrepareOptions(workers=1, progress=False))
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before and len(before) == 6
    assert sorted(p.name for p in out.parent.iterdir()) == ["prepared"]


def test_success_replaces_whole_directory(tmp_path):
    out = tmp_path / "prepared"
    (out / "train").mkdir(parents=True)
    (out / "train" / "stale.npy").write_bytes(b"from an older layout")
    prepare(build_tiny_zip(tmp_path / "a.zip"), out, "tiny-imagenet", PrepareOptions(workers=1, progress=False))
    assert not (out / "train" / "stale.npy").exists()
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [
        "classes.json", "stats.json", "train/images.npy", "train/labels.npy", "val/images.npy", "val/labels.npy",
    ]


def test_load_split_errors(tmp_path):
    with pytest.raises(arrays.PreparedDataError, match=r"nowhere/train/images\.npy: missing; run the preprocess stage"):
        arrays.load_split(tmp_path / "nowhere", "train")
    with pytest.raises(arrays.PreparedDataError, match=r"stats\.json: missing"):
        arrays.load_stats(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="unknown split 'test'"):
        arrays.load_split(tmp_path, "test")


# ------------------------------------------------------------------------------ image conversions


def test_decode_image_conversions():
    gray16 = Image.fromarray(np.full((8, 8), 65535 // 3, dtype=np.uint16))
    cases = {
        "grayscale": _jpeg((77, 77, 77), mode="L", size=8),
        "rgba": _png(Image.new("RGBA", (8, 8), (1, 2, 3, 4))),
        "cmyk": _jpeg((200, 40, 40), mode="CMYK", size=8),
        "16bit": _png(gray16),
        None: _png(Image.new("RGB", (8, 8), (5, 6, 7))),
    }
    for kind, data in cases.items():
        img, conversion, resized = decode_image(data, 8)
        assert conversion == kind and not resized
        assert img.shape == (8, 8, 3) and img.dtype == np.uint8
    assert (decode_image(cases[None], 8)[0] == (5, 6, 7)).all()  # RGB order, not OpenCV's BGR
    assert (decode_image(cases["16bit"], 8)[0] == 85).all()  # 16-bit scaled to 8-bit
    out = np.zeros((4, 4, 3), np.uint8)
    img, _, resized = decode_image(cases[None], 4, out=out)
    assert resized and (out == (5, 6, 7)).all()


# ------------------------------------------------------------------------------ the stage script


def _stage(tmp_path, raw: Path, dataset: str) -> subprocess.CompletedProcess:
    params = write_params(tmp_path / "params.yaml", shrunk_params(data__dataset=dataset, data__image_size=0, download__generated__num_classes=10))
    return subprocess.run(
        [sys.executable, str(REPO / "stages" / "preprocess.py"), "--raw", str(raw), "--out", str(tmp_path / "prepared"),
         "--params", str(params)],
        capture_output=True, text=True, env=venv_env(REPO), cwd=tmp_path, timeout=120,
    )


def test_stage_script_prepares_and_summarizes(tmp_path, cifar_archive):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "cifar-10-python.tar.gz").write_bytes(cifar_archive.read_bytes())
    proc = _stage(tmp_path, raw, "cifar10")
    assert proc.returncode == 0, proc.stderr
    assert "cifar10 (GENERATED data): train 150, val 60 images of 32x32" in proc.stdout
    assert "images/s" in proc.stdout
    assert json.loads((tmp_path / "prepared" / "stats.json").read_text())["splits"]["val"]["count"] == 60


def test_stage_script_wrong_or_missing_archive(tmp_path, cifar_archive):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "cifar-10-python.tar.gz").write_bytes(cifar_archive.read_bytes())
    proc = _stage(tmp_path, raw, "tiny-imagenet")
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("preprocess: ")
    assert "holds the cifar10 archive (cifar-10-python.tar.gz) but data.dataset is tiny-imagenet" in proc.stderr
    (raw / "cifar-10-python.tar.gz").unlink()
    proc = _stage(tmp_path, raw, "tiny-imagenet")
    assert proc.returncode == 1 and "tiny-imagenet-200.zip: missing; run the download stage" in proc.stderr
    assert not (tmp_path / "prepared").exists()
