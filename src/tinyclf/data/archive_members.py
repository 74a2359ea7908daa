"""Random access to the files inside a zip or an uncompressed tar, without extracting either.

    archive = open_archive("data/raw/images.tar")
    for entry in archive.entries(): ...          # names, sizes, kinds (file / directory / link)
    data = archive.read(entry.key)                # any order, from any process holding its own handle

A tar member is read with one `pread` at its data offset (found once, while listing), so decode
workers share nothing but the file; a zip member through zipfile, which checks its CRC. Either
way a member declaring more than `MAX_IMAGE_BYTES` is refused before it is read.
"""

from __future__ import annotations

import os
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tinyclf.data.images import MAX_IMAGE_BYTES


@dataclass(frozen=True)
class Entry:
    name: str  # path inside the archive, "/"-separated, no trailing slash
    kind: str  # file | directory | link (symlinks and hard links: never followed)
    size: int
    key: object  # what `read` takes: the zip member name, or (offset, size) in the tar


class ArchiveError(ValueError):
    """An archive that cannot be listed or a member that cannot be read; the message says why."""


def _clean_name(name: str) -> str:
    """A member name without the "./" and "/" prefixes that `tar -cf x.tar .` and some tools write."""
    name = name.rstrip("/")
    while name.startswith("./"):
        name = name[2:]
    return name.lstrip("/")


def _check_declared(size: int) -> None:
    if size > MAX_IMAGE_BYTES:
        raise ArchiveError(f"it declares {size:,} bytes uncompressed, over the limit of {MAX_IMAGE_BYTES:,} "
                           "(tinyclf.data.images.MAX_IMAGE_BYTES)")


class ZipMembers:
    kind = "zip"

    def __init__(self, path: Path):
        self.path = path
        self.zf = zipfile.ZipFile(path)

    def entries(self) -> list[Entry]:
        out = []
        for info in self.zf.infolist():
            name = _clean_name(info.filename)
            if not name or name == ".":
                continue
            # Unix symlinks stored by `zip -y` carry S_IFLNK in the high bits of external_attr.
            is_link = (info.external_attr >> 16) & 0o170000 == 0o120000
            kind = "directory" if info.is_dir() else "link" if is_link else "file"
            out.append(Entry(name, kind, info.file_size, info.filename))
        return out

    def read(self, key) -> bytes:
        _check_declared(self.zf.getinfo(key).file_size)
        return self.zf.read(key)

    def close(self) -> None:
        self.zf.close()


class TarMembers:
    kind = "tar"

    def __init__(self, path: Path):
        self.path = path
        self.fd = os.open(path, os.O_RDONLY)

    def entries(self) -> list[Entry]:
        out = []
        with tarfile.open(self.path, mode="r:") as tar:
            for info in tar:
                name = _clean_name(info.name)
                if not name or name == ".":
                    continue
                if info.isreg():
                    out.append(Entry(name, "file", info.size, (info.offset_data, info.size)))
                elif info.isdir():
                    out.append(Entry(name, "directory", 0, None))
                else:  # symlinks, hard links, devices, fifos
                    out.append(Entry(name, "link", 0, None))
        return out

    def read(self, key) -> bytes:
        offset, size = key
        _check_declared(size)
        data = os.pread(self.fd, size, offset)
        if len(data) != size:
            raise ArchiveError(f"the archive ends {size - len(data)} bytes into this member (truncated tar)")
        return data

    def close(self) -> None:
        os.close(self.fd)


def open_archive(path: str | Path) -> ZipMembers | TarMembers:
    """A reader for the zip or uncompressed tar at `path`; ArchiveError saying what it is otherwise."""
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(512)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        try:
            return ZipMembers(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise ArchiveError(f"not a readable zip ({exc})") from None
    if head[257:262] == b"ustar":
        return TarMembers(path)
    if head[:2] == b"\x1f\x8b":
        raise ArchiveError("a gzip-compressed file; the download stage unpacks .tar.gz sources to a .tar first")
    raise ArchiveError(f"neither a zip nor a tar archive (starts {head[:8]!r})")
