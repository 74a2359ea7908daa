"""The download stage: leave exactly one file in data/raw, the dataset's archive, whatever the source.

    run_download(params, "data/raw")

The source is `download.source`: official (the published URL and md5), generated (a stand-in in
the official format, `tinyclf.data.formats.generated`), an http(s) mirror or a local archive
(fetched by `tinyclf.data.fetch`: resumable, md5-verified), or, for your own images, a directory
(packed into one deterministic tar, `tinyclf.data.pack`) or an archive of class folders (a .tar.gz
is unpacked to a plain tar, whose members preprocess can read in any order).
"""

from __future__ import annotations

import gzip
import shutil
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

from tinyclf import atomic
from tinyclf.data.fetch import CHUNK, DownloadError, HttpPolicy, check_path_source, fetch
from tinyclf.data.formats import registry
from tinyclf.data.formats.generated import write_archive
from tinyclf.data.pack import check_source_directory, pack_directory
from tinyclf.params import Params


@dataclass(frozen=True)
class DownloadPlan:
    """What the download stage will do, resolved from params."""

    kind: str  # official | url | path | generated | directory (a folder dataset's folder, packed)
    source: str  # URL or local path ("generated" for the generated kind)
    md5: str | None  # expected md5; None for generated archives (nothing to verify against)
    filename: str  # the archive's name under data/raw/ (always the official one)


def plan_download(params: Params) -> DownloadPlan:
    """Resolve params into (kind, source, expected md5, final file name)."""
    fmt = registry.get(params.data.dataset)
    dl = params.download
    kind = dl.kind
    if fmt.own_images:
        if kind == "path" and Path(dl.source).is_dir():
            return DownloadPlan("directory", dl.source, None, f"{registry.OWN_ARCHIVE_STEM}.tar")
        # Own archives have no published md5: checked only when download.md5 names one.
        return DownloadPlan(kind, dl.source, dl.md5.lower() or None, registry.own_archive_filename(dl.source))
    official = fmt.official
    if kind == "official":
        return DownloadPlan("official", official.url, official.md5, official.filename)
    if kind == "generated":
        return DownloadPlan("generated", "generated", None, official.filename)
    return DownloadPlan(kind, dl.source, (dl.md5 or official.md5).lower(), official.filename)


def run_download(params: Params, out_dir: str | Path, *, progress: bool = True, backoff: float = 1.0) -> Path:
    """The download stage: leave exactly one file, `out_dir/<official archive name>`; return it."""
    plan = plan_download(params)
    out_dir = Path(out_dir)
    dest = out_dir / plan.filename
    if plan.kind == "path":
        # Before anything in out_dir is removed: a mistyped path must not cost the archive already there.
        check_path_source(Path(plan.source), out_dir)
    if plan.kind == "directory":
        check_source_directory(Path(plan.source), out_dir)
    _clear_out_dir(out_dir, keep={dest.name + ".part"} if plan.kind in ("official", "url") else set())
    if plan.kind == "generated":
        g = params.download.generated
        print(
            f"{dest}: writing a GENERATED {params.data.dataset} dataset ({g.num_classes} classes, "
            f"{g.train_per_class} train and {g.val_per_class} val images per class, seed {g.seed}) — "
            "synthetic images, not the real data",
            file=sys.stderr,
        )
        return write_archive(params.data.dataset, dest, num_classes=g.num_classes, train_per_class=g.train_per_class,
                             val_per_class=g.val_per_class, test_images=g.test_images, seed=g.seed)
    if plan.kind == "directory":
        return _pack_folder(Path(plan.source), dest, progress)
    own_images = registry.get(params.data.dataset).own_images
    http = HttpPolicy(params.download.retries, params.download.timeout, backoff)
    fetched = fetch(plan.source, dest, md5=plan.md5, dataset=None if own_images else params.data.dataset, http=http,
                    progress=progress)
    if own_images:
        return _own_archive(dest, plan, fetched.md5)
    print(f"{dest}: {dest.stat().st_size} bytes from {plan.source}, md5 {fetched.md5} verified", file=sys.stderr)
    return dest


def _pack_folder(source: Path, dest: Path, progress: bool) -> Path:
    report = pack_directory(source, dest, progress=progress)
    print(f"{dest}: packed {source}: {report.describe()}; md5 {report.md5}", file=sys.stderr)
    return dest


def _own_archive(dest: Path, plan: DownloadPlan, md5: str) -> Path:
    """A fetched archive of class folders: refuse what is not a zip, tar or tar.gz (deleting it),
    and unpack a tar.gz to a plain tar, which preprocess can read members of in any order."""
    with open(dest, "rb") as fh:
        head = fh.read(512)
    checked = f"md5 {md5} " + ("verified" if plan.md5 else "(set download.md5 to pin it)")
    if head[:2] == b"\x1f\x8b":
        tar = dest.with_name(f"{registry.OWN_ARCHIVE_STEM}.tar")
        try:
            _gunzip(dest, tar)
        finally:
            dest.unlink()
        dest = tar
    elif head[:4] not in (b"PK\x03\x04", b"PK\x05\x06") and head[257:262] != b"ustar":
        dest.unlink()
        raise DownloadError(f"{plan.source}: not a zip, tar or tar.gz archive (starts {head[:8]!r}); nothing was kept")
    print(f"{dest}: {dest.stat().st_size:,} bytes from {plan.source}, {checked}", file=sys.stderr)
    return dest


def _gunzip(src: Path, dest: Path) -> None:
    try:
        with gzip.open(src, "rb") as fin, atomic.atomic_path(dest) as tmp, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout, CHUNK)
            fout.flush()
        with open(dest, "rb") as fh:
            if fh.read(512)[257:262] != b"ustar":
                raise DownloadError(f"{src.name}: a gzip file that does not hold a tar archive")
    except (OSError, EOFError, zlib.error) as exc:
        raise DownloadError(f"{src.name}: a broken gzip file ({exc})") from None
    except DownloadError:
        dest.unlink(missing_ok=True)
        raise


def _clear_out_dir(out_dir: Path, keep: set[str]) -> None:
    """Remove everything in out_dir except names in `keep`, so the stage's output is exactly one file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for entry in out_dir.iterdir():
        if entry.name in keep:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
