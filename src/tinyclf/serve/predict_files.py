"""`tinyclf predict`: top-k classes for image files, folders and globs, in batches, streamed.

Inputs are expanded lazily (a folder is walked one directory at a time, sorted; a folder yields
only files with image suffixes, while a file named on the command line or matched by a glob is
always tried), read one file at a time with its size checked before reading (`read_image` then
checks the header before decoding), and predicted in batches of `batch_size`; results are written
as each batch finishes. So memory stays bounded by one batch plus one file, whatever the input.
A file that cannot be predicted gets one line on stderr naming it, the rest are still predicted,
and the exit status is 1 at the end.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import sys
from pathlib import Path
from typing import Iterator, TextIO

import numpy as np

from tinyclf.data.file_names import is_image_name
from tinyclf.data.images import MAX_IMAGE_BYTES
from tinyclf.serve.predictor import Predictor, read_image

FORMATS = ("table", "json", "csv")
UNKNOWN = "unknown"  # the answer below --min-confidence


def min_confidence_arg(text: str) -> float:
    """--min-confidence's value (predict, demo, space): a probability strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number between 0 and 1, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {value:g}")
    return value


_GLOB_CHARS = set("*?[")


def expand_inputs(inputs: list[str]) -> Iterator[tuple[str, str | None]]:
    """(path, None) for each file to predict, in order, or (input, reason) for one that names nothing."""
    for given in inputs:
        path = Path(given)
        if path.is_dir():
            found = _walk(path)
        elif path.exists() or not _GLOB_CHARS & set(given):
            found = iter([given])
        else:
            found = (p for p in sorted(glob.glob(given, recursive=True)) if not Path(p).is_dir())
        empty = True
        for name in found:
            empty = False
            yield name, None
        if empty:
            kind = "folder" if path.is_dir() else "pattern"
            yield given, f"no image files in this {kind}" if kind == "folder" else "no files match this pattern"


def _walk(folder: Path) -> Iterator[str]:
    """Image files under `folder`, sorted, one directory listing in memory at a time; hidden ones skipped."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and is_image_name(name):
                yield os.path.join(root, name)


def load_file(path: str, predictor: Predictor) -> np.ndarray:
    """The model's input for one file; ValueError with the reason when it is not a usable image."""
    p = Path(path)
    if not p.exists():
        raise ValueError("no such file or folder")
    if not p.is_file():
        raise ValueError("not a regular file")
    size = p.stat().st_size
    if size > MAX_IMAGE_BYTES:  # before reading it: a file's size is no reason to run out of memory
        raise ValueError(f"{size:,} bytes, over the limit of {MAX_IMAGE_BYTES:,} (tinyclf.data.images.MAX_IMAGE_BYTES)")
    with p.open("rb") as fh:
        data = fh.read(MAX_IMAGE_BYTES + 1)
    return read_image(data, predictor)


class Output:
    """Writes results as they come, in one of FORMATS; JSON is one array, one image per line."""

    def __init__(self, fmt: str, stream: TextIO, min_confidence: float | None = None):
        self.fmt, self.stream, self.count, self.min_confidence = fmt, stream, 0, min_confidence
        self.csv = csv.writer(stream, lineterminator="\n") if fmt == "csv" else None
        if fmt == "csv":
            self.csv.writerow(["path", "rank", "index", "id", "name", "probability"]
                              + (["answer"] if min_confidence is not None else []))

    def answer(self, top: list[tuple[dict, float]]) -> str | None:
        """With --min-confidence: the top-1 class id, or "unknown" below it; None without."""
        if self.min_confidence is None:
            return None
        best, probability = top[0]
        return best["id"] if probability >= self.min_confidence else UNKNOWN

    def write(self, path: str, top: list[tuple[dict, float]]) -> None:
        answer = self.answer(top)
        if self.fmt == "json":
            item = {"path": path, "top_k": [{**c, "probability": round(p, 6)} for c, p in top]}
            if answer is not None:
                item["answer"] = answer
            self.stream.write(("[" if self.count == 0 else ",") + json.dumps(item, ensure_ascii=False) + "\n")
        elif self.fmt == "csv":
            for rank, (c, p) in enumerate(top, 1):
                self.csv.writerow([path, rank, c["index"], c["id"], c["name"], f"{p:.6f}"]
                                  + ([answer] if answer is not None else []))
        else:
            lines = [path] + [f"  {p:7.2%}  {c['name']} ({c['id']})" for c, p in top]
            if answer == UNKNOWN:
                lines.insert(1, f"  unknown: top-1 {top[0][1]:.2%} is below --min-confidence {self.min_confidence:g}")
            self.stream.write("\n".join(lines) + "\n")
        self.count += 1
        self.stream.flush()

    def close(self) -> None:
        if self.fmt == "json":
            self.stream.write("[]\n" if self.count == 0 else "]\n")
        self.stream.flush()


def predict_files(predictor: Predictor, inputs: list[str], *, top_k: int = 5, fmt: str = "table",
                  batch_size: int = 64, min_confidence: float | None = None,
                  streams: tuple[TextIO, TextIO] | None = None) -> int:
    """Predict every input with `predictor` (`predictor.load_predictor`: the model file, backend and
    device) and write the results to `streams` (results, messages; default stdout, stderr); 0 when
    every file was predicted, 1 otherwise. With `min_confidence` each result also answers the top-1
    class id, or "unknown" when its probability is below it."""
    out, err = streams or (sys.stdout, sys.stderr)
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")
    if top_k > len(predictor.classes):
        print(f"tinyclf predict: --top-k {top_k} is more than the model's {len(predictor.classes)} classes; "
              f"showing all {len(predictor.classes)}", file=err)
    s = predictor.image_size
    batch = np.empty((batch_size, s, s, 3), dtype=np.uint8)
    names: list[str] = []
    output, failed, total = Output(fmt, out, min_confidence), 0, 0

    def flush() -> None:
        probs = predictor.probabilities(batch[: len(names)])
        for name, top in zip(names, predictor.top_k(probs, top_k)):
            output.write(name, top)
        names.clear()

    for name, problem in expand_inputs(inputs):
        total += 1
        try:
            if problem:
                raise ValueError(problem)
            batch[len(names)] = load_file(name, predictor)
        except (ValueError, OSError) as exc:
            failed += 1
            print(f"tinyclf predict: {name}: {_reason(exc)}", file=err, flush=True)
            continue
        names.append(name)
        if len(names) == batch_size:
            flush()
    if names:
        flush()
    output.close()
    if failed:
        print(f"tinyclf predict: {failed} of {total} inputs could not be predicted", file=err)
    return 1 if failed else 0


def _reason(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
