"""tinyclf.data.formats.cifar_python: both CIFARs' Python-2 pickles, written faithfully (the memo
beyond 255 entries) and read safely (a pickle that would run code is refused, naming the member)."""

from __future__ import annotations

import io
import pickle
import tarfile

import pytest

from tinyclf.data.formats import cifar10
from tinyclf.data.formats.cifar_python import py2_pickle
from tinyclf.data.formats.contract import PrepareOptions
from tinyclf.errors import PrepareError


def test_py2_pickle_round_trips_memo_beyond_255():
    obj = {"names": [f"n{i}" for i in range(1500)], "x": -1, "big": 70000, "t": (1, "a", None, True)}
    assert pickle.loads(py2_pickle(obj), encoding="latin1") == {**obj, "t": (1, "a", None, True)}


def test_cifar10_refuses_code_in_pickles(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name in ("batches.meta",) + cifar10.TRAIN_BATCHES + cifar10.VAL_BATCHES:
            data = pickle.dumps({"label_names": ["a"], "evil": Evil()}, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(PrepareError, match=r"batches\.meta is not a readable CIFAR-10 pickle "
                                           r"\(refusing to load (__builtin__|builtins)\.print\)"):
        cifar10.read(path, PrepareOptions())
