"""Archives of a photo folder, as users make them: `pack_zip`, `pack_tar`, `pack_tar_gz`, with or
without one wrapping top-level directory (users zip the folder itself), and the zip with what macOS
Finder adds. Deterministic: fixed member times, owners and modes, so the same folder gives the same
archive bytes.
"""

from __future__ import annotations

import gzip
import os
import stat
import tarfile
import zipfile
from pathlib import Path

from support.own_images_folders import APPLE_DOUBLE

ARCHIVE_TIME = (2024, 5, 17, 12, 0, 0)  # fixed member times: the same folder gives the same archive
ARCHIVE_EPOCH = 1715947200  # the same instant, for tar


def _folder_members(folder: Path) -> list[tuple[str, Path]]:
    """(relative POSIX path, path) of every directory, file and symlink under folder, sorted so the
    archive is deterministic. Symlinks are listed, never followed."""
    members = []
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        for name in dirnames + filenames:
            members.append(((here / name).relative_to(folder).as_posix(), here / name))
    return sorted(members)


def _zip_info(name: str, path: Path) -> tuple[zipfile.ZipInfo, bytes]:
    """A member as Info-ZIP stores it: Unix modes, symlinks as links (their target is the data)."""
    is_dir = path.is_dir() and not path.is_symlink()
    info = zipfile.ZipInfo(name + "/" if is_dir else name, date_time=ARCHIVE_TIME)
    info.create_system = 3  # Unix, so external_attr's high bits are read as a mode
    if path.is_symlink():
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        return info, os.readlink(path).encode()
    if is_dir:
        info.external_attr = (stat.S_IFDIR | 0o755) << 16 | 0x10  # 0x10: MS-DOS directory flag
        return info, b""
    info.external_attr = (stat.S_IFREG | 0o644) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    return info, path.read_bytes()


def _prefixed(rel: str, top_dir: str | None) -> str:
    return f"{top_dir}/{rel}" if top_dir else rel


def pack_zip(folder, dest, *, top_dir: str | None = None, macos_junk: bool = False) -> Path:
    """Zip `folder`'s contents into `dest`. top_dir: None puts train/… at the archive's top; a name
    wraps everything in that one directory (photos/train/…), as zipping the folder itself does.
    macos_junk adds what Finder's "Compress" adds: __MACOSX/…/._<name> AppleDouble files."""
    folder, dest = Path(folder), Path(dest)
    with zipfile.ZipFile(dest, "w") as zf:
        if top_dir:
            zf.writestr(_zip_info(top_dir, folder)[0], b"")
        for rel, path in _folder_members(folder):
            zf.writestr(*_zip_info(_prefixed(rel, top_dir), path))
        if macos_junk:
            for rel, path in _folder_members(folder):
                if path.is_file() and not path.is_symlink():
                    parent, _, name = _prefixed(rel, top_dir).rpartition("/")
                    junk = f"__MACOSX/{parent}/._{name}" if parent else f"__MACOSX/._{name}"
                    zf.writestr(zipfile.ZipInfo(junk, date_time=ARCHIVE_TIME), APPLE_DOUBLE)
    return dest


def _write_tar(folder: Path, fileobj, top_dir: str | None) -> None:
    """Members with fixed times, owners and modes, so the same folder gives the same tar bytes."""
    with tarfile.open(fileobj=fileobj, mode="w", format=tarfile.PAX_FORMAT) as tf:
        members = _folder_members(folder)
        if top_dir:
            members = [(top_dir, folder)] + [(_prefixed(rel, top_dir), path) for rel, path in members]
        for name, path in members:
            info = tf.gettarinfo(str(path), arcname=name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = ARCHIVE_EPOCH, 0, 0, "", ""
            if not info.issym():
                info.mode = 0o755 if info.isdir() else 0o644
            if info.isreg():
                with open(path, "rb") as data:
                    tf.addfile(info, data)
            else:
                tf.addfile(info)


def pack_tar(folder, dest, *, top_dir: str | None = None) -> Path:
    """An uncompressed tar of `folder`'s contents (top_dir as in pack_zip); symlinks stay symlinks."""
    dest = Path(dest)
    with open(dest, "wb") as raw:
        _write_tar(Path(folder), raw, top_dir)
    return dest


def pack_tar_gz(folder, dest, *, top_dir: str | None = None) -> Path:
    """pack_tar, gzipped with no name or time in the gzip header (so the bytes are reproducible)."""
    dest = Path(dest)
    with open(dest, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        _write_tar(Path(folder), gz, top_dir)
    return dest
