"""The CIFAR "python version" archives (CIFAR-10 and CIFAR-100): Python-2 pickles in a tar.gz.

Reading: the tar.gz is streamed once, front to back (no seeks back through the gzip data), and
each wanted member is unpickled the way torchvision reads them (`encoding="latin1"`), through an
unpickler that only accepts the few numpy globals an array needs, so a hostile archive cannot run
code. A batch's "data" is N×3072 uint8 (1024 red values, row-major, then green, then blue), seen as
N×32×32×3 without a copy.

Writing (the generated stand-ins): `py2_pickle` pickles exactly as Python 2's cPickle did, and
`write_tar_gz` packs members with fixed metadata, so the same content gives the same bytes.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np

from tinyclf.errors import PrepareError

SIDE = 32
ROW_BYTES = 3 * SIDE * SIDE
TAR_MTIME = 1238454000  # 2009-03-31, the era of the real CIFAR archives

# Globals a pickled numpy array needs (numpy 1.x and 2.x module names, Python-2 and -3 picklers).
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how Python 3 writes bytes into a protocol-2 pickle
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


# ------------------------------------------------------------------------------------- reading


def read_members(path: Path, wanted: tuple[str, ...], title: str) -> dict[str, tuple[str, dict]]:
    """{base name: (member name, unpickled dict)} of the members named in `wanted` (by base name,
    whatever folder they sit in). Raises PrepareError naming the archive when one is missing."""
    found: dict[str, tuple[str, dict]] = {}
    try:
        with tarfile.open(path, mode="r|gz") as tar:
            for info in tar:
                base = info.name.rsplit("/", 1)[-1]
                if not info.isfile() or base not in wanted or base in found:
                    continue
                found[base] = (info.name, _unpickle(tar.extractfile(info).read(), info.name, path, title))
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise PrepareError(f"{path}: not a gzip-compressed tar archive ({exc}); expected the {title} python "
                           "archive") from None
    missing = [name for name in wanted if name not in found]
    if missing:
        raise PrepareError(f"{path}: no {', '.join(missing)} inside; not the {title} python archive")
    return found


def _unpickle(data: bytes, member: str, archive: Path, title: str) -> dict:
    try:
        obj = _ArrayOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as exc:  # any unpickling failure means the member is not a CIFAR batch
        raise PrepareError(f"{archive}: member {member} is not a readable {title} pickle ({exc})") from None
    if not isinstance(obj, dict):
        raise PrepareError(f"{archive}: member {member} holds {type(obj).__name__}, expected a dict")
    return obj


def label_names(meta: dict, key: str, member: str, archive: Path) -> list[str]:
    """The list of names under `key` of a meta member (batches.meta, meta)."""
    names = meta.get(key)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or not names:
        raise PrepareError(f"{archive}: member {member} has no '{key}' list")
    return names


def batch(obj: dict, member: str, archive: Path, label_key: str, num_labels: int) -> tuple[np.ndarray, np.ndarray]:
    """(images N×32×32×3 uint8 view, int64 labels) of an unpickled batch, labels read from `label_key`
    and checked to lie in 0..num_labels-1."""
    data, labels = obj.get("data"), obj.get(label_key)
    if not isinstance(data, np.ndarray) or labels is None:
        raise PrepareError(f"{archive}: member {member} lacks the 'data' array or the '{label_key}' list")
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != ROW_BYTES:
        raise PrepareError(f"{archive}: member {member} data is {data.dtype} {data.shape}, expected uint8 N×3072")
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (data.shape[0],):
        raise PrepareError(f"{archive}: member {member} has {len(labels)} labels for {data.shape[0]} images")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_labels):
        raise PrepareError(f"{archive}: member {member} has a label outside 0..{num_labels - 1}")
    # Row layout: 1024 red, 1024 green, 1024 blue values, each plane row-major. A view, no copy.
    return data.reshape(-1, 3, SIDE, SIDE).transpose(0, 2, 3, 1), labels


# ------------------------------------------------------------------------------------- writing


def pixel_rows(images: np.ndarray) -> np.ndarray:
    """uint8 N×32×32×3 -> the N×3072 rows of a batch's "data" (red plane, green, blue)."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), ROW_BYTES)


def write_tar_gz(fh, root: str, members: list[tuple[str, bytes | None]]) -> None:
    """A gzip-compressed GNU tar of `root/` and `root/<name>` members (data None: the folder itself),
    in the given order, with fixed times, owners and modes, and a gzip header without a file name or
    time: the same members give the same bytes, wherever and whenever they are written."""
    with gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=0, compresslevel=6) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tf:
            for name, data in members:
                _tar_add(tf, f"{root}/{name}" if name else root, data)


def _tar_add(tf: tarfile.TarFile, name: str, data: bytes | None) -> None:
    info = tarfile.TarInfo(name)
    info.mtime = TAR_MTIME
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


def tar_has_member(path: Path, base_name: str) -> bool:
    """Whether a tar.gz holds `base_name` before its first other file with data (where the stand-ins
    put their marker), reading no further than that."""
    with tarfile.open(path, "r:gz") as tf:
        for member in tf:
            if Path(member.name).name == base_name:
                return True
            if member.isfile():
                return False
    return False


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
