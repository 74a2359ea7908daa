"""`data.corrections`: label fixes kept as a versioned file, applied as preprocess reads the archive.

The file (`corrections.csv` at the repository root by default) holds one decision per image:

    source,action,class
    train/cat/IMG_0042.jpg,relabel,dog
    data_batch_3#1234,drop

`source` is the image exactly as `data/prepared/<split>/sources.json` (and predictions.csv's
`source` column) names it; `relabel` gives it the class whose id (classes.json's `id`) is `class`,
`drop` leaves it out of the prepared data. The archive is never touched, so removing a line
restores the image as the archive has it.

- `read_corrections(path)`: the file alone (header, actions, a class where one is needed and none
  where not, one line per image), before preprocess starts any work.
- `apply_corrections(data, corrections)`: checks every line against the format's data (the image
  exists, the class exists) and only then changes it, before the first image is decoded; returns
  stats.json's `corrections` section, or None for a file without lines (the prepared data is then
  exactly what it would be without the file).
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinyclf.data.formats.contract import ArraySplit, FormatData, MemberSplit
from tinyclf.errors import PrepareError

HEADER = ("source", "action", "class")
ACTIONS = ("relabel", "drop")
LISTED = 20  # changes stats.json names one by one (the counts cover them all)
CLASSES_SHOWN = 5  # existing class ids an unknown-class error lists
WHERE_SOURCES = "sources are as in data/prepared/<split>/sources.json or results/evaluate/predictions.csv"


@dataclass(frozen=True)
class Correction:
    line: int  # in the file, for messages
    source: str
    action: str  # relabel | drop
    class_id: str  # the new class's id for relabel; "" for drop


@dataclass(frozen=True)
class Corrections:
    file: str  # the path as given (data.corrections), for messages and stats.json
    lines: tuple[Correction, ...]


def read_corrections(path: str | Path) -> Corrections:
    """The corrections file, checked on its own; PrepareError naming the file and line otherwise."""
    where = str(path)
    rows = _csv_rows(Path(path), where)
    if not rows:
        raise PrepareError(f"{where}: empty; its first line must be the header {','.join(HEADER)}")
    line, header = rows[0]
    if tuple(cell.strip() for cell in header) != HEADER:
        raise PrepareError(f"{where}: line {line}: the header must be {','.join(HEADER)}, got {','.join(header)!r}")
    corrections, seen = [], {}
    for line, row in rows[1:]:
        if not any(cell.strip() for cell in row):
            continue  # a blank line
        correction = _parse_line(where, line, row)
        if correction.source in seen:
            raise PrepareError(f"{where}: line {line}: {correction.source!r} is already on line "
                               f"{seen[correction.source]} (one line per image)")
        seen[correction.source] = line
        corrections.append(correction)
    return Corrections(file=where, lines=tuple(corrections))


def _csv_rows(path: Path, where: str) -> list[tuple[int, list[str]]]:
    """(line number, cells) of every row; utf-8 with or without the byte-order mark spreadsheets write."""
    reader = None
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh, skipinitialspace=True)  # "x.jpg, drop" as typed by hand
            return [(reader.line_num, row) for row in reader]
    except FileNotFoundError:
        raise PrepareError(f"{where}: no such file (data.corrections; a file holding only the header line "
                           f"{','.join(HEADER)} corrects nothing)") from None
    except csv.Error as exc:
        raise PrepareError(f"{where}: line {reader.line_num if reader else 1}: not valid CSV ({exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PrepareError(f"{where}: cannot be read ({exc})") from None


def _parse_line(where: str, line: int, row: list[str]) -> Correction:
    cells = [row[0]] + [cell.strip() for cell in row[1:]]
    while len(cells) > 3 and not cells[-1]:
        cells.pop()  # trailing empty cells, as spreadsheets pad rows
    if len(cells) > 3:
        raise PrepareError(f"{where}: line {line}: expected source,action[,class], got {len(cells)} fields")
    source, action, class_id = (cells + ["", ""])[:3]
    if not source.strip():
        raise PrepareError(f"{where}: line {line}: no source (the image, as sources.json names it)")
    if action not in ACTIONS:
        raise PrepareError(f"{where}: line {line}: unknown action {action!r} (relabel or drop)")
    if action == "relabel" and not class_id:
        raise PrepareError(f"{where}: line {line}: relabel needs a class id: {source},relabel,<class id>")
    if action == "drop" and class_id:
        raise PrepareError(f"{where}: line {line}: drop takes no class (got {class_id!r}); to move the image "
                           f"to {class_id} write {source},relabel,{class_id}")
    return Correction(line, source, action, class_id)


def apply_corrections(data: FormatData, corrections: Corrections | None) -> tuple[FormatData, dict | None]:
    """`data` with the corrections applied, and stats.json's `corrections` section (None when there are
    no lines: `data` is returned as it is). Every line is checked before anything changes."""
    if corrections is None or not corrections.lines:
        return data, None
    where_is = _source_index(data)
    ids = [class_id for class_id, _ in data.classes]
    index_of = {class_id: i for i, class_id in enumerate(ids)}
    changes = {split: {} for split in data.splits}  # split -> row -> new label, or None to drop
    listed = []
    for c in corrections.lines:
        split, row = _find_source(corrections.file, c, where_is)
        old = _label(data.splits[split], row)
        new = None
        if c.action == "relabel":
            new = _class_index(corrections.file, c, index_of, ids)
            if new == old:
                raise PrepareError(f"{corrections.file}: line {c.line}: {c.source!r} is class {c.class_id!r} already")
        changes[split][row] = new
        listed.append({"source": c.source, "split": split, "action": c.action, "from": ids[old],
                       "to": None if new is None else ids[new]})
    _check_nothing_emptied(corrections.file, data, changes)
    splits = {name: _changed(split, changes[name], _sources(name, split)) if changes[name] else split
              for name, split in data.splits.items()}
    return dataclasses.replace(data, splits=splits), _record(corrections, changes, listed)


def _sources(name: str, split: MemberSplit | ArraySplit) -> list[str]:
    """Each image's source, as preprocess writes it to sources.json."""
    if isinstance(split, MemberSplit):
        return [member for member, _ in split.members]
    return split.sources or [f"{name}#{row}" for row in range(split.count)]


def _source_index(data: FormatData) -> dict[str, tuple[str, int]]:
    return {source: (name, row) for name, split in data.splits.items()
            for row, source in enumerate(_sources(name, split))}


def _find_source(file: str, c: Correction, where_is: dict[str, tuple[str, int]]) -> tuple[str, int]:
    if c.source in where_is:
        return where_is[c.source]
    # The likeliest slips: a path without its first folders (cat/x.jpg for train/cat/x.jpg), or other
    # folders around the same file name.
    given = c.source.replace("\\", "/")
    alike = ([s for s in where_is if s.endswith("/" + given)]
             or [s for s in where_is if s.rsplit("/", 1)[-1] == given.rsplit("/", 1)[-1]])[:2]
    hint = f"; did you mean {' or '.join(repr(s) for s in alike)}?" if alike else ""
    raise PrepareError(f"{file}: line {c.line}: no image {c.source!r} in the data ({WHERE_SOURCES}){hint}")


def _class_index(file: str, c: Correction, index_of: dict[str, int], ids: list[str]) -> int:
    if c.class_id in index_of:
        return index_of[c.class_id]
    close = difflib.get_close_matches(c.class_id, ids, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    shown = ", ".join(ids[:CLASSES_SHOWN]) + (f", … ({len(ids)} in all)" if len(ids) > CLASSES_SHOWN else "")
    raise PrepareError(f"{file}: line {c.line}: no class {c.class_id!r} ({hint}class ids are as in "
                       f"data/prepared/classes.json: {shown})")


def _label(split: MemberSplit | ArraySplit, row: int) -> int:
    if isinstance(split, MemberSplit):
        return int(split.labels[row])
    for _, labels in split.batches:
        if row < len(labels):
            return int(labels[row])
        row -= len(labels)
    raise IndexError(row)


def _check_nothing_emptied(file: str, data: FormatData, changes: dict[str, dict[int, int | None]]) -> None:
    for name, split in data.splits.items():
        dropped = sum(new is None for new in changes[name].values())
        total = len(split.labels) if isinstance(split, MemberSplit) else split.count
        if dropped and dropped == total:
            raise PrepareError(f"{file}: drops all {total} images of the {name} split")


def _changed(split: MemberSplit | ArraySplit, rows: dict[int, int | None],
             sources: list[str]) -> MemberSplit | ArraySplit:
    """The split with `rows` relabelled (a class index) or dropped (None), in row order; a pixel split
    keeps its images' `sources` (their names do not move when a row before them is dropped)."""
    if isinstance(split, MemberSplit):
        kept = [(member, rows.get(row, label)) for row, (member, label) in enumerate(zip(split.members, split.labels))
                if rows.get(row, label) is not None]
        return MemberSplit([member for member, _ in kept], [label for _, label in kept])
    batches, start = [], 0
    for pixels, labels in split.batches:
        here = {row - start: new for row, new in rows.items() if start <= row < start + len(labels)}
        start += len(labels)
        batches.append(_changed_batch(pixels, labels, here) if here else (pixels, labels))
    return ArraySplit(batches, [source for row, source in enumerate(sources) if rows.get(row, 0) is not None])


def _changed_batch(pixels: np.ndarray, labels: np.ndarray,
                   rows: dict[int, int | None]) -> tuple[np.ndarray, np.ndarray]:
    labels = labels.copy()  # the format's arrays stay as read
    for row, new in rows.items():
        if new is not None:
            labels[row] = new
    keep = np.ones(len(labels), dtype=bool)
    keep[[row for row, new in rows.items() if new is None]] = False
    return (pixels, labels) if keep.all() else (pixels[keep], labels[keep])


def _record(corrections: Corrections, changes: dict[str, dict[int, int | None]], listed: list[dict]) -> dict:
    """stats.json's `corrections`: the file, its lines, what changed per split, the first changes by name."""
    file = corrections.file if not Path(corrections.file).is_absolute() else Path(corrections.file).name
    per_split = {name: {"relabelled": sum(new is not None for new in rows.values()),
                        "dropped": sum(new is None for new in rows.values())} for name, rows in changes.items()}
    return {"file": file, "lines": len(corrections.lines),
            "relabelled": sum(s["relabelled"] for s in per_split.values()),
            "dropped": sum(s["dropped"] for s in per_split.values()),
            "splits": per_split, "first": listed[:LISTED]}


def describe(record: dict) -> str:
    """The line preprocess prints: corrections.csv: relabelled 3, dropped 2 images."""
    return f"{record['file']}: relabelled {record['relabelled']}, dropped {record['dropped']} images"
