"""tinyclf.data.preprocess: archive -> prepared arrays for any format. The orchestration: resizing
only when asked, the output replaced whole or not at all, the archive in data/raw matched to
data.dataset, and the stage script's output and one-line errors.

The formats' readers: tests/data/formats/; the decode pool: test_decode_pool.py; decoding one image:
test_images.py; the array format: test_arrays.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support.data_archives import build_tiny_zip, color, small_stand_in
from support.helpers import REPO, shrunk_params, venv_env, write_params

from tinyclf.data import arrays
from tinyclf.data.formats import registry
from tinyclf.data.formats.contract import PrepareOptions
from tinyclf.data.preprocess import find_archive, prepare
from tinyclf.errors import PrepareError


def test_resize_only_when_asked(tiny_zip, tmp_path):
    prepare(tiny_zip, tmp_path / "p32", "tiny-imagenet", PrepareOptions(image_size=32, workers=1, progress=False))
    x, _ = arrays.load_split(tmp_path / "p32", "train")
    stats = arrays.load_stats(tmp_path / "p32")
    assert x.shape == (36, 32, 32, 3) and stats["image_size"] == [32, 32]
    assert stats["splits"]["train"]["resized"] == 36 and stats["splits"]["val"]["resized"] == 6
    assert np.abs(x[2].astype(int) - color(0, 2)).max() <= 3  # INTER_AREA keeps a flat colour flat


def test_one_format_archive_is_not_taken_for_another(tmp_path):
    """preprocess names the archive and what it expected when data.dataset and the file disagree."""
    tiny, cifar = registry.get("tiny-imagenet"), registry.get("cifar10")
    archive = small_stand_in(tiny, tmp_path / "raw" / tiny.official.filename)
    with pytest.raises(PrepareError, match=r"holds the tiny-imagenet archive .* but data.dataset is cifar10"):
        find_archive(tmp_path / "raw", "cifar10")
    with pytest.raises(PrepareError, match="not a gzip-compressed tar archive"):
        prepare(archive, tmp_path / "p", cifar.name, PrepareOptions(progress=False))
    assert not (tmp_path / "p").exists()


# ------------------------------------------------------------------------------ atomicity


def test_failure_leaves_no_output_and_keeps_old_one(tmp_path):
    good = build_tiny_zip(tmp_path / "good.zip")
    bad = build_tiny_zip(tmp_path / "bad.zip", special={"val_3.JPEG": b"broken"})
    out = tmp_path / "data" / "prepared"

    with pytest.raises(PrepareError):
        prepare(bad, out, "tiny-imagenet", PrepareOptions(workers=1, progress=False))
    assert not out.exists()
    assert list(out.parent.iterdir()) == []  # no temp directory left behind either

    prepare(good, out, "tiny-imagenet", PrepareOptions(workers=1, progress=False))
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(PrepareError, match="val_3.JPEG"):
        prepare(bad, out, "tiny-imagenet", PrepareOptions(workers=1, progress=False))
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before and len(before) == 8
    assert sorted(p.name for p in out.parent.iterdir()) == ["prepared"]


def test_success_replaces_whole_directory(tmp_path):
    out = tmp_path / "prepared"
    (out / "train").mkdir(parents=True)
    (out / "train" / "stale.npy").write_bytes(b"from an older layout")
    prepare(build_tiny_zip(tmp_path / "a.zip"), out, "tiny-imagenet", PrepareOptions(workers=1, progress=False))
    assert not (out / "train" / "stale.npy").exists()
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [
        "classes.json", "stats.json", "train/images.npy", "train/labels.npy", "train/sources.json", "val/images.npy",
        "val/labels.npy", "val/sources.json",
    ]


# ------------------------------------------------------------------------------ the stage script


def _stage(tmp_path, raw: Path, dataset: str) -> subprocess.CompletedProcess:
    params = write_params(tmp_path / "params.yaml", shrunk_params(data__dataset=dataset, data__image_size=0,
                                                                  download__generated__num_classes=10))
    (tmp_path / "corrections.csv").write_text("source,action,class\n")  # data.corrections, from the working directory
    return subprocess.run(
        [sys.executable, str(REPO / "stages" / "preprocess.py"), "--raw", str(raw), "--out", str(tmp_path / "prepared"),
         "--params", str(params)],
        capture_output=True, text=True, env=venv_env(REPO), cwd=tmp_path, timeout=120,
    )


def test_stage_script_prepares_and_summarizes(tmp_path, cifar10_archive):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "cifar-10-python.tar.gz").write_bytes(cifar10_archive.read_bytes())
    proc = _stage(tmp_path, raw, "cifar10")
    assert proc.returncode == 0, proc.stderr
    assert "cifar10 (GENERATED data): train 150, val 60 images of 32x32" in proc.stdout
    assert "images/s" in proc.stdout
    assert json.loads((tmp_path / "prepared" / "stats.json").read_text())["splits"]["val"]["count"] == 60


def test_stage_script_wrong_or_missing_archive(tmp_path, cifar10_archive):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "cifar-10-python.tar.gz").write_bytes(cifar10_archive.read_bytes())
    proc = _stage(tmp_path, raw, "tiny-imagenet")
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("preprocess: ")
    assert "holds the cifar10 archive (cifar-10-python.tar.gz) but data.dataset is tiny-imagenet" in proc.stderr
    (raw / "cifar-10-python.tar.gz").unlink()
    proc = _stage(tmp_path, raw, "tiny-imagenet")
    assert proc.returncode == 1 and "tiny-imagenet-200.zip: missing; run the download stage" in proc.stderr
    assert not (tmp_path / "prepared").exists()
