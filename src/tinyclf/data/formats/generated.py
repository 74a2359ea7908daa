"""A small, learnable, synthetic dataset written in the exact official archive formats.

Offline runs and tests need data whose archive is byte-for-byte the shape of the real one (so the
real readers are exercised) and whose classes a ResNet can learn in a few CPU epochs (so later
stages show real learning). Each class is one combination of a colour, a shape/texture and a
background; every image jitters position, size, colours and adds noise, so no two are alike.

    write_archive("tiny-imagenet", "data/raw/tiny-imagenet-200.zip", num_classes=10,
                  train_per_class=100, val_per_class=20, test_images=20, seed=0)

Same arguments, same bytes: zip timestamps, tar mtimes/owners and the gzip header are fixed.
Generated archives mark themselves (see docs/architecture.md): Tiny ImageNet ids start with `g`
and the zip comment is `tinyclf-generated`; the CIFAR-10 tar holds a `tinyclf-generated` member.
"""

from __future__ import annotations

import colorsys
import gzip
import io
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from tinyclf.atomic import atomic_path

MARKER = "tinyclf-generated"
DATASETS = ("tiny-imagenet", "cifar10")

# The real CIFAR-10 label names: batches.meta is reproduced byte for byte, so these are fixed.
CIFAR10_LABEL_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_DIR = "cifar-10-batches-py"
TINY_DIR = "tiny-imagenet-200"

# Fixed archive metadata, so identical arguments give identical bytes.
_ZIP_DATE = (2021, 2, 15, 2, 18, 24)  # the timestamp the real archive's members carry
_TAR_MTIME = 1238454000  # 2009-03-31, the era of the real CIFAR-10 archive
_JPEG_QUALITY = 85
_GRAYSCALE_EVERY = 50  # one image in 50 is a true grayscale JPEG (real Tiny ImageNet: ~2%)

# --- class design --------------------------------------------------------------------------------
# 10 hues x 10 shapes x 2 backgrounds = 200 distinct classes. Class c uses hue c % 10, shape
# (c % 10 + c // 10) % 10 and background c // 100, a bijection for c < 200; with 10 classes every
# class differs in both hue and shape, which makes them separable even at 32x32.
_SHAPES = ("disc", "square", "triangle", "ring", "plus", "horizontal stripes", "vertical stripes",
           "checkerboard", "diamond", "cross")
_HUE_NAMES = ("red", "orange", "yellow", "lime", "green", "teal", "azure", "blue", "violet", "magenta")
_BACKGROUNDS = ("dark", "light")


def _class_design(c: int) -> tuple[int, int, int]:
    """(hue index, shape index, background index) of class c."""
    return c % 10, (c % 10 + c // 10) % 10, c // 100


def class_description(c: int) -> str:
    hue, shape, bg = _class_design(c)
    # words.txt style: the first comma-separated synonym is the short name plots use.
    return f"{_HUE_NAMES[hue]} {_SHAPES[shape]} on {_BACKGROUNDS[bg]}, generated class {c}"


def _hue_rgb(hue: int) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(hue / 10, 0.85, 0.92)) * 255


def _shape_mask(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean mask of a shape in coordinates normalised to the shape's half-size (|u|,|v| <= 1)."""
    box = np.maximum(np.abs(u), np.abs(v))
    rad = np.sqrt(u * u + v * v)
    name = _SHAPES[shape]
    if name == "disc":
        return rad <= 1
    if name == "square":
        return box <= 0.85
    if name == "triangle":  # apex up (image v grows downwards)
        return (v <= 0.8) & (np.abs(u) <= (v + 0.9) * 0.56)
    if name == "ring":
        return (rad <= 1) & (rad >= 0.55)
    if name == "plus":
        return ((np.abs(u) <= 0.3) & (np.abs(v) <= 1)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 1))
    if name == "horizontal stripes":
        return (box <= 0.9) & (np.floor((v + 1) * 2.5) % 2 == 0)
    if name == "vertical stripes":
        return (box <= 0.9) & (np.floor((u + 1) * 2.5) % 2 == 0)
    if name == "checkerboard":
        return (box <= 0.9) & ((np.floor((u + 1) * 2) + np.floor((v + 1) * 2)) % 2 == 0)
    if name == "diamond":
        return np.abs(u) + np.abs(v) <= 1
    if name == "cross":
        return (box <= 0.95) & ((np.abs(u - v) <= 0.4) | (np.abs(u + v) <= 0.4))
    raise AssertionError(name)


def render_images(labels: np.ndarray, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw one image per label: (uint8 N x size x size x 3 RGB, int N x 4 boxes x0,y0,x1,y1)."""
    n = len(labels)
    images = np.empty((n, size, size, 3), np.uint8)
    boxes = np.empty((n, 4), np.int64)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for i, label in enumerate(labels):
        hue, shape, bg = _class_design(int(label))
        half = size * rng.uniform(0.26, 0.42)
        cx = rng.uniform(half * 0.8, size - half * 0.8)
        cy = rng.uniform(half * 0.8, size - half * 0.8)
        mask = _shape_mask(shape, (xx - cx) / half, (yy - cy) / half)
        base = rng.uniform(15, 75) if bg == 0 else rng.uniform(165, 225)
        background = base + rng.normal(0, 6, 3)  # a slight tint
        colour = _hue_rgb(hue) * rng.uniform(0.8, 1.08) + rng.normal(0, 10, 3)
        img = np.where(mask[..., None], colour, background) + rng.normal(0, 9, (size, size, 3))
        images[i] = np.clip(img, 0, 255).astype(np.uint8)
        ys, xs = np.nonzero(mask)
        boxes[i] = (xs.min(), ys.min(), xs.max(), ys.max()) if len(xs) else (0, 0, size - 1, size - 1)
    return images, boxes


def _jpeg(image: np.ndarray, grayscale: bool) -> bytes:
    pil = Image.fromarray(image, "RGB")
    if grayscale:  # a true single-channel JPEG, as ~2% of the real Tiny ImageNet files are
        pil = pil.convert("L")
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", quality=_JPEG_QUALITY)
    return buf.getvalue()


def _is_gray(index: int) -> bool:
    return index % _GRAYSCALE_EVERY == _GRAYSCALE_EVERY // 2


# --- Tiny ImageNet zip ---------------------------------------------------------------------------


def generated_wnid(c: int) -> str:
    return f"g{c:07d}"


def _zip_add(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(f"{TINY_DIR}/{name}", date_time=_ZIP_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 3  # unix, like the real archive
    info.external_attr = 0o100644 << 16
    zf.writestr(info, data)


def _write_tiny_imagenet(fh, *, num_classes, train_per_class, val_per_class, test_images, rng_train, rng_val, rng_test):
    size = 64
    wnids = [generated_wnid(c) for c in range(num_classes)]
    with zipfile.ZipFile(fh, "w") as zf:
        zf.comment = MARKER.encode()
        # Member order, names and line formats mirror the real archive.
        _zip_add(zf, "wnids.txt", "".join(f"{w}\n" for w in wnids).encode())
        # words.txt: "id<TAB>name" lines and no final newline, like the real one.
        _zip_add(zf, "words.txt", "\n".join(f"{w}\t{class_description(c)}" for c, w in enumerate(wnids)).encode())
        for c, wnid in enumerate(wnids):
            images, boxes = render_images(np.full(train_per_class, c), size, rng_train)
            lines = []
            for i in range(train_per_class):
                fname = f"{wnid}_{i}.JPEG"
                _zip_add(zf, f"train/{wnid}/images/{fname}", _jpeg(images[i], _is_gray(i)))
                lines.append(f"{fname}\t" + "\t".join(str(int(b)) for b in boxes[i]) + "\n")
            _zip_add(zf, f"train/{wnid}/{wnid}_boxes.txt", "".join(lines).encode())
        # The real val split interleaves classes; labels come from val_annotations.txt.
        val_labels = rng_val.permutation(np.repeat(np.arange(num_classes), val_per_class))
        images, boxes = render_images(val_labels, size, rng_val)
        annotations = "".join(
            f"val_{i}.JPEG\t{wnids[label]}\t" + "\t".join(str(int(b)) for b in boxes[i]) + "\n"
            for i, label in enumerate(val_labels)
        )
        _zip_add(zf, "val/val_annotations.txt", annotations.encode())
        for i in range(len(val_labels)):
            _zip_add(zf, f"val/images/val_{i}.JPEG", _jpeg(images[i], _is_gray(i)))
        test_labels = rng_test.integers(0, num_classes, test_images)
        images, _ = render_images(test_labels, size, rng_test)
        for i in range(test_images):
            _zip_add(zf, f"test/images/test_{i}.JPEG", _jpeg(images[i], _is_gray(i)))


# --- CIFAR-10 python tar.gz ----------------------------------------------------------------------


class _Py2Pickler:
    """A protocol-2 pickler that writes text as Python 2 `str` (SHORT_BINSTRING / BINSTRING).

    The real CIFAR-10 batches were pickled by Python 2's cPickle, so their keys and strings are
    byte strings that Python 3 decodes with the `encoding=` argument of pickle.load: "latin1" gives
    str keys, "bytes" gives bytes keys and the default ("ASCII") fails on the image bytes.
    Python 3's pickle cannot produce that (it writes BINUNICODE), so this writes the opcodes
    directly, memoizing exactly as cPickle did: the real `batches.meta` comes out byte-identical.
    Supports dict, list, tuple, str, int, None, bool and uint8 numpy arrays.
    """

    def __init__(self) -> None:
        self.out = bytearray()
        self.memo = 0

    def dumps(self, obj) -> bytes:
        self.out += b"\x80\x02"  # PROTO 2
        self._save(obj)
        self.out += b"."  # STOP
        return bytes(self.out)

    def _put(self) -> None:
        self.memo += 1
        self.out += b"q" + bytes([self.memo]) if self.memo < 256 else b"r" + struct.pack("<I", self.memo)

    def _bytes(self, data: bytes) -> None:
        if len(data) < 256:
            self.out += b"U" + bytes([len(data)]) + data  # SHORT_BINSTRING
        else:
            self.out += b"T" + struct.pack("<I", len(data)) + data  # BINSTRING
        self._put()

    def _global(self, module: str, name: str) -> None:
        self.out += f"c{module}\n{name}\n".encode()
        self._put()

    def _int(self, value: int) -> None:
        if 0 <= value < 256:
            self.out += b"K" + bytes([value])
        elif 0 <= value < 65536:
            self.out += b"M" + struct.pack("<H", value)
        else:
            self.out += b"J" + struct.pack("<i", value)

    def _batched(self, items, one: bytes, many: bytes, save) -> None:
        items = list(items)
        for start in range(0, len(items), 1000):  # cPickle's batch size
            chunk = items[start:start + 1000]
            if len(chunk) == 1:
                save(chunk[0])
                self.out += one
            else:
                self.out += b"("
                for item in chunk:
                    save(item)
                self.out += many

    def _save(self, obj) -> None:
        if obj is None:
            self.out += b"N"
        elif isinstance(obj, bool):
            self.out += b"\x88" if obj else b"\x89"
        elif isinstance(obj, (int, np.integer)):
            self._int(int(obj))
        elif isinstance(obj, str):
            self._bytes(obj.encode("latin1"))
        elif isinstance(obj, bytes):
            self._bytes(obj)
        elif isinstance(obj, tuple):
            if len(obj) == 0:
                self.out += b")"
            elif len(obj) <= 3:
                for item in obj:
                    self._save(item)
                self.out += {1: b"\x85", 2: b"\x86", 3: b"\x87"}[len(obj)]
            else:
                self.out += b"("
                for item in obj:
                    self._save(item)
                self.out += b"t"
            self._put()
        elif isinstance(obj, list):
            self.out += b"]"
            self._put()
            self._batched(obj, b"a", b"e", self._save)
        elif isinstance(obj, dict):
            self.out += b"}"
            self._put()

            def save_item(kv):
                self._save(kv[0])
                self._save(kv[1])

            self._batched(obj.items(), b"s", b"u", save_item)
        elif isinstance(obj, np.ndarray):
            self._ndarray(obj)
        else:
            raise TypeError(f"cannot pickle {type(obj).__name__} in Python 2 form")

    def _ndarray(self, arr: np.ndarray) -> None:
        # What numpy 1.x's ndarray.__reduce__ gave under Python 2:
        # _reconstruct(ndarray, (0,), 'b') then __setstate__((1, shape, dtype, fortran, raw bytes)).
        if arr.dtype != np.uint8:
            raise TypeError(f"only uint8 arrays are supported, got {arr.dtype}")
        arr = np.ascontiguousarray(arr)
        self._global("numpy.core.multiarray", "_reconstruct")
        self._global("numpy", "ndarray")
        self._save((0,))
        self._save("b")
        self.out += b"\x87"  # TUPLE3
        self._put()
        self.out += b"R"  # REDUCE
        self._put()
        self.out += b"("
        self._save(1)
        self._save(tuple(arr.shape))
        self._global("numpy", "dtype")
        self._save(("u1", 0, 1))
        self.out += b"R"
        self._put()
        self._save((3, "|", None, None, None, -1, -1, 0))
        self.out += b"b"  # BUILD (dtype state)
        self._save(False)
        self._bytes(arr.tobytes())
        self.out += b"t"
        self._put()
        self.out += b"b"  # BUILD (array state)


def py2_pickle(obj) -> bytes:
    """Pickle `obj` the way Python 2's cPickle (protocol 2) did; see _Py2Pickler."""
    return _Py2Pickler().dumps(obj)


def cifar10_meta_bytes() -> bytes:
    """The official `batches.meta` (md5 5ff9c542aee3614f3951f8cda6e48888), byte for byte.

    It is kept verbatim (num_cases_per_batch stays 10000 even for smaller generated batches) so
    that readers relying on its exact form behave as on the real archive.
    """
    return py2_pickle({"num_cases_per_batch": 10000, "label_names": list(CIFAR10_LABEL_NAMES), "num_vis": 3072})


_CIFAR_README = (
    '<meta HTTP-EQUIV="REFRESH" content="0; url=http://www.cs.toronto.edu/~kriz/cifar.html">\n'
    "<!-- tinyclf-generated: synthetic images in the CIFAR-10 python format, not the real CIFAR-10 data -->\n"
)


def _cifar_batch(label: str, labels: np.ndarray, images: np.ndarray, first_index: int) -> bytes:
    # Rows are 3072 bytes: the 1024 red values (row-major), then green, then blue.
    data = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)
    filenames = [f"generated_{CIFAR10_LABEL_NAMES[int(y)]}_s_{first_index + i:06d}.png" for i, y in enumerate(labels)]
    # Key order of the real batches (as Python 2 iterated the dict).
    return py2_pickle({"batch_label": label, "labels": [int(y) for y in labels], "data": data, "filenames": filenames})


def _tar_add(tf: tarfile.TarFile, name: str, data: bytes | None) -> None:
    info = tarfile.TarInfo(f"{CIFAR10_DIR}/{name}" if name else CIFAR10_DIR)
    info.mtime = _TAR_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if data is None:
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        tf.addfile(info)
    else:
        info.mode = 0o644
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))


def _write_cifar10(fh, *, train_per_class, val_per_class, rng_train, rng_val):
    size = 32
    train_labels = rng_train.permutation(np.repeat(np.arange(10), train_per_class))
    train_images, _ = render_images(train_labels, size, rng_train)
    test_labels = rng_val.permutation(np.repeat(np.arange(10), val_per_class))
    test_images, _ = render_images(test_labels, size, rng_val)
    # gzip header: no file name, mtime 0 -> the bytes do not depend on the temp file or the clock.
    with gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=0, compresslevel=6) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tf:
            _tar_add(tf, "", None)
            # The marker comes first so is_generated() can answer without reading the batches.
            _tar_add(tf, MARKER, b"Synthetic images written by tinyclf in the CIFAR-10 python format; not CIFAR-10.\n")
            _tar_add(tf, "batches.meta", cifar10_meta_bytes())
            bounds = np.linspace(0, len(train_labels), 6).astype(int)
            for b in range(5):
                lo, hi = bounds[b], bounds[b + 1]
                batch = _cifar_batch(f"training batch {b + 1} of 5", train_labels[lo:hi], train_images[lo:hi], lo)
                _tar_add(tf, f"data_batch_{b + 1}", batch)
            _tar_add(tf, "readme.html", _CIFAR_README.encode())
            _tar_add(tf, "test_batch", _cifar_batch("testing batch 1 of 1", test_labels, test_images, 0))


# --- public API ----------------------------------------------------------------------------------


def write_archive(dataset: str, path: str | Path, *, num_classes: int, train_per_class: int, val_per_class: int,
                  test_images: int, seed: int) -> Path:
    """Write a generated dataset as the official archive of `dataset`, atomically; return the path.

    tiny-imagenet: 64x64 JPEG zip (2-200 classes); cifar10: 32x32 python tar.gz (exactly 10
    classes; test_images is ignored because CIFAR-10 has no unlabeled split).
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r} (known: {', '.join(DATASETS)})")
    if dataset == "cifar10" and num_classes != 10:
        raise ValueError(f"the CIFAR-10 format has exactly 10 classes, got num_classes={num_classes}")
    if not 2 <= num_classes <= 200:
        raise ValueError(f"num_classes must be 2-200, got {num_classes}")
    if train_per_class < 1 or val_per_class < 1 or test_images < 0:
        raise ValueError("train_per_class and val_per_class must be >= 1 and test_images >= 0")
    # Independent streams per split: changing the test count leaves train and val bytes unchanged.
    rng_train, rng_val, rng_test = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        if dataset == "tiny-imagenet":
            _write_tiny_imagenet(fh, num_classes=num_classes, train_per_class=train_per_class,
                                 val_per_class=val_per_class, test_images=test_images,
                                 rng_train=rng_train, rng_val=rng_val, rng_test=rng_test)
        else:
            _write_cifar10(fh, train_per_class=train_per_class, val_per_class=val_per_class,
                           rng_train=rng_train, rng_val=rng_val)
    return path


def is_generated(archive_path: str | Path) -> bool:
    """Whether an archive (Tiny ImageNet zip or CIFAR-10 tar.gz) was written by write_archive.

    Raises ValueError naming the file when it is neither a zip nor a gzip file.
    """
    archive_path = Path(archive_path)
    with open(archive_path, "rb") as fh:
        magic = fh.read(4)
    if magic.startswith(b"PK"):
        with zipfile.ZipFile(archive_path) as zf:
            if zf.comment == MARKER.encode():
                return True
            try:
                first = zf.read(f"{TINY_DIR}/wnids.txt").split(b"\n", 1)[0]
            except KeyError:
                return False
            return first.startswith(b"g")
    if magic.startswith(b"\x1f\x8b"):
        with tarfile.open(archive_path, "r:gz") as tf:
            # write_archive puts the marker before any file with data: stop at the first other file.
            for member in tf:
                if Path(member.name).name == MARKER:
                    return True
                if member.isfile():
                    return False
        return False
    raise ValueError(f"{archive_path}: neither a zip nor a gzip tar archive")
