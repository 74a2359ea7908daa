"""The stage scripts, run as dvc runs them (`python stages/<stage>.py --params … …`), on a missing or
broken input: exit 1 with one line on stderr that names the input, no traceback, nothing half-written.
And `preprocess.on_corrupt: skip` set in params.yaml (not through the Python argument).

Inputs are real: synthetic prepared arrays, a model file and DVCLive directory from a one-epoch
`run_training`, the evaluate outputs from `run_evaluation`, and a small Tiny ImageNet zip built here.
"""

from __future__ import annotations

import io
import json
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from support.helpers import REPO, run, shrunk_params, venv_env, write_params
from support.synthetic_prepared import write_prepared

from tinyclf.evaluate.run import run_evaluation
from tinyclf.params import params_from_dict
from tinyclf.train.run import run_training


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """A finished tiny pipeline: prepared data, model file, train (DVCLive) and evaluate directories."""
    root = tmp_path_factory.mktemp("done")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        prepared = write_prepared(root / "prepared", num_classes=4, train_per_class=8, val_per_class=2)
        tree = shrunk_params(train__model="test_resnet", train__crop="pad_crop", train__epochs=1)
        params = params_from_dict(tree)
        run_training(params, prepared, root / "model.pt", root / "train", root / "ck", progress_bar=False)
        run_evaluation(prepared, root / "model.pt", root / "evaluate", params.evaluate, progress=False)
    finally:
        torch.set_num_threads(threads)
    return {"root": root, "prepared": prepared, "model": root / "model.pt", "train": root / "train",
            "evaluate": root / "evaluate", "params": write_params(root / "params.yaml", tree)}


def stage(name: str, *args, params: Path, cwd: Path):
    return run([sys.executable, str(REPO / "stages" / f"{name}.py"), "--params", str(params), *map(str, args)],
               cwd, venv_env(REPO), check=False, timeout=180)


def assert_one_line_error(proc, prefix: str | None, *names: Path | str) -> str:
    """Exit 1, exactly one stderr line (starting `<prefix>:` when given) naming every one of `names`."""
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    if prefix is not None:
        assert lines[0].startswith(f"{prefix}: "), lines[0]
    for name in names:
        assert str(name) in lines[0], (name, lines[0])
    return lines[0]


def train_args(data: Path, out: Path) -> list:
    return ["--data", data, "--model-out", out / "model.pt", "--live", out / "live", "--checkpoints", out / "ck",
            "--no-progress"]


def evaluate_args(data: Path, model: Path, out: Path) -> list:
    return ["--data", data, "--model", model, "--out", out, "--no-progress"]


def summarize_args(done: dict, out: Path, **paths) -> list:
    p = {**done, **paths}
    return ["--data", p["prepared"], "--model", p["model"], "--train", p["train"], "--evaluate", p["evaluate"],
            "--out", out]


# ------------------------------------------------------------------------------ missing prepared data
def test_train_without_prepared_data(done, tmp_path):
    missing = tmp_path / "no-prepared"
    proc = stage("train", *train_args(missing, tmp_path / "out"), params=done["params"], cwd=tmp_path)
    line = assert_one_line_error(proc, "train", missing / "classes.json")
    assert "run the preprocess stage first" in line
    assert not (tmp_path / "out").exists()  # no model, DVCLive directory or checkpoint


def test_evaluate_without_prepared_data(done, tmp_path):
    missing = tmp_path / "no-prepared"
    proc = stage("evaluate", *evaluate_args(missing, done["model"], tmp_path / "out"), params=done["params"],
                 cwd=tmp_path)
    assert_one_line_error(proc, "evaluate", missing / "classes.json")
    assert not (tmp_path / "out").exists()


def test_summarize_without_prepared_data(done, tmp_path):
    missing = tmp_path / "no-prepared"
    proc = stage("summarize", *summarize_args(done, tmp_path / "out", prepared=missing), params=done["params"],
                 cwd=tmp_path)
    assert_one_line_error(proc, "summarize", missing / "classes.json")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------ missing model file
def test_evaluate_without_model_file(done, tmp_path):
    missing = tmp_path / "models" / "model.pt"
    proc = stage("evaluate", *evaluate_args(done["prepared"], missing, tmp_path / "out"), params=done["params"],
                 cwd=tmp_path)
    line = assert_one_line_error(proc, "evaluate", missing)
    assert "no such model file" in line
    assert not (tmp_path / "out").exists()


def test_summarize_without_model_file(done, tmp_path):
    missing = tmp_path / "models" / "model.pt"
    proc = stage("summarize", *summarize_args(done, tmp_path / "out", model=missing), params=done["params"],
                 cwd=tmp_path)
    line = assert_one_line_error(proc, "summarize", missing)
    assert "no such model file" in line
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------ run.json
def test_summarize_without_run_json_says_the_timing_is_not_recorded(done, tmp_path):
    """run.json (training timing and hardware) is optional: a train directory without it, e.g. from an
    older run, still gives a report, which says those facts were not recorded."""
    train = tmp_path / "train"
    shutil.copytree(done["train"], train)
    (train / "run.json").unlink()
    out = tmp_path / "out"
    proc = stage("summarize", *summarize_args(done, out, train=train), params=done["params"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = (out / "report.md").read_text()
    assert "| training run facts | not recorded (run.json missing in the train directory) |" in report
    # The rest of the timing section is still there (DVCLive's per-epoch timing, the evaluate speed).
    assert "training images/s per epoch (DVCLive)" in report and "evaluation images/s" in report
    # Nothing invented in place of run.json (test_summarize shows these rows when it is there).
    assert "training device" not in report and "processes (world size)" not in report


def test_summarize_with_malformed_run_json_names_it(done, tmp_path):
    train = tmp_path / "train"
    shutil.copytree(done["train"], train)
    (train / "run.json").write_text('{"device": "cpu", "world_size": ')  # cut off mid-write
    out = tmp_path / "out"
    proc = stage("summarize", *summarize_args(done, out, train=train), params=done["params"], cwd=tmp_path)
    line = assert_one_line_error(proc, "summarize", train / "run.json")
    assert "not valid JSON" in line
    assert not out.exists()


# ------------------------------------------------------------------------------ download / preprocess
def test_download_from_a_missing_archive_path(tmp_path):
    missing = tmp_path / "nowhere" / "tiny-imagenet-200.zip"
    params = write_params(tmp_path / "params.yaml", shrunk_params(download__source=str(missing)))
    out = tmp_path / "raw"
    proc = stage("download", "--out", out, "--no-progress", params=params, cwd=tmp_path)
    assert_one_line_error(proc, None, missing)
    assert not out.exists() or list(out.iterdir()) == []


def test_preprocess_without_downloaded_data(tmp_path):
    params = write_params(tmp_path / "params.yaml", shrunk_params())
    missing = tmp_path / "no-raw"
    out = tmp_path / "prepared"
    proc = stage("preprocess", "--raw", missing, "--out", out, "--no-progress", params=params, cwd=tmp_path)
    assert_one_line_error(proc, None, missing)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # no temp directory either


# ------------------------------------------------------------------------------ on_corrupt from params.yaml
ROOT = "tiny-imagenet-200/"
WNIDS = ["n0000001", "n0000002"]
TRAIN_PER_CLASS, VAL_PER_CLASS = 5, 2


def _jpeg(rgb: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), rgb).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def tiny_zip(path: Path, corrupt: str) -> Path:
    """A Tiny ImageNet zip in the official layout: 64x64 flat colours, member `corrupt` not an image."""
    members = {ROOT + "wnids.txt": "\n".join(WNIDS) + "\n",
               ROOT + "words.txt": "\n".join(f"{w}\tthing {i}" for i, w in enumerate(WNIDS))}
    for c, wnid in enumerate(WNIDS):
        for i in range(TRAIN_PER_CLASS):
            members[f"{ROOT}train/{wnid}/images/{wnid}_{i}.JPEG"] = _jpeg((60 + 100 * c, 10 * i, 200))
    annotations = []
    for i in range(VAL_PER_CLASS * len(WNIDS)):
        members[f"{ROOT}val/images/val_{i}.JPEG"] = _jpeg((60 + 100 * (i % 2), 100, 50))
        annotations.append(f"val_{i}.JPEG\t{WNIDS[i % 2]}\t0\t0\t63\t63")
    members[ROOT + "val/val_annotations.txt"] = "\n".join(annotations) + "\n"
    members[corrupt] = b"\xff\xd8\xff\xe0 not image data"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_on_corrupt_skip_from_params_yaml_leaves_the_member_out_and_counts_it(tmp_path):
    bad = f"{ROOT}train/n0000002/images/n0000002_3.JPEG"
    raw = tmp_path / "raw"
    raw.mkdir()
    tiny_zip(raw / "tiny-imagenet-200.zip", bad)
    out = tmp_path / "prepared"
    (tmp_path / "corrections.csv").write_text("source,action,class\n")  # data.corrections, from the working directory

    # The committed default (fail) stops, naming the member and the key that would skip it.
    strict = write_params(tmp_path / "strict.yaml", shrunk_params(data__image_size=16))
    assert yaml_value(strict, "preprocess", "on_corrupt") == "fail"
    proc = stage("preprocess", "--raw", raw, "--out", out, "--no-progress", params=strict, cwd=tmp_path)
    assert_one_line_error(proc, None, bad, "preprocess.on_corrupt: skip")
    assert not out.exists()

    lenient = write_params(tmp_path / "lenient.yaml", shrunk_params(data__image_size=16, preprocess__on_corrupt="skip"))
    proc = stage("preprocess", "--raw", raw, "--out", out, "--no-progress", params=lenient, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "skipped 1" in proc.stdout
    assert f"skipping {bad}" in proc.stderr
    stats = json.loads((out / "stats.json").read_text())
    assert stats["splits"]["train"]["skipped"] == [bad]
    assert stats["splits"]["val"]["skipped"] == []
    assert stats["splits"]["train"]["count"] == 2 * TRAIN_PER_CLASS - 1
    assert stats["splits"]["train"]["per_class"] == [TRAIN_PER_CLASS, TRAIN_PER_CLASS - 1]
    labels = np.load(out / "train" / "labels.npy")
    images = np.load(out / "train" / "images.npy")
    assert labels.tolist() == [0] * TRAIN_PER_CLASS + [1] * (TRAIN_PER_CLASS - 1)
    assert images.shape == (2 * TRAIN_PER_CLASS - 1, 16, 16, 3)
    # The rows after the skipped one moved up: n0000002_4 (green 40) sits where _3 would have.
    assert abs(int(images[TRAIN_PER_CLASS + 3, 8, 8, 1]) - 40) <= 3
    assert np.load(out / "val" / "labels.npy").tolist() == [0, 1, 0, 1]


def yaml_value(path: Path, *keys: str):
    import yaml

    node = yaml.safe_load(path.read_text())
    for key in keys:
        node = node[key]
    return node
