"""Pack a directory of images into one deterministic tar: the same files give the same bytes.

    pack_directory("/photos", "data/raw/images.tar")   # -> PackReport

DVC then versions one file instead of a hundred thousand, and `dvc status` stays quiet while the
folder is unchanged: members are sorted by path, and every header carries fixed metadata (mtime 0,
uid/gid 0, no user names, mode 0644 for files and 0755 for directories), so neither the walk
order of the filesystem nor timestamps nor ownership reach the archive. Directories get their own
entries, so an empty class folder is still seen (and refused) by preprocess.

Left out, and listed in the archive's `.tinyclf/packed.json` (so stats.json can count them):
hidden files and folders (`.DS_Store`, `._x.jpg`, `.git/`), system junk (`Thumbs.db`,
`desktop.ini`, `__MACOSX/`), and symlinks pointing outside the source, which are not followed (a
link into a private folder must not leak it into a dataset). A symlink to a file inside the source
is packed as a copy of that file; a symlink to a directory is not followed (it could loop).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from tinyclf import atomic
from tinyclf.errors import TinyclfError

PACK_MANIFEST = ".tinyclf/packed.json"
# Files operating systems and photo tools leave in folders; never images.
SYSTEM_JUNK = {"thumbs.db", "desktop.ini", "__macosx", "icon\r", "$recycle.bin", "system volume information"}


class PackError(TinyclfError):
    """A source directory that cannot be packed; the message names it."""


@dataclass
class PackReport:
    """What went into the archive and what was left out, by path relative to the source."""

    files: int = 0
    bytes: int = 0
    md5: str = ""  # of the archive, computed while it is written
    left_out: dict[str, list[str]] = field(default_factory=lambda: {"hidden_or_system": [], "symlinks_outside": [],
                                                                    "symlinked_directories": [], "unreadable": []})

    def manifest(self) -> dict:
        return {"files": self.files, "bytes": self.bytes, "left_out": {k: sorted(v) for k, v in self.left_out.items()}}

    def describe(self) -> str:
        parts = [f"{len(v)} {k.replace('_', ' ')}" for k, v in self.left_out.items() if v]
        return f"{self.files} files, {self.bytes:,} bytes" + (f"; left out {', '.join(parts)}" if parts else "")


def is_hidden_or_system(name: str) -> bool:
    """A file or folder name that is never part of a dataset: hidden (dot) names and OS junk."""
    return name.startswith(".") or name.lower() in SYSTEM_JUNK


def walk_source(root: Path, report: PackReport) -> tuple[list[str], list[tuple[str, Path]]]:
    """(directories, [(relative path, real file)]) under root, sorted, with what is left out noted in `report`."""
    root_real = Path(os.path.realpath(root))
    directories: list[str] = []
    files: list[tuple[str, Path]] = []

    def visit(directory: Path, rel: str) -> None:
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            report.left_out["unreadable"].append(f"{rel or '.'} ({exc.strerror})")
            return
        for entry in entries:
            path = f"{rel}/{entry.name}" if rel else entry.name
            if is_hidden_or_system(entry.name):
                report.left_out["hidden_or_system"].append(path)
            elif entry.is_symlink():
                _visit_symlink(Path(entry.path), path, root_real, files, report)
            elif entry.is_dir():
                directories.append(path)
                visit(Path(entry.path), path)
            elif entry.is_file():
                files.append((path, Path(entry.path)))

    visit(root, "")
    return directories, files


def _visit_symlink(link: Path, rel: str, root_real: Path, files: list, report: PackReport) -> None:
    target = Path(os.path.realpath(link))
    if root_real not in target.parents:
        report.left_out["symlinks_outside"].append(rel)
    elif target.is_dir():
        report.left_out["symlinked_directories"].append(rel)
    elif target.is_file():
        files.append((rel, target))
    else:
        report.left_out["unreadable"].append(f"{rel} (broken symlink)")


def _header(name: str, *, directory: bool, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o755 if directory else 0o644
    info.size = size
    info.mtime = info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def check_source_directory(source: Path, out_dir: Path) -> None:
    """PackError unless `source` is a readable directory that does not hold the output."""
    if not source.exists():
        raise PackError(f"{source}: no such directory (download.source for data.dataset=folder is a folder of "
                        "class folders, a .zip/.tar/.tar.gz of one, or an http(s) URL)")
    if not source.is_dir():
        raise PackError(f"{source}: not a directory")
    out_real = Path(os.path.realpath(out_dir))
    src_real = Path(os.path.realpath(source))
    if out_real == src_real or src_real in out_real.parents:
        raise PackError(f"{source}: holds the download stage's output {out_dir}; point download.source at the "
                        "folder of class folders itself")


def pack_directory(source: str | Path, dest: str | Path, *, progress: bool = True) -> PackReport:
    """Write `source`'s files as the deterministic tar `dest` (atomically); return what went in."""
    source, dest = Path(source), Path(dest)
    report = PackReport()
    directories, files = walk_source(source, report)
    members = sorted([(d, None) for d in directories] + files, key=lambda m: m[0])
    total = sum(path.stat().st_size for _, path in files)
    with atomic.atomic_path(dest) as tmp, open(tmp, "wb") as raw:
        fh = _HashingWriter(raw)
        _write_tar(fh, source, members, total, report, progress)
    report.md5 = fh.digest.hexdigest()
    return report


def _write_tar(fh, source: Path, members: list, total: int, report: PackReport, progress: bool) -> None:
    with tarfile.open(fileobj=fh, mode="w", format=tarfile.GNU_FORMAT, encoding="utf-8") as tar, \
            tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=f"pack {source.name}",
                 file=sys.stderr, disable=not progress, leave=False) as bar:
        for rel, path in members:
            if path is None:
                tar.addfile(_header(rel, directory=True))
                continue
            _add_file(tar, rel, path, report)
            bar.update(report.bytes - bar.n)
        manifest = json.dumps(report.manifest(), indent=1, sort_keys=True).encode()
        tar.addfile(_header(PACK_MANIFEST, directory=False, size=len(manifest)), io.BytesIO(manifest))


class _HashingWriter:
    """The archive's file object for tarfile: writes through and keeps the md5, so the download
    stage can print it without reading a gigabyte-sized archive a second time."""

    def __init__(self, fh):
        self.fh, self.digest = fh, hashlib.md5()

    def write(self, data) -> int:
        self.digest.update(data)
        return self.fh.write(data)

    def tell(self) -> int:
        return self.fh.tell()


def _add_file(tar: tarfile.TarFile, rel: str, path: Path, report: PackReport) -> None:
    try:
        fh = open(path, "rb")
    except OSError as exc:
        report.left_out["unreadable"].append(f"{rel} ({exc.strerror})")
        return
    with fh:
        size = os.fstat(fh.fileno()).st_size
        # The size is fixed in the header before the bytes are copied: a file that changes while it
        # is packed would make a corrupt archive, so that is an error, not a silent truncation.
        tar.addfile(_header(rel, directory=False, size=size), _ExactReader(fh, size, rel))
    report.files += 1
    report.bytes += size


class _ExactReader:
    """A file object that yields exactly `size` bytes, or raises PackError if the file changed size."""

    def __init__(self, fh, size: int, rel: str):
        self.fh, self.left, self.rel = fh, size, rel

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = self.fh.read(n)
        if len(data) < n:
            raise PackError(f"{self.rel}: the file shrank while it was packed; run again when the folder is quiet")
        self.left -= len(data)
        return data
