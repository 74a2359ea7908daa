"""The dataset formats tinyclf reads, and the one owner of each format's facts.

A format's facts — its name in params.yaml (`data.dataset`), where its official archive is
published and how that file starts, the side length of its images, how many classes its generated
stand-in may have — are declared here once, and everything else asks this module: params.yaml's
validation, the download stage, preprocess, the generated source.

What a format does — index and read its archive, write its generated stand-in — lives in its own
module beside this one (`tinyclf.data.formats.<module>`), loaded by `implementation(name)` and
`stand_in(name)`. Facts and code are apart on purpose: params.py, which every stage imports, needs
the facts, and dvc.yaml makes a stage depend on every module it imports, so an edit to a format's
reader must not re-run training. This module therefore imports nothing heavy.

Adding a dataset: one entry in FORMATS, one module implementing `contract.py`'s protocol (with its
generated stand-in, in the exact official layout), and tests.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from types import ModuleType


@dataclass(frozen=True)
class OfficialArchive:
    """An archive as its authors publish it; the download stage fetches it and checks it."""

    url: str
    filename: str  # its name, also under data/raw/ whatever the source
    md5: str
    magic: bytes  # how the file starts
    kind: str  # what that makes it, for messages ("a zip archive"): "zip", "gzip tar"


@dataclass(frozen=True)
class DatasetFormat:
    name: str  # data.dataset
    title: str  # for messages: "CIFAR-10"
    module: str  # the implementation, tinyclf.data.formats.<module>
    official: OfficialArchive | None  # None: the user's own images
    native_size: int | None  # side of every image in the official archive; None: no common size
    stand_in_classes: tuple[int, int] | None  # (min, max) classes of a generated stand-in; None: none

    @property
    def own_images(self) -> bool:
        return self.official is None


_ZIP = b"PK\x03\x04"
_GZIP = b"\x1f\x8b"

FORMATS = (
    DatasetFormat(
        name="tiny-imagenet", title="Tiny ImageNet", module="tiny_imagenet",
        official=OfficialArchive(url="http://cs231n.stanford.edu/tiny-imagenet-200.zip",
                                 filename="tiny-imagenet-200.zip", md5="90528d7ca1a48142e341f4ef8d21d0de",
                                 magic=_ZIP, kind="zip"),
        native_size=64, stand_in_classes=(2, 200)),
    DatasetFormat(
        name="cifar10", title="CIFAR-10", module="cifar10",
        official=OfficialArchive(url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                                 filename="cifar-10-python.tar.gz", md5="c58f30108f718f92721af3b95e74349a",
                                 magic=_GZIP, kind="gzip tar"),
        native_size=32, stand_in_classes=(10, 10)),
    DatasetFormat(
        name="cifar100", title="CIFAR-100", module="cifar100",
        official=OfficialArchive(url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                                 filename="cifar-100-python.tar.gz", md5="eb9058c3a382ffc7106e4002c42a8d85",
                                 magic=_GZIP, kind="gzip tar"),
        native_size=32, stand_in_classes=(100, 100)),
    DatasetFormat(
        name="folder", title="your own images", module="folder",
        official=None, native_size=None, stand_in_classes=None),
)
_BY_NAME = {f.name: f for f in FORMATS}

# Your own images (data.dataset: folder): a directory source is packed by the download stage into
# one deterministic archive under this name; an archive source keeps its kind.
OWN_ARCHIVE_STEM = "images"
OWN_ARCHIVE_SUFFIXES = (".tar", ".zip", ".tar.gz", ".tgz")


def names() -> tuple[str, ...]:
    return tuple(_BY_NAME)


def get(name: str) -> DatasetFormat:
    """The format called `name`; ValueError naming the known ones (with a close match) otherwise."""
    if name not in _BY_NAME:
        close = difflib.get_close_matches(name, list(_BY_NAME), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(_BY_NAME)}{hint}")
    return _BY_NAME[name]


def official_formats() -> tuple[DatasetFormat, ...]:
    return tuple(f for f in FORMATS if f.official is not None)


def own_archive_filename(source: str) -> str:
    """The name under data/raw/ of your own images fetched from `source`: images.<its archive
    suffix>, or images.tar for a directory (which the download stage packs). An official dataset's
    archive keeps its published name (`get(name).official.filename`), whatever the source."""
    name = source.rstrip("/").split("?")[0].lower()
    for suffix in sorted(OWN_ARCHIVE_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return OWN_ARCHIVE_STEM + (".tar.gz" if suffix == ".tgz" else suffix)
    return OWN_ARCHIVE_STEM + ".tar"


def prepared_image_size(name: str, image_size: int) -> int:
    """`data.image_size` resolved: the side of the prepared images, 0 meaning the format's native size.
    ValueError for a format without one (own images): the size must then be given."""
    if image_size:
        return image_size
    fmt = get(name)
    if fmt.native_size is None:
        raise ValueError(f"data.image_size must be set (> 0) for data.dataset={name}: its images have no "
                         "common size; typical: 64-224")
    return fmt.native_size


def implementation(name: str) -> ModuleType:
    """The module that reads format `name` (`contract.py` says what it provides)."""
    return importlib.import_module(f"{__package__}.{get(name).module}")


def stand_in(name: str) -> ModuleType:
    """The module that writes format `name`'s generated stand-in; ValueError for a format without one."""
    fmt = get(name)
    if fmt.stand_in_classes is None:
        raise ValueError(f"{fmt.title} has no generated stand-in (data.dataset={name})")
    return implementation(name)
