"""Atomic file writes: a temp file in the same directory, fsync, then rename over the target.

A reader (or DVC) never sees a half-written file; an interrupted writer leaves only a
`*.tmp` sibling, which the next write replaces.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temp path next to `target`; on success rename it to `target`, on error delete it.

    Writers that append extensions to names (np.save) should write to an open file handle of it.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    # mkstemp creates 0600; give the file the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_bytes(target: str | Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text(target: str | Path, text: str) -> None:
    write_bytes(target, text.encode("utf-8"))


def write_json(target: str | Path, obj: Any, *, sort_keys: bool = True) -> None:
    """Stable JSON (2-space indent, final newline) so unchanged data gives identical bytes. Keys are
    sorted unless their order means something (a DVC metrics file: `dvc exp show` keeps it)."""
    write_text(target, json.dumps(obj, indent=2, sort_keys=sort_keys) + "\n")
