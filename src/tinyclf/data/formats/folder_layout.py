"""Your own images' layout: index an archive of class folders (the ImageFolder layout) from member names.

Layouts, after one wrapping folder is stripped (people zip the folder itself: `photos/…`):

    train/<class>/…  [+ val/<class>/…] [+ test/<class>/…]
                                          ImageFolder (val may also be named valid or validation,
                                          test testing)
    <class>/…                             class folders only: the val (and test) split is drawn here

Files may sit at any depth below their class folder. Class ids are the folder names, in natural
sort order (class2 before class10; torchvision's ImageFolder sorts them as plain strings);
readable names come from an optional `classes.txt` ("<folder><tab or space><name>" per line) or
`classes.json` ({"<folder>": "<name>"}) at the root.

Without a val folder each class is split on its own: its files are ranked by a hash of
(data.split_seed, path inside the class folder, `tinyclf.data.holdout.split_rank`) and the first
round(val_fraction × n) go to val; without a test folder and with data.test_fraction > 0 the next
round(test_fraction × n) go to test. A file's split therefore depends only on its class's files:
adding photos to one class never moves another class's photos between the splits, and another
seed draws another split.

Refused, naming the folder: an empty class folder, a val or test class that train lacks, a class that
the held-out shares would leave with no train image, fewer than two
classes (and when train/ has fewer than two beside top-level folders of images, the two layouts
mixed), a val/ folder beside class folders without train/. Noted and counted: files that are not
images (by extension), hidden and system files, links (never followed), folders beside train/val
(other than val and test), a train class with no val images.
An animated GIF is one image: its first frame, which is what OpenCV decodes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from tinyclf.data.archive_members import Entry
from tinyclf.data.file_names import is_image_name, natural_key
from tinyclf.data.holdout import held_out_count, split_rank
from tinyclf.data.pack import PACK_MANIFEST, is_hidden_or_system
from tinyclf.errors import PrepareError

VAL_FOLDERS = ("val", "valid", "validation")
TEST_FOLDERS = ("test", "testing")
CLASS_FILES = ("classes.json", "classes.txt")


@dataclass
class FolderIndex:
    """What the archive holds: classes in index order and, per split, members with their labels."""

    classes: list[tuple[str, str]]  # (folder name, readable name)
    members: dict[str, list[Entry]]  # split -> image entries
    labels: dict[str, list[int]]
    layout: str  # "train/val folders", "train folder, val drawn" or "class folders, val drawn" (+ test …)
    not_images: list[str] = field(default_factory=list)  # skipped: paths of non-image files
    not_followed: list[str] = field(default_factory=list)  # links in the archive, never read
    ignored: list[str] = field(default_factory=list)  # folders beside train/val/test
    notes: list[str] = field(default_factory=list)  # one-line warnings for the log and stats.json
    packed: dict | None = None  # the download stage's pack manifest, when it packed a directory


def build_index(entries: list[Entry], read, *, val_fraction: float, split_seed: int, where: str,
                test_fraction: float = 0.0) -> FolderIndex:
    """Index the archive's entries; `read(key)` reads a small member (the pack manifest, classes.txt).

    `where` names the archive in errors."""
    packed, entries = _take_manifest(entries, read)
    entries, hidden, links = _drop_unreadable_kinds(entries)
    prefix = _wrapping_folder(entries)
    tree = {e.name[len(prefix):]: e for e in entries if e.name.startswith(prefix) and e.name != prefix.rstrip("/")}
    names = _class_names(tree, read, where)
    index = _index_layout(tree, HeldOut(val_fraction, test_fraction, split_seed), where, names)
    index.not_images = sorted(hidden + index.not_images, key=natural_key)
    index.not_followed = sorted(links, key=natural_key)
    index.packed = packed
    if packed:
        left = packed.get("left_out", {})
        index.not_images = sorted(index.not_images + left.get("hidden_or_system", []), key=natural_key)
        index.not_followed = sorted(index.not_followed + left.get("symlinks_outside", [])
                                    + left.get("symlinked_directories", []), key=natural_key)
    return index


def _take_manifest(entries: list[Entry], read) -> tuple[dict | None, list[Entry]]:
    rest = [e for e in entries if not e.name.startswith(".tinyclf/") and e.name != ".tinyclf"]
    manifest = next((e for e in entries if e.name == PACK_MANIFEST and e.kind == "file"), None)
    return (json.loads(read(manifest.key)) if manifest else None), rest


def _drop_unreadable_kinds(entries: list[Entry]) -> tuple[list[Entry], list[str], list[str]]:
    """(entries to index, hidden/system files, links): hidden parts of the path at any depth."""
    keep, hidden, links = [], [], []
    for e in entries:
        if any(is_hidden_or_system(part) for part in e.name.split("/")):
            if e.kind == "file":
                hidden.append(e.name)
        elif e.kind == "link":
            links.append(e.name)
        else:
            keep.append(e)
    return keep, hidden, links


def _wrapping_folder(entries: list[Entry]) -> str:
    """"photos/" when everything sits in one folder that is neither a split nor holds files directly
    (so a wrapper, not a class folder: with a single class there would be nothing to train anyway)."""
    prefix = ""
    while True:
        below = [e for e in entries if e.name.startswith(prefix) and e.name != prefix[:-1]]
        tops = {e.name[len(prefix):].split("/")[0] for e in below}
        files_at_top = any(e.kind == "file" and "/" not in e.name[len(prefix):] for e in below)
        if len(tops) != 1 or files_at_top:
            return prefix
        top = next(iter(tops))
        if top.lower() in ("train",) + VAL_FOLDERS + TEST_FOLDERS:
            return prefix
        prefix += top + "/"


def _class_names(tree: dict[str, Entry], read, where: str) -> dict[str, str]:
    """Folder name -> readable name from classes.json / classes.txt at the root (empty when neither)."""
    for name in CLASS_FILES:
        entry = tree.get(name)
        if entry is None or entry.kind != "file":
            continue
        text = read(entry.key).decode("utf-8-sig", errors="replace")
        return _parse_class_json(text, where) if name.endswith(".json") else _parse_class_txt(text, where)
    return {}


def _parse_class_json(text: str, where: str) -> dict[str, str]:
    try:
        mapping = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PrepareError(f"{where}: classes.json is not valid JSON ({exc})") from None
    if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
        raise PrepareError(f"{where}: classes.json must map folder names to readable names, "
                           '{"n01443537": "goldfish"}')
    return {str(k): v.strip() for k, v in mapping.items()}


def _parse_class_txt(text: str, where: str) -> dict[str, str]:
    mapping = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.strip().split("\t", 1) if "\t" in line else line.strip().split(None, 1)
        if len(parts) != 2 or not parts[1].strip():
            raise PrepareError(f"{where}: classes.txt line {lineno} is not '<folder><tab or space><readable name>': "
                               f"{line.strip()[:80]!r}")
        mapping[parts[0].strip()] = parts[1].strip()
    return mapping


def _top_folders(tree: dict[str, Entry]) -> list[str]:
    return sorted({name.split("/")[0] for name in tree if "/" in name or tree[name].kind == "directory"})


def _first_names(names: list[str], count: int = 3) -> str:
    """The first `count` names for a message, "…" when there are more."""
    return ", ".join(names[:count]) + (", …" if len(names) > count else "")


@dataclass(frozen=True)
class HeldOut:
    """The shares drawn from train when the source has no folder for a split."""

    val_fraction: float
    test_fraction: float
    seed: int


def _split_folders(tree: dict[str, Entry]) -> tuple[str | None, str | None, str | None, list[str]]:
    """(train, val, test folder, other top-level folders) of the ImageFolder layout; train None if flat."""
    tops = _top_folders(tree)
    train = next((t for t in tops if t.lower() == "train"), None)
    if train is None:
        return None, None, None, []
    val = next((t for t in tops if t.lower() in VAL_FOLDERS), None)
    test = next((t for t in tops if t.lower() in TEST_FOLDERS), None)
    return train, val, test, [t for t in tops if t not in (train, val, test)]


def _index_layout(tree: dict[str, Entry], held_out: HeldOut, where: str, names: dict[str, str]) -> FolderIndex:
    train_dir, val_dir, test_dir, others = _split_folders(tree)
    not_images: list[str] = []
    notes: list[str] = []
    val = test = None
    if train_dir is None:
        _refuse_val_without_train(tree, where)
        train = _class_folders(tree, "", not_images, where)
        layout = "class folders"
    else:
        train = _class_folders(tree, train_dir + "/", not_images, where)
        layout = "train folder"
        if val_dir is not None:
            val = _class_folders(tree, val_dir + "/", not_images, where)
            _check_held_out_classes(train, val, val_dir, train_dir, where, notes)
            layout = "train/val folders"
        if test_dir is not None:
            test = _class_folders(tree, test_dir + "/", not_images, where)
            _check_held_out_classes(train, test, test_dir, train_dir, where, notes)
            layout += " + test folder"
    train, drawn_val, drawn_test = _draw_held_out(train, held_out, notes, where, draw_val=val is None,
                                                  draw_test=test is None)
    layout += ", val drawn" * (val is None) + ", test drawn" * (test is None and held_out.test_fraction > 0)
    val = drawn_val if val is None else val
    test = drawn_test if test is None else test
    classes = sorted(train, key=natural_key)
    if len(classes) < 2 and train_dir is not None:
        _refuse_mixed_layout(tree, train_dir, classes, others, where)
    if len(classes) < 2:
        found = f"only {classes[0]!r}" if classes else "none"
        raise PrepareError(f"{where}: fewer than two class folders with images ({found}); a classifier needs at least "
                           "two: <class>/<image> or train/<class>/<image>")
    _note_mapping(names, classes, notes)
    for name in sorted(tree):
        if "/" not in name and tree[name].kind == "file" and name not in CLASS_FILES:
            not_images.append(name)  # README.txt and friends at the root
    index = FolderIndex([(c, names.get(c, c)) for c in classes], {}, {}, layout, not_images,
                        ignored=[f"{o}/" for o in others], notes=notes)
    for split, groups in (("train", train), ("val", val), ("test", test)):
        if split == "test" and not any(groups.values()):
            continue  # no test split: neither a test/ folder nor data.test_fraction
        pairs = [(entry, i) for i, c in enumerate(classes) for _, entry in groups.get(c, [])]
        pairs.sort(key=lambda p: natural_key(p[0].name))
        index.members[split] = [e for e, _ in pairs]
        index.labels[split] = [label for _, label in pairs]
    if others:
        notes.append(f"ignored folders beside {train_dir}/: {', '.join(o + '/' for o in others)}")
    return index


def _refuse_val_without_train(tree: dict[str, Entry], where: str) -> None:
    """A val/ folder among class folders, with no train/: taken as class folders, val/ would
    silently become a class named "val" (a user who split off val/ and forgot to move the rest)."""
    tops = sorted(_top_folders(tree), key=natural_key)
    val = next((t for t in tops if t.lower() in VAL_FOLDERS + TEST_FOLDERS), None)
    if val is not None:
        classes = [t for t in tops if t != val]
        raise PrepareError(f"{where}: has a {val}/ split folder but no train/ beside {len(classes)} top-level "
                           f"folder(s) ({_first_names(classes) or 'none'}): move the training class folders into "
                           f"train/ (<root>/train/<class>/… + {val}/<class>/…), or rename {val}/ if it is a class")


def _refuse_mixed_layout(tree: dict[str, Entry], train_dir: str, classes: list[str], others: list[str],
                         where: str) -> None:
    """Top-level folders of images beside a train/ of fewer than two classes: the user mixed the two
    layouts (train/lemon/ added to a folder of class folders), and `fewer than two classes` would
    hide the eleven that were ignored. Folders without images (an empty test/) do not count."""
    with_images = [o for o in others if any(name.startswith(o + "/") and entry.kind == "file" and is_image_name(name)
                                            for name, entry in tree.items())]
    if not with_images:
        return
    with_images.sort(key=natural_key)
    in_train = f"only {', '.join(classes)}" if classes else "no class folders"
    raise PrepareError(f"{where}: mixes two layouts, a {train_dir}/ split folder ({in_train}) and {len(with_images)} "
                       f"top-level class folders ({_first_names(with_images)}) that are ignored beside it: use either "
                       f"<root>/<class>/… or <root>/{train_dir}/<class>/… [+ val/<class>/…], not both")


def _class_folders(tree: dict[str, Entry], root: str, not_images: list[str], where: str) -> dict[str, list]:
    """Class folder -> its images as (path inside the class folder, entry), any depth under `root`;
    an empty class folder is an error."""
    groups: dict[str, list] = {}
    for name, entry in tree.items():
        if not name.startswith(root):
            continue
        rel = name[len(root):]
        if "/" not in rel:
            if entry.kind == "directory":
                groups.setdefault(rel, [])
            elif root:  # a file directly in train/: belongs to no class
                not_images.append(name)
            continue
        cls = rel.split("/")[0]
        groups.setdefault(cls, [])
        if entry.kind != "file":
            continue
        if is_image_name(name):
            groups[cls].append((rel.split("/", 1)[1], entry))
        else:
            not_images.append(name)
    empty = sorted((c for c, members in groups.items() if not members), key=natural_key)
    if empty:
        raise PrepareError(f"{where}: class folder {root}{empty[0]}/ holds no images"
                           + (f" (nor do {len(empty) - 1} more)" if len(empty) > 1 else "")
                           + "; add images or remove the folder")
    return groups


def _check_held_out_classes(train: dict, val: dict, val_dir: str, train_dir: str, where: str,
                            notes: list[str]) -> None:
    unknown = sorted(set(val) - set(train), key=natural_key)
    if unknown:
        raise PrepareError(f"{where}: {val_dir}/{unknown[0]}/ is a class that {train_dir}/ does not have"
                           + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
                           + "; a model cannot learn a class it never trains on")
    missing = sorted(set(train) - set(val), key=natural_key)
    if missing:
        notes.append(f"{len(missing)} class(es) have no {val_dir}/ images and cannot be measured: "
                     + ", ".join(missing[:5]) + (" …" if len(missing) > 5 else ""))


def _draw_held_out(groups: dict[str, list], held_out: HeldOut, notes: list[str], where: str, *, draw_val: bool,
                   draw_test: bool) -> tuple[dict, dict, dict]:
    """Per class, ranked by split_rank: the first round(val_fraction × n) files go to val (when
    `draw_val`; at least one, never all: a class of one image stays in train, and is noted), the next
    round(test_fraction × n) to test (when `draw_test` and test_fraction > 0; at least one); the rest
    train. Refused, naming the class, when nothing would be left to train on."""
    val_share = held_out.val_fraction if draw_val else 0.0
    test_share = held_out.test_fraction if draw_test else 0.0
    train, val, test = {}, {}, {}
    alone = sorted((cls for cls, entries in groups.items() if len(entries) == 1 and val_share), key=natural_key)
    if alone:
        notes.append(f"{len(alone)} class(es) have a single image, kept for training and not measured: "
                     + ", ".join(alone[:5]) + (" …" if len(alone) > 5 else ""))
    for cls in sorted(groups, key=natural_key):
        entries = groups[cls]
        n = len(entries)
        take_val = held_out_count(val_share, n)
        take_test = max(round(test_share * n), 1) if test_share > 0 else 0
        if take_test and n - take_val - take_test < 1:
            raise PrepareError(f"{where}: class {cls} has {n} image(s): data.val_fraction {held_out.val_fraction:g} and "
                               f"data.test_fraction {held_out.test_fraction:g} would leave it none to train on; add "
                               "images, lower the fractions, or give it test/ images of its own")
        ranked = sorted(entries, key=lambda item: split_rank(held_out.seed, item[0]))
        val[cls], test[cls] = ranked[:take_val], ranked[take_val:take_val + take_test]
        train[cls] = ranked[take_val + take_test:]
    return train, val, test


def _note_mapping(names: dict[str, str], classes: list[str], notes: list[str]) -> None:
    unknown = sorted(set(names) - set(classes), key=natural_key)
    if unknown:
        notes.append(f"the class-name file names folders that hold no class: {', '.join(unknown[:5])}"
                     + (" …" if len(unknown) > 5 else ""))
