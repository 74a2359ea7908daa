"""benchmarks/gpu_check.py, the one command for whoever has a GPU, runs end to end on this CPU
(`--device cpu --quick`), so it cannot rot between the sessions that have a GPU."""

from __future__ import annotations

import json
import sys
import zipfile

from support.helpers import REAL_SUBSET, REPO, run, venv_env


def test_gpu_check_runs_end_to_end_on_a_cpu(tmp_path):
    proc = run([sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--quick", "--out", str(tmp_path)],
               REPO, venv_env(REPO), timeout=300)
    results = json.loads((tmp_path / "gpu_check.json").read_text())
    assert results["cuda_tests"]["status"] == "ok"
    assert results["cuda_tests"]["counts"] == {"skipped": results["cuda_tests"]["counts"]["skipped"]}  # all skip here
    rows = results["throughput"]["rows"]
    assert [r["config"].split(" (")[0] for r in rows] == ["fp32", "bf16", "bf16 + channels_last", "+ compile",
                                                          "+ device data"]
    assert all(r["images_per_s"] > 0 and 0 <= r["data_share"] < 1 and r["mfu"] is None for r in rows)
    real = results["real_run"]
    if REAL_SUBSET.exists():
        assert real["status"] == "ok", real
        assert real["train_images"] == 400 and real["run"]["generated"] is False  # real bytes, said so
    else:
        assert real["status"] == "skipped" and "no Tiny ImageNet archive" in real["why"]
    report = (tmp_path / "gpu_check.md").read_text()
    assert "| + device data" in report and "## real_run:" in report
    assert "gpu_check: throughput: ok" in proc.stdout


def test_the_reduced_archive_keeps_the_official_layout(tmp_path):
    if not REAL_SUBSET.exists():
        import pytest

        pytest.skip(f"real Tiny ImageNet subset not present at {REAL_SUBSET}")
    sys.path.insert(0, str(REPO / "benchmarks"))
    from gpu_check import reduced_archive

    from tinyclf.data.formats.tiny_imagenet import read_index

    out = reduced_archive(REAL_SUBSET, tmp_path / "r.zip", 3, 5, 2)
    index = read_index(out)
    assert len(index.classes) == 3 and len(index.members["train"]) == 15 and len(index.members["val"]) == 6
    assert index.labels["val"].count(0) == 2
    with zipfile.ZipFile(out) as zf:
        assert all(info.compress_type == zipfile.ZIP_STORED for info in zf.infolist())
