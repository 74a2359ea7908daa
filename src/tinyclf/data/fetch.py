"""Resumable, checksummed fetch of one file from an HTTP(S) URL or a local path.

    fetch("https://host/cifar-10-python.tar.gz", "data/raw/cifar-10-python.tar.gz",
          md5="c58f30108f718f92721af3b95e74349a", retries=5, timeout=60)

HTTP downloads stream into `<dest>.part`; a later attempt (or a later run) resumes it with a
`Range` request, falls back to a full download when the server ignores Range, retries transient
failures with exponential backoff, verifies the md5 over the whole file and only then renames it
into place. A wrong checksum deletes the partial data: nothing half-written is ever left as `dest`.
A local file is hard-linked (or copied) beside `dest`, verified, then renamed into place.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import requests
import urllib3
from tqdm import tqdm

from tinyclf.data.formats import registry
from tinyclf.errors import TinyclfError

CHUNK = 1 << 20


# Statuses worth another attempt: the server may recover. Anything else (404, 403 …) is final.
TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}




class DownloadError(TinyclfError, RuntimeError):
    """A download that could not produce a verified archive; the message is one line naming the source."""


class _Retry(Exception):
    """An attempt failed in a way another attempt may fix."""


@dataclass(frozen=True)
class HttpPolicy:
    """How hard an HTTP download tries (params.yaml download.retries and download.timeout)."""

    retries: int = 5  # attempts before giving up
    timeout: float = 60.0  # seconds without data before an attempt counts as failed
    backoff: float = 1.0  # the first wait between attempts, in seconds; it doubles each time


@dataclass(frozen=True)
class Expected:
    """What the fetched file must be: its md5 (None: not checked) and, for an official dataset, an
    archive that starts like the one its authors publish."""

    md5: str | None = None
    dataset: str | None = None


class Fetched(NamedTuple):
    path: Path
    md5: str  # of the file as fetched: the caller never has to read it again to say what it got


def fetch(source: str, dest: str | Path, *, md5: str | None, dataset: str | None = None,
          http: HttpPolicy = HttpPolicy(), progress: bool = True) -> Fetched:
    """Fetch `source` (http(s) URL or local path) to `dest`, verified against `md5` (None: no check);
    `dataset`, when given, also checks the file starts like that dataset's archive (zip / gzip)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    expected = Expected(md5, dataset)
    if re.match(r"^https?://", source):
        got = _fetch_http(source, dest, expected, http, progress)
    else:
        got = _fetch_path(Path(source), dest, expected, progress)
    return Fetched(dest, got)


# --- HTTP ----------------------------------------------------------------------------------------


def _fetch_http(url, dest: Path, expected: Expected, http: HttpPolicy, progress: bool) -> str:
    part = dest.with_name(dest.name + ".part")
    earlier = part.stat().st_size if part.exists() else 0  # left by an interrupted earlier run
    with requests.Session() as session:
        for attempt in range(1, http.retries + 1):
            try:
                digest = _http_attempt(session, url, part, timeout=http.timeout, progress=progress, desc=dest.name)
                break
            except _Retry as exc:
                if attempt == http.retries:
                    raise DownloadError(f"{url}: download failed after {http.retries} attempts: {exc}") from None
                wait = http.backoff * 2 ** (attempt - 1)
                print(f"{url}: attempt {attempt}/{http.retries} failed ({exc}); retrying in {wait:g} s",
                      file=sys.stderr)
                time.sleep(wait)
    hint = f" (resumed {earlier} bytes left by an earlier run; run again to download from the start)" if earlier else ""
    return _verify_and_place(part, dest, digest, expected, source=url, hint=hint)


def _hash_file(path: Path, digest) -> None:
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)


def _http_attempt(session: requests.Session, url: str, part: Path, *, timeout: float, progress: bool, desc: str):
    """One GET, resuming `part` if it exists; returns the md5 object of the complete file."""
    offset = part.stat().st_size if part.exists() else 0
    # identity: the archive is already compressed; a Content-Encoding would break resume offsets.
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = session.get(url, headers=headers, stream=True, timeout=timeout)
    except requests.RequestException as exc:
        raise _Retry(_reason(exc)) from None
    with resp:
        if resp.status_code == 416 and offset:
            return _digest_of_complete_part(resp, part, offset)
        offset, mode, total = _where_the_body_goes(resp, url, part, offset)
        return _stream_body(resp, part, offset, mode, total, progress=progress, desc=desc)


def _digest_of_complete_part(resp: requests.Response, part: Path, offset: int):
    """HTTP 416 (nothing past what we hold): the .part is either complete or not this file."""
    total = _content_range_total(resp.headers.get("Content-Range", ""))
    if total == offset:
        digest = hashlib.md5()
        _hash_file(part, digest)
        return digest
    part.unlink()
    raise _Retry(f"HTTP 416 for a partial file of {offset} bytes; starting over")


def _where_the_body_goes(resp: requests.Response, url: str, part: Path, offset: int) -> tuple[int, str, int | None]:
    """(offset the body starts at, file mode, total size or None) for a response; _Retry or
    DownloadError for a status that carries no usable body."""
    if resp.status_code in TRANSIENT_STATUS:
        raise _Retry(f"HTTP {resp.status_code} {resp.reason}")
    if resp.status_code not in (200, 206):
        raise DownloadError(f"{url}: HTTP {resp.status_code} {resp.reason}")
    if resp.status_code == 206:
        if _content_range_start(resp.headers.get("Content-Range", "")) != offset:
            part.unlink(missing_ok=True)
            raise _Retry(f"server sent a range other than the requested bytes={offset}-; starting over")
        length = _int_or_none(resp.headers.get("Content-Length"))
        return offset, "ab", offset + length if length is not None else None
    # 200: the server ignores Range (or there was nothing to resume): start from zero.
    if offset:
        print(f"{url}: server did not resume (HTTP {resp.status_code}); downloading from the start", file=sys.stderr)
    return 0, "wb", _int_or_none(resp.headers.get("Content-Length"))


def _stream_body(resp: requests.Response, part: Path, offset: int, mode: str, total: int | None, *,
                 progress: bool, desc: str):
    """Append (or write) the body to `part` with a progress bar; the md5 covers the whole file."""
    digest = hashlib.md5()
    if offset:
        _hash_file(part, digest)  # the checksum covers the bytes already on disk too
    received = offset
    bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
               file=sys.stderr, disable=not progress, leave=False)
    try:
        with bar, open(part, mode) as fh:
            # read1: whatever has arrived, up to CHUNK, so a stall loses nothing already received.
            while chunk := resp.raw.read1(CHUNK, decode_content=False):
                fh.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        # What arrived stays in .part for the next attempt to resume.
        raise _Retry(f"connection lost after {received} bytes: {_reason(exc)}") from None
    if total is not None and received != total:
        raise _Retry(f"connection closed after {received} of {total} bytes")
    return digest


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _content_range_start(value: str) -> int | None:
    m = re.match(r"bytes (\d+)-\d+/(\d+|\*)", value.strip())
    return int(m.group(1)) if m else None


def _content_range_total(value: str) -> int | None:
    m = re.match(r"bytes (?:\*|\d+-\d+)/(\d+)", value.strip())
    return int(m.group(1)) if m else None


# --- local path ----------------------------------------------------------------------------------


def check_path_source(src: Path, out_dir: Path | None = None) -> None:
    """DownloadError unless `src` is an existing file outside `out_dir` (which the stage empties)."""
    if not src.exists():
        raise DownloadError(f"{src}: no such file (download.source must be official, generated, an http(s) URL "
                            "or an existing archive path)")
    if not src.is_file():
        raise DownloadError(f"{src}: not a file")
    if out_dir is not None and out_dir.resolve() in src.resolve().parents:
        raise DownloadError(f"{src}: lies inside {out_dir}, which the download stage empties before it fetches; "
                            "move the archive elsewhere and point download.source there")


def _fetch_path(src: Path, dest: Path, expected: Expected, progress: bool) -> str:
    check_path_source(src)
    # A unique temp name next to dest: hard link (instant, no extra space) or copy into it, verify, rename.
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.tmp")
    digest = hashlib.md5()
    try:
        try:
            os.link(src, tmp)
            _hash_file(tmp, digest)
        except OSError:  # another filesystem, or links not allowed: copy, hashing as we go
            size = src.stat().st_size
            with open(src, "rb") as fin, open(tmp, "wb") as fout, tqdm(
                total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name, file=sys.stderr,
                disable=not progress, leave=False,
            ) as bar:
                while chunk := fin.read(CHUNK):
                    fout.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
                fout.flush()
                os.fsync(fout.fileno())
        return _verify_and_place(tmp, dest, digest, expected, source=str(src))
    finally:
        tmp.unlink(missing_ok=True)


# --- verification --------------------------------------------------------------------------------


def _verify_and_place(tmp: Path, dest: Path, digest, expected: Expected, *, source: str, hint: str = "") -> str:
    """Check archive kind and md5 of `tmp`; rename it to `dest` and return its md5, or delete it and
    raise DownloadError."""
    got = digest.hexdigest()
    problem = None
    md5 = expected.md5
    if expected.dataset is not None:
        official = registry.get(expected.dataset).official
        with open(tmp, "rb") as fh:
            head = fh.read(len(official.magic))
        if head != official.magic:
            problem = (f"{source}: is not a {official.kind} archive ({expected.dataset} is published as "
                       f"{official.filename}; got a file starting {head!r})")
    if md5 is not None and got != md5.lower():
        mismatch = f"md5 mismatch: expected {md5.lower()}, got {got}"
        problem = f"{problem}; {mismatch}" if problem else f"{source}: {mismatch}"
    if problem is not None:
        tmp.unlink(missing_ok=True)
        raise DownloadError(f"{problem}; nothing was kept{hint}")
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, dest)
    return got
