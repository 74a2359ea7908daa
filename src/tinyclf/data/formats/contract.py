"""What a format module provides, and the one shape every format gives preprocess.

A format module (`registry.implementation(name)`) defines:

    decode_rule(options: PrepareOptions) -> DecodeRule | None
        How its archive members decode, or None when its splits are pixels already (the CIFARs).
        Asked before `read`, so the decoding processes start up while the index is read.
    read(archive: Path, options: PrepareOptions) -> FormatData
        Index (or, for pickled pixel batches, read) the archive; raise PrepareError naming the
        archive and what is wrong. No decoding here: preprocess decodes member splits in a pool of
        processes and writes every split the same way (`tinyclf.data.preprocess`).

and, when the registry gives it a generated stand-in (`stand_in_classes`):

    write_stand_in(fh, spec: StandInSpec) -> None
        Write a learnable synthetic dataset to the binary file `fh`, in the exact official layout
        (same member names, formats and quirks), the same bytes for the same spec.
    is_stand_in(archive: Path) -> bool
        Whether an archive of this format is such a stand-in (generated data must say so).

Plain data only (no numpy, no other tinyclf module), so a format module that imports this stays
cheap to import for the download stage, which writes stand-ins but decodes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class PrepareOptions:
    """What preprocess is asked for (params.yaml `data` and `preprocess`), the same for every format."""

    image_size: int = 0  # side of the prepared images; 0: the format's native size
    workers: int = 0  # decoding processes; 0: every core
    on_corrupt: str = "fail"  # an image that cannot be decoded: fail, or skip it and count it
    progress: bool = True  # progress bars on stderr
    # Your own images only: how a non-square photo becomes square, and the val split drawn per class
    # when the source has no val/ folder.
    resize: str = "center_crop"
    val_fraction: float = 0.2
    # Own images without a test/ folder: the share of each class held out as the test split.
    test_fraction: float = 0.0
    # Official datasets: the share of train carved out as val (the official val becomes test).
    val_from_train: float = 0.0
    split_seed: int = 0
    # data.corrections: a CSV of label fixes by source (`tinyclf.data.corrections`), read from the
    # working directory when relative; None: none.
    corrections: str | None = None


@dataclass(frozen=True)
class DecodeRule:
    """How archive members become rows: official archives (every image `native`×`native`, squashed
    if resized) or photos (`fit`: center_crop / squash / pad, EXIF orientation applied, content
    hashed so duplicates across splits can be named)."""

    native: int | None = None
    fit: str | None = None  # None: the official datasets' decode


@dataclass
class MemberSplit:
    """A split whose images are files inside the archive, decoded by preprocess."""

    members: list[tuple[str, Any]]  # (name for messages, key the archive reader takes), in row order
    labels: list[int]


@dataclass
class ArraySplit:
    """A split whose images are already pixels (CIFAR's pickled batches), copied by preprocess."""

    batches: list[tuple[np.ndarray, np.ndarray]]  # (uint8 N×H×W×3, possibly a view; int64 labels N)
    sources: list[str] | None = None  # each image's source, in order: "<batch file>#<row in it>"

    @property
    def count(self) -> int:
        return sum(len(labels) for _, labels in self.batches)


@dataclass
class FormatData:
    """A format's archive as preprocess needs it: classes in label order and each split's images."""

    classes: list[tuple[str, str]]  # (id, readable name) in label order
    splits: dict[str, MemberSplit | ArraySplit]  # train and val, and test when the data has one
    # Class groups, when the dataset has them (CIFAR-100's superclasses): group names in index order
    # and each class's group index; classes.json records them and the report shows per-group accuracy.
    groups: list[str] | None = None
    class_groups: list[int] | None = None
    # How a bad member is named in the error: "member x.JPEG" in an official archive; own images
    # name the file alone.
    member_prefix: str = "member "
    # After decoding: extra stats.json sections from each split's result (own images: duplicates
    # across splits, what was skipped, class balance), also the place to warn on stderr.
    finish: Callable[[dict], dict] | None = None


@dataclass(frozen=True)
class StandInSpec:
    """The size of a generated stand-in (params.yaml `download.generated`) and its random streams:
    one per split, so changing the test count leaves the train and val bytes unchanged."""

    num_classes: int
    train_per_class: int
    val_per_class: int
    test_images: int
    rng_train: Any = field(repr=False)
    rng_val: Any = field(repr=False)
    rng_test: Any = field(repr=False)
