"""`tinyclf audit accept`: turn the audit's findings into lines of a corrections file, for a person to
review before committing them.

    tinyclf audit accept results/audit/issues.csv --kind label --top 20 >> corrections.csv

Prints one `source,action[,class]` line per finding (the format `data.corrections` takes, no
header), the most suspect first:

- label: `source,relabel,<suggested class>`;
- duplicate: `…,drop` for one image of each pair: the train copy when the pair crosses into val or
  test (the held-out set stays the same set, so runs before and after compare on it), else the later
  image of the pair;
- outlier: `source,drop`.

Sources the corrections file already decides are skipped (said on stderr), so appending twice
does not write a line twice.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

from tinyclf.errors import ArgumentParser, TinyclfError, run_command

KINDS = ("label", "duplicate", "outlier")
ISSUE_COLUMNS = {"kind", "split", "source", "given_label", "suggested_label", "duplicate_of", "duplicate_split"}


class AcceptError(TinyclfError, ValueError):
    """An issues file or corrections file that cannot be read."""


def parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="tinyclf audit", description="Act on the audit's findings (results/audit/issues.csv).")
    sub = p.add_subparsers(dest="action", required=True)
    a = sub.add_parser("accept", help="print corrections lines for findings of one kind (append them to "
                                      "corrections.csv after reviewing)")
    a.add_argument("issues", type=Path, help="the audit's findings (results/audit/issues.csv)")
    a.add_argument("--kind", choices=KINDS, required=True, help="which findings: label (relabel to the suggested "
                   "class), duplicate (drop one of each pair), outlier (drop)")
    a.add_argument("--top", type=int, default=None, metavar="N", help="only the N most suspect (default: all)")
    a.add_argument("--split", choices=("train", "val", "test"), default=None,
                   help="only findings in this split (e.g. train, so that val keeps measuring the same labels)")
    a.add_argument("--corrections", type=Path, default=Path("corrections.csv"),
                   help="skip sources this file already decides (default corrections.csv, if it exists)")
    return p


def accept_lines(rows: list[dict], kind: str, top: int | None, decided: set[str]) -> tuple[list[list[str]], int]:
    """(corrections lines, how many findings were skipped as already decided)."""
    lines, seen, skipped = [], set(decided), 0
    for row in [r for r in rows if r["kind"] == kind][:top]:
        line = _line(row, kind)
        if line is None:
            continue
        if line[0] in seen:
            skipped += line[0] in decided
            continue
        seen.add(line[0])
        lines.append(line)
    return lines, skipped


def _line(row: dict, kind: str) -> list[str] | None:
    if kind == "label":
        suggested = row["suggested_label"]
        return [row["source"], "relabel", suggested] if suggested and suggested != row["given_label"] else None
    if kind == "duplicate" and row["duplicate_split"] == "train" and row["split"] != "train":
        return [row["duplicate_of"], "drop"]
    return [row["source"], "drop"]


def read_issues(path: Path) -> list[dict]:
    try:
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            missing = ISSUE_COLUMNS - set(reader.fieldnames or ())
            if missing:
                raise AcceptError(f"{path}: not an audit issues file (no column {sorted(missing)[0]!r}; "
                                  "the audit stage writes results/audit/issues.csv)")
            return list(reader)
    except OSError as exc:
        raise AcceptError(f"{path}: cannot read ({exc.strerror or exc})") from None


def decided_sources(path: Path) -> set[str]:
    """The sources a corrections file already has a line for (none when it does not exist)."""
    if not path.is_file():
        return set()
    with path.open(newline="") as fh:
        return {row[0] for row in csv.reader(fh) if row and row[0] != "source"}


def _accept(args) -> int:
    if args.top is not None and args.top < 1:
        raise AcceptError(f"--top must be at least 1, got {args.top}")
    decided = decided_sources(args.corrections)
    rows = [r for r in read_issues(args.issues) if args.split in (None, r["split"])]
    lines, skipped = accept_lines(rows, args.kind, args.top, decided)
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(lines)
    sys.stdout.write(out.getvalue())
    note = f"; skipped {skipped} already in {args.corrections}" if skipped else ""
    print(f"tinyclf audit accept: {len(lines)} {args.kind} line(s){note}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return run_command("tinyclf audit accept", lambda: _accept(args))
