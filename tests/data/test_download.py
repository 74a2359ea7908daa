"""Downloads against a real HTTP server on 127.0.0.1 serving generated archives of both formats:
plain, interrupted and resumed, corrupted, no Range support, transient 503s; local paths; the stage.
Your own images as the source: a zip and a served tar.gz of a photo folder prepare exactly like the
folder itself; a wrong md5, a file that is no archive, a missing folder fail in one line."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml
from support import own_images_archives
from support.helpers import REPO
from support.http_server import FileServer
from support.own_images_run import SIZE, download_and_prepare, folder_params
from support.own_images_run import md5 as file_md5

from tinyclf.data.download import plan_download, run_download
from tinyclf.data.fetch import DownloadError, HttpPolicy, fetch
from tinyclf.data.formats import registry
from tinyclf.data.formats.generated import is_generated, write_archive
from tinyclf.params import ParamsError, params_from_dict

HTTP = HttpPolicy(retries=4, timeout=5, backoff=0.05)
FAST = dict(http=HTTP, progress=False)
CIFAR10 = registry.get("cifar10").official


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@pytest.fixture(scope="module", params=["tiny-imagenet", "cifar10"])
def archive(request, tmp_path_factory):
    """(dataset, bytes, md5) of a small generated archive in the official format of each dataset."""
    dataset = request.param
    path = tmp_path_factory.mktemp("src") / registry.get(dataset).official.filename
    write_archive(dataset, path, num_classes=10, train_per_class=8, val_per_class=2, test_images=2, seed=1)
    data = path.read_bytes()
    return dataset, data, _md5(data)


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_plain_download(archive, tmp_path):
    dataset, data, md5 = archive
    dest = tmp_path / registry.get(dataset).official.filename
    with FileServer({"/a": data}) as server:
        fetch(server.url("/a"), dest, md5=md5, dataset=dataset, **FAST)
    assert dest.read_bytes() == data
    assert _leftovers(tmp_path) == [dest.name]
    assert server.range_headers() == [None]
    assert is_generated(dest)


def test_interrupted_download_resumes_with_range(archive, tmp_path):
    dataset, data, md5 = archive
    cut = len(data) // 3
    dest = tmp_path / "archive"
    with FileServer({"/a": data}, drop_after=cut) as server:
        fetch(server.url("/a"), dest, md5=md5, dataset=dataset, **FAST)
    assert [s for _, _, s in server.requests] == [200, 206]
    assert server.range_headers() == [None, f"bytes={cut}-"]
    assert dest.read_bytes() == data
    assert _leftovers(tmp_path) == ["archive"]


def test_partial_file_from_an_earlier_run_is_resumed(archive, tmp_path):
    dataset, data, md5 = archive
    dest = tmp_path / "archive"
    (tmp_path / "archive.part").write_bytes(data[:1000])
    with FileServer({"/a": data}) as server:
        fetch(server.url("/a"), dest, md5=md5, dataset=dataset, **FAST)
    assert server.range_headers() == ["bytes=1000-"]
    assert dest.read_bytes() == data and _leftovers(tmp_path) == ["archive"]


def test_complete_partial_file_gets_416_and_is_kept(archive, tmp_path):
    dataset, data, md5 = archive
    dest = tmp_path / "archive"
    (tmp_path / "archive.part").write_bytes(data)
    with FileServer({"/a": data}) as server:
        fetch(server.url("/a"), dest, md5=md5, dataset=dataset, **FAST)
    assert [s for _, _, s in server.requests] == [416]
    assert dest.read_bytes() == data


def test_server_without_range_support_restarts_from_zero(archive, tmp_path):
    dataset, data, md5 = archive
    cut = len(data) // 2
    dest = tmp_path / "archive"
    with FileServer({"/a": data}, range_support=False, drop_after=cut) as server:
        fetch(server.url("/a"), dest, md5=md5, dataset=dataset, **FAST)
    # The client asked to resume; the server answered 200 with everything, and the file is still right.
    assert server.range_headers() == [None, f"bytes={cut}-"]
    assert [s for _, _, s in server.requests] == [200, 200]
    assert dest.read_bytes() == data and _leftovers(tmp_path) == ["archive"]


def test_wrong_md5_leaves_nothing(archive, tmp_path):
    dataset, data, md5 = archive
    corrupted = bytearray(data)
    corrupted[len(data) // 2] ^= 0xFF
    dest = tmp_path / "archive"
    with FileServer({"/a": bytes(corrupted)}) as server:
        url = server.url("/a")
        with pytest.raises(DownloadError) as err:
            fetch(url, dest, md5=md5, dataset=dataset, **FAST)
    msg = str(err.value)
    assert "\n" not in msg and url in msg
    assert f"expected {md5}" in msg and f"got {_md5(bytes(corrupted))}" in msg
    assert _leftovers(tmp_path) == []  # neither the archive nor a .part


def test_resumed_download_md5_covers_bytes_already_on_disk(archive, tmp_path):
    dataset, data, md5 = archive
    dest = tmp_path / "archive"
    stale = bytearray(data[:500])
    stale[10] ^= 0xFF  # a .part that is not a prefix of this file
    (tmp_path / "archive.part").write_bytes(bytes(stale))
    with FileServer({"/a": data}) as server:
        with pytest.raises(DownloadError, match=f"expected {md5}.*resumed 500 bytes left by an earlier run"):
            fetch(server.url("/a"), dest, md5=md5, dataset=dataset, **FAST)
        assert _leftovers(tmp_path) == []
        fetch(server.url("/a"), dest, md5=md5, dataset=dataset, **FAST)  # the next run starts afresh
    assert server.range_headers() == ["bytes=500-", None]
    assert dest.read_bytes() == data


def test_transient_503_is_retried(archive, tmp_path):
    dataset, data, md5 = archive
    dest = tmp_path / "archive"
    with FileServer({"/a": data}, fail_first=2) as server:
        fetch(server.url("/a"), dest, md5=md5, dataset=dataset, **FAST)
    assert [s for _, _, s in server.requests] == [503, 503, 200]
    assert dest.read_bytes() == data


def test_retries_exhausted_and_404_fail_in_one_line(archive, tmp_path):
    dataset, data, md5 = archive
    with FileServer({"/a": data}, fail_first=10) as server:
        with pytest.raises(DownloadError, match=r"failed after 2 attempts: HTTP 503"):
            fetch(server.url("/a"), tmp_path / "x", md5=md5, http=replace(HTTP, retries=2), progress=False)
        assert len(server.requests) == 2
        server.fail_first = 0
        with pytest.raises(DownloadError, match=r"/missing: HTTP 404"):
            fetch(server.url("/missing"), tmp_path / "x", md5=md5, **FAST)
        assert len(server.requests) == 3  # a 404 is not retried
    assert _leftovers(tmp_path) == []


def test_stalled_connection_times_out_and_resumes(archive, tmp_path):
    dataset, data, md5 = archive
    dest = tmp_path / "archive"
    with FileServer({"/a": data}, stall_after=2000, stall_seconds=1.5) as server:
        fetch(server.url("/a"), dest, md5=md5, dataset=dataset, http=replace(HTTP, timeout=0.3), progress=False)
    assert server.range_headers() == [None, "bytes=2000-"]
    assert dest.read_bytes() == data


def test_not_the_expected_archive_is_named(tmp_path):
    page = b"<html>Moved to a new home</html>"
    with FileServer({"/a": page}) as server:
        url = server.url("/a")
        with pytest.raises(DownloadError) as err:
            fetch(url, tmp_path / "x.zip", md5=registry.get("tiny-imagenet").official.md5, dataset="tiny-imagenet",
                  **FAST)
    assert f"{url}: is not a zip archive" in str(err.value) and "expected 90528d7c" in str(err.value)
    assert _leftovers(tmp_path) == []


# --- local path sources ----------------------------------------------------------------------------


def test_local_path_is_linked_or_copied_and_verified(archive, tmp_path):
    dataset, data, md5 = archive
    src = tmp_path / "src" / "mine.bin"
    src.parent.mkdir()
    src.write_bytes(data)
    out = tmp_path / "out"
    dest, got = fetch(str(src), out / "archive", md5=md5, dataset=dataset, progress=False)
    assert dest.read_bytes() == data and got == md5 and _leftovers(out) == ["archive"]
    assert os.path.samefile(src, dest) or dest.stat().st_nlink == 1  # hard link where possible
    with pytest.raises(DownloadError) as err:
        fetch(str(src), out / "other", md5="0" * 32, dataset=dataset, progress=False)
    assert f"{src}: md5 mismatch: expected {'0' * 32}, got {md5}" in str(err.value)
    assert _leftovers(out) == ["archive"] and src.read_bytes() == data  # source untouched


def test_missing_local_path(tmp_path):
    with pytest.raises(DownloadError, match=r"nope\.zip: no such file"):
        fetch(str(tmp_path / "nope.zip"), tmp_path / "out" / "a", md5=None, progress=False)


# --- params -> plan, and the stage -------------------------------------------------------------------


def _params(dataset="tiny-imagenet", **download):
    return params_from_dict({"data": {"dataset": dataset}, "download": download})


def test_plan_from_params():
    official = plan_download(_params("cifar10"))
    assert (official.kind, official.source, official.md5, official.filename) == (
        "official", CIFAR10.url, CIFAR10.md5, "cifar-10-python.tar.gz")
    mirror = plan_download(_params(source="https://mirror.example/t.zip"))
    assert (mirror.kind, mirror.md5) == ("url", registry.get("tiny-imagenet").official.md5)
    path = plan_download(_params(source="/data/subset.zip", md5="AE26E0A9E328F431F5EA014ADFC1170B"))
    assert (path.kind, path.source, path.md5, path.filename) == (
        "path", "/data/subset.zip", "ae26e0a9e328f431f5ea014adfc1170b", "tiny-imagenet-200.zip")
    generated = plan_download(_params(source="generated"))
    assert (generated.kind, generated.md5) == ("generated", None)


def test_run_download_from_mirror_empties_out_dir(archive, tmp_path):
    dataset, data, md5 = archive
    out = tmp_path / "raw"
    out.mkdir()
    (out / "stale.zip").write_bytes(b"old")
    (out / "old_dir").mkdir()
    with FileServer({"/mirror/a": data}) as server:
        params = _params(dataset, source=server.url("/mirror/a"), md5=md5, retries=2, timeout=5)
        dest = run_download(params, out, progress=False, backoff=0.05)
    assert _leftovers(out) == [registry.get(dataset).official.filename] and dest.read_bytes() == data


def _write_params(tmp_path: Path, dataset: str, **download) -> Path:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"]["dataset"] = dataset
    raw["download"].update(download)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _stage(*args, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([sys.executable, str(REPO / "stages" / "download.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_stage_generated_writes_exactly_one_file(tmp_path):
    params = _write_params(tmp_path, "cifar10", source="generated",
                           generated={"num_classes": 10, "train_per_class": 5, "val_per_class": 2,
                                      "test_images": 0, "seed": 0})
    out = tmp_path / "data" / "raw"
    out.mkdir(parents=True)
    (out / "leftover.txt").write_text("x")
    result = _stage("--out", "data/raw", "--params", str(params), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert _leftovers(out) == ["cifar-10-python.tar.gz"]
    assert is_generated(out / "cifar-10-python.tar.gz")
    assert "GENERATED" in result.stderr


def test_stage_errors_are_one_line(tmp_path):
    bad = _write_params(tmp_path, "tiny-imagenet", md5="xyz")
    result = _stage("--out", "raw", "--params", str(bad), cwd=tmp_path)
    assert result.returncode == 1 and "download.md5" in result.stderr and result.stderr.startswith("download: ")
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    missing = _write_params(tmp_path, "tiny-imagenet", source=str(tmp_path / "absent.zip"))
    result = _stage("--out", "raw", "--params", str(missing), cwd=tmp_path)
    assert result.returncode == 1 and "absent.zip: no such file" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_bad_path_source_keeps_the_archive_already_downloaded(archive, tmp_path):
    dataset, data, md5 = archive
    out = tmp_path / "raw"
    out.mkdir()
    existing = out / registry.get(dataset).official.filename
    existing.write_bytes(data)
    with pytest.raises(DownloadError, match=r"typo\.zip: no such file"):
        run_download(_params(dataset, source=str(tmp_path / "typo.zip")), out, progress=False)
    assert existing.read_bytes() == data  # checked before the output directory was emptied
    # A source inside the directory the stage empties would delete itself: refused up front.
    with pytest.raises(DownloadError, match=r"lies inside .*raw, which the download stage empties"):
        run_download(_params(dataset, source=str(existing), md5=md5), out, progress=False)
    assert existing.read_bytes() == data


# ------------------------------------------------------------------ your own images as the source


def test_zip_and_served_tar_gz_give_the_same_arrays_as_the_folder(photos, photos_prepared, tmp_path, capsys):
    archive, _ = photos_prepared
    reference = archive.parent.parent / "prepared"
    zipped = own_images_archives.pack_zip(photos.root, tmp_path / "photos.zip", top_dir="photos", macos_junk=True)
    targz = own_images_archives.pack_tar_gz(photos.root, tmp_path / "photos.tar.gz", top_dir="My Photos")
    with FileServer({"/datasets/photos.tar.gz": targz.read_bytes()}, drop_after=5000) as server:
        # The connection drops once mid-file: the download resumes it, as for official archives.
        sources = [("zip", zipped), ("url", server.url("/datasets/photos.tar.gz"))]
        results = [(name, download_and_prepare(source, tmp_path, name=name)[0]) for name, source in sources]
        assert any("Range" in headers for _, headers, _ in server.requests)
    # Without download.md5 the stage says what it got, so the user can pin it: the md5 of the file
    # as fetched (the .tar.gz, not the tar it is unpacked to).
    said = capsys.readouterr().err
    for archive_file in (zipped, targz):
        assert f"md5 {file_md5(archive_file)} (set download.md5 to pin it)" in said
    for name, got in results:
        assert got.name == ("images.zip" if name == "zip" else "images.tar")
        assert sorted(p.name for p in got.parent.iterdir()) == [got.name]
        for split in ("train", "val"):
            for array in ("images.npy", "labels.npy"):
                assert np.array_equal(np.load(reference / split / array),
                                      np.load(got.parent.parent / "prepared" / split / array)), (name, split, array)


def test_a_wrong_md5_or_a_file_that_is_no_archive_keeps_nothing(photos, tmp_path):
    zipped = own_images_archives.pack_zip(photos.root, tmp_path / "photos.zip")
    params = params_from_dict({"data": {"dataset": "folder", "image_size": SIZE},
                               "download": {"source": str(zipped), "md5": "0" * 32}})
    with pytest.raises(DownloadError, match="md5 mismatch"):
        run_download(params, tmp_path / "raw", progress=False)
    assert list((tmp_path / "raw").iterdir()) == []
    text = tmp_path / "notes.tar"
    text.write_text("not an archive\n" * 100)
    with pytest.raises(DownloadError, match="not a zip, tar or tar.gz archive"):
        run_download(folder_params(text), tmp_path / "raw", progress=False)
    assert list((tmp_path / "raw").iterdir()) == []


def test_a_missing_directory_or_image_size_is_a_one_line_error(tmp_path):
    with pytest.raises(ParamsError, match="data.image_size must be set"):
        params_from_dict({"data": {"dataset": "folder"}, "download": {"source": str(tmp_path)}})
    with pytest.raises(ParamsError, match="download.source must be your images"):
        params_from_dict({"data": {"dataset": "folder", "image_size": 64}})
    with pytest.raises(DownloadError, match="no such file"):
        run_download(folder_params(tmp_path / "nope"), tmp_path / "raw", progress=False)
