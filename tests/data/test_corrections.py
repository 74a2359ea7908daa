"""tinyclf.data.corrections: `data.corrections` (a versioned CSV of label fixes) applied by preprocess.

Real formats and real archives, prepared by `tinyclf.data.preprocess.prepare`: a photo folder packed
as the download stage packs it (member splits, decoded), the hand-built Tiny ImageNet zip
(tests/support/data_archives.py) and a generated CIFAR-10 archive (pixel splits). Relabel and drop
change exactly the lines' images; a file of only the header changes no byte; every bad file fails
in one line naming the file and line before anything is decoded or written; removing a line
restores the image.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support.data_archives import VAL_LABELS, build_tiny_zip
from support.helpers import load_stage, shrunk_params, write_params

from tinyclf.data import preprocess
from tinyclf.data.corrections import Correction, read_corrections
from tinyclf.data.formats.contract import PrepareOptions
from tinyclf.data.pack import pack_directory
from tinyclf.data.preprocess import prepare
from tinyclf.errors import PrepareError
from tinyclf.report.sections.dataset import corrections_lines

HEADER = "source,action,class"
CLASSES = ("cat", "dog", "fox")
SIZE = 8  # the photos' prepared side: tiny, what is checked is which image goes where


@pytest.fixture(scope="module")
def photos_tar(tmp_path_factory) -> Path:
    """A photo folder (3 classes, 3 train and 2 val photos each, every photo its own flat colour)
    packed into images.tar as the download stage packs it."""
    root = tmp_path_factory.mktemp("photos")
    for split, count in (("train", 3), ("val", 2)):
        for c, name in enumerate(CLASSES):
            folder = root / "photos" / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (12, 10), (90 * c, 40 * i, 200 * (split == "val"))).save(folder / f"{name}{i}.png")
    pack_directory(root / "photos", root / "images.tar", progress=False)
    return root / "images.tar"


@pytest.fixture(scope="module")
def tiny_zip(tmp_path_factory) -> Path:
    return build_tiny_zip(tmp_path_factory.mktemp("tiny") / "tiny-imagenet-200.zip")


ARCHIVES = {"folder": "photos_tar", "tiny-imagenet": "tiny_zip", "cifar10": "cifar10_archive"}


def run(request, dataset: str, out: Path, corrections: Path | None = None, **options):
    """prepare() of `dataset`'s test archive into `out`, with `corrections` as data.corrections."""
    archive = request.getfixturevalue(ARCHIVES[dataset])
    size = SIZE if dataset == "folder" else 0
    return prepare(archive, out, dataset, PrepareOptions(image_size=size, workers=1, progress=False,
                                                         corrections=None if corrections is None else str(corrections),
                                                         **options))


def corrections_file(path: Path, *lines: str) -> Path:
    path.write_text("\n".join([HEADER, *lines]) + "\n")
    return path


def files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def by_source(out: Path, split: str) -> dict[str, tuple[int, bytes]]:
    """Each image of a prepared split by its source: (label, pixels)."""
    sources = json.loads((out / split / "sources.json").read_text())
    images, labels = np.load(out / split / "images.npy"), np.load(out / split / "labels.npy")
    assert len(sources) == len(images) == len(labels)
    return {s: (int(label), image.tobytes()) for s, label, image in zip(sources, labels, images)}


def changed(before: Path, after: Path, split: str) -> dict[str, tuple]:
    """What differs in a split: source -> (label before or None, label after or None)."""
    old, new = by_source(before, split), by_source(after, split)
    for source in old.keys() & new.keys():
        assert old[source][1] == new[source][1], f"{source}: pixels changed"
    return {s: (old.get(s, (None,))[0], new.get(s, (None,))[0]) for s in old.keys() | new.keys()
            if old.get(s, (None,))[0] != new.get(s, (None,))[0]}


# ------------------------------------------------------------------------------ relabel and drop, per format
def test_own_photos_relabelled_and_dropped_and_restored(request, tmp_path, capsys):
    before = tmp_path / "before"
    run(request, "folder", before)
    fixes = corrections_file(tmp_path / "corrections.csv", "train/cat/cat0.png,relabel,dog", "val/fox/fox1.png,drop")
    stats = run(request, "folder", tmp_path / "after", fixes).stats
    assert "corrections.csv: relabelled 1, dropped 1 images" in capsys.readouterr().err
    assert changed(before, tmp_path / "after", "train") == {"train/cat/cat0.png": (0, 1)}
    assert changed(before, tmp_path / "after", "val") == {"val/fox/fox1.png": (2, None)}
    assert stats["splits"]["train"]["count"] == 9 and stats["splits"]["train"]["per_class"] == [2, 4, 3]
    assert stats["splits"]["val"]["count"] == 5 and stats["splits"]["val"]["per_class"] == [2, 2, 1]
    assert stats["class_balance"]["min"] == 2 and stats["class_balance"]["max"] == 4
    assert stats["corrections"] == {
        "file": "corrections.csv", "lines": 2, "relabelled": 1, "dropped": 1,
        "splits": {"train": {"relabelled": 1, "dropped": 0}, "val": {"relabelled": 0, "dropped": 1}},
        "first": [{"source": "train/cat/cat0.png", "split": "train", "action": "relabel", "from": "cat", "to": "dog"},
                  {"source": "val/fox/fox1.png", "split": "val", "action": "drop", "from": "fox", "to": None}]}
    assert json.loads((tmp_path / "after" / "stats.json").read_text())["corrections"] == stats["corrections"]
    # The report's dataset section says it.
    assert corrections_lines(stats["corrections"]) == [
        "- **Corrected labels** (`corrections.csv`, 2 lines): 1 relabelled, 1 dropped (train 1 relabelled, 0 "
        "dropped; val 0 relabelled, 1 dropped): `train/cat/cat0.png` cat → dog, `val/fox/fox1.png` (fox) dropped"]

    # Removing the drop line restores the photo as the archive has it; the relabel stays.
    corrections_file(fixes, "train/cat/cat0.png,relabel,dog")
    run(request, "folder", tmp_path / "after", fixes)
    assert files(tmp_path / "after")["val/images.npy"] == files(before)["val/images.npy"]
    assert changed(before, tmp_path / "after", "val") == {}
    assert changed(before, tmp_path / "after", "train") == {"train/cat/cat0.png": (0, 1)}


def test_tiny_imagenet_relabelled_and_dropped(request, tmp_path):
    before, after = tmp_path / "before", tmp_path / "after"
    run(request, "tiny-imagenet", before)
    classes = [c["id"] for c in json.loads((before / "classes.json").read_text())["classes"]]
    val_0 = "tiny-imagenet-200/val/images/val_0.JPEG"  # n0000001 in val_annotations.txt
    train_5 = "tiny-imagenet-200/train/n0000002/images/n0000002_5.JPEG"
    fixes = corrections_file(tmp_path / "fixes.csv", f"{val_0},relabel,n0000003", f"{train_5},drop")
    stats = run(request, "tiny-imagenet", after, fixes).stats
    assert VAL_LABELS[0] == "n0000001"
    assert changed(before, after, "val") == {val_0: (classes.index("n0000001"), classes.index("n0000003"))}
    assert changed(before, after, "train") == {train_5: (classes.index("n0000002"), None)}
    assert stats["splits"]["train"]["count"] == 35 and stats["splits"]["train"]["per_class"][classes.index("n0000002")] == 11
    assert stats["corrections"]["splits"] == {"train": {"relabelled": 0, "dropped": 1},
                                              "val": {"relabelled": 1, "dropped": 0}}
    assert stats["corrections"]["first"][0] == {"source": val_0, "split": "val", "action": "relabel",
                                                "from": "n0000001", "to": "n0000003"}


def test_cifar10_pixel_splits_relabelled_and_dropped(request, tmp_path):
    """CIFAR's batches are pixels already: the rows after a dropped one move up, their sources with them."""
    before, after = tmp_path / "before", tmp_path / "after"
    run(request, "cifar10", before)
    classes = [c["id"] for c in json.loads((before / "classes.json").read_text())["classes"]]
    assert classes[0] == "airplane"  # CIFAR's ids are the meta's label names
    train = by_source(before, "train")
    label_3 = train["data_batch_2#3"][0]
    new = classes[(label_3 + 1) % 10]
    fixes = corrections_file(tmp_path / "fixes.csv", "data_batch_1#0,drop", f"data_batch_2#3,relabel,{new}",
                             "test_batch#7,drop")
    stats = run(request, "cifar10", after, fixes).stats
    assert changed(before, after, "train") == {"data_batch_1#0": (train["data_batch_1#0"][0], None),
                                               "data_batch_2#3": (label_3, classes.index(new))}
    assert changed(before, after, "val") == {"test_batch#7": (by_source(before, "val")["test_batch#7"][0], None)}
    rows_before = json.loads((before / "train" / "sources.json").read_text())
    assert json.loads((after / "train" / "sources.json").read_text()) == rows_before[1:]
    assert np.array_equal(np.load(after / "train" / "images.npy"), np.load(before / "train" / "images.npy")[1:])
    assert stats["splits"]["train"]["count"] == 149 and stats["splits"]["val"]["count"] == 59
    assert (stats["corrections"]["relabelled"], stats["corrections"]["dropped"]) == (1, 2)


def test_a_drop_moves_no_other_image_between_splits(request, tmp_path):
    """With data.val_from_train the carve ranks CIFAR rows by position: the corrections apply after it,
    so a dropped image leaves every other image in its split, with its label."""
    before, after = tmp_path / "before", tmp_path / "after"
    run(request, "cifar10", before, val_from_train=0.2)
    dropped = json.loads((before / "train" / "sources.json").read_text())[0]
    run(request, "cifar10", after, corrections_file(tmp_path / "fixes.csv", f"{dropped},drop"), val_from_train=0.2)
    for split in ("train", "val", "test"):
        expected = {dropped: (by_source(before, split)[dropped][0], None)} if split == "train" else {}
        assert changed(before, after, split) == expected


@pytest.mark.parametrize("dataset", list(ARCHIVES))
def test_a_file_of_only_the_header_changes_no_byte(request, tmp_path, dataset, capsys):
    run(request, dataset, tmp_path / "none")
    capsys.readouterr()
    fixes = tmp_path / "corrections.csv"
    fixes.write_text(HEADER + "\n\n")  # a blank line is no line
    run(request, dataset, tmp_path / "empty", fixes)
    assert "corrections" not in capsys.readouterr().err
    assert files(tmp_path / "empty") == files(tmp_path / "none")


# ------------------------------------------------------------------------------ refusals
REFUSED = [
    ("move", ["train/cat/cat0.png,move,dog"], "line 2: unknown action 'move' (relabel or drop)"),
    ("relabel without a class", ["train/cat/cat0.png,relabel"], "line 2: relabel needs a class id: train/cat/cat0.png,relabel,<class id>"),
    ("drop with a class", ["train/cat/cat0.png,drop,dog"], "line 2: drop takes no class (got 'dog'); to move the image to dog write "
     "train/cat/cat0.png,relabel,dog"),
    ("duplicate", ["val/dog/dog0.png,drop", "train/cat/cat0.png,drop", "val/dog/dog0.png,relabel,fox"],
     "line 4: 'val/dog/dog0.png' is already on line 2 (one line per image)"),
    ("too many fields", ["train/cat/cat0.png,relabel,dog,fox"], "line 2: expected source,action[,class], got 4 fields"),
    ("no such image", ["train/cat/cat0.png,drop", "cat/cat1.png,drop"],
     "line 3: no image 'cat/cat1.png' in the data (sources are as in data/prepared/<split>/sources.json or "
     "results/evaluate/predictions.csv); did you mean 'train/cat/cat1.png' or 'val/cat/cat1.png'?"),
    ("no such class", ["train/cat/cat0.png,relabel,dgo"],
     "line 2: no class 'dgo' (did you mean 'dog'? class ids are as in data/prepared/classes.json: cat, dog, fox)"),
    ("its own class", ["train/cat/cat0.png,relabel,cat"], "line 2: 'train/cat/cat0.png' is class 'cat' already"),
    ("a whole split dropped", [f"val/{c}/{c}{i}.png,drop" for c in CLASSES for i in range(2)],
     "drops all 6 images of the val split"),
]


@pytest.mark.parametrize("lines, fragment", [case[1:] for case in REFUSED], ids=[case[0] for case in REFUSED])
def test_a_bad_line_fails_in_one_line_before_any_work(request, tmp_path, monkeypatch, lines, fragment):
    fixes = corrections_file(tmp_path / "corrections.csv", *lines)
    assert_refused(request, tmp_path, monkeypatch, fixes, f"{fixes}: {fragment}")


@pytest.mark.parametrize("text, fragment", [
    (None, "no such file (data.corrections; a file holding only the header line source,action,class corrects nothing)"),
    ("", "empty; its first line must be the header source,action,class"),
    ("image,action,label\nval/dog/dog0.png,drop\n", "line 1: the header must be source,action,class, "
                                                    "got 'image,action,label'"),
], ids=["missing", "empty", "bad header"])
def test_a_bad_file_fails_in_one_line_before_any_work(request, tmp_path, monkeypatch, text, fragment):
    fixes = tmp_path / "corrections.csv"
    if text is not None:
        fixes.write_text(text)
    assert_refused(request, tmp_path, monkeypatch, fixes, f"{fixes}: {fragment}")


def assert_refused(request, tmp_path, monkeypatch, fixes: Path, message: str) -> None:
    """PrepareError `message`, nothing decoded, the earlier prepared directory untouched, no temp left."""
    out = tmp_path / "prepared"
    out.mkdir()
    (out / "earlier.txt").write_text("the last good run's output")

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded before the corrections were checked")

    monkeypatch.setattr(preprocess, "decode_split", no_decoding)
    with pytest.raises(PrepareError) as err:
        run(request, "folder", out, fixes)
    assert str(err.value) == message
    assert "\n" not in str(err.value)
    assert files(out) == {"earlier.txt": b"the last good run's output"}
    assert not list(tmp_path.glob(".prepared.*"))  # no temp directory left beside it


# ------------------------------------------------------------------------------ the stage
def test_the_stage_reads_data_corrections_from_its_working_directory(cifar10_archive, tmp_path, monkeypatch, capsys):
    """stages/preprocess.py as dvc.yaml runs it (from the repository root): data.corrections is
    relative to the working directory; a bad line is one `preprocess:` line and exit 1."""
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / cifar10_archive.name).symlink_to(cifar10_archive)
    params = write_params(tmp_path / "params.yaml", shrunk_params(data__dataset="cifar10", data__image_size=0,
                                                                  download__generated__num_classes=10))
    monkeypatch.chdir(tmp_path)
    args = ["--raw", str(raw), "--out", str(tmp_path / "prepared"), "--params", str(params), "--no-progress"]
    corrections_file(tmp_path / "corrections.csv", "data_batch_1#0,drop", "test_batch#1,relabel,ship")
    assert load_stage("preprocess").main(args) == 0
    assert "corrections.csv: relabelled 1, dropped 1 images" in capsys.readouterr().err
    stats = json.loads((tmp_path / "prepared" / "stats.json").read_text())
    assert stats["corrections"]["file"] == "corrections.csv" and stats["splits"]["train"]["count"] == 149

    corrections_file(tmp_path / "corrections.csv", "data_batch_1#0,drop", "test_batch#1,relabel,shipp")
    assert load_stage("preprocess").main(args) == 1
    assert capsys.readouterr().err.splitlines() == [
        "preprocess: corrections.csv: line 3: no class 'shipp' (did you mean 'ship'? class ids are as in "
        "data/prepared/classes.json: airplane, automobile, bird, cat, deer, … (10 in all))"]


# ------------------------------------------------------------------------------ the file as people write it
def test_the_file_as_a_spreadsheet_or_a_hand_writes_it(tmp_path):
    """A byte-order mark, CRLF line ends, a space after a comma, blank lines, padded empty cells, a
    comma inside a quoted source; line numbers are the file's."""
    path = tmp_path / "fixes.csv"
    path.write_bytes("\ufeffsource,action,class\r\n\r\ntrain/cat/a.jpg, relabel, dog\r\n"
                     '"val/dog/b,c.jpg",drop,,\r\ndata_batch_1#5,drop\r\n'.encode())
    fixes = read_corrections(path)
    assert fixes.file == str(path)
    assert fixes.lines == (Correction(3, "train/cat/a.jpg", "relabel", "dog"),
                           Correction(4, "val/dog/b,c.jpg", "drop", ""),
                           Correction(5, "data_batch_1#5", "drop", ""))
