"""The `tinyclf` command a user runs around the pipeline: check-params, info, predict."""

from __future__ import annotations

import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from support.helpers import REPO, real_params, write_params
from support.stage_outputs import ModelFile, make_model_file

from tinyclf.model.file import load_model_file
from tinyclf.params import ParamsError, params_from_dict


def tinyclf(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tinyclf.commands.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd or REPO, timeout=120)


def test_check_params_accepts_the_committed_file_and_names_a_bad_key(tmp_path):
    ok = tinyclf("check-params", REPO / "params.yaml")
    assert ok.returncode == 0 and "ok" in ok.stdout
    tree = real_params()
    tree["train"]["epochz"] = 3
    bad = tinyclf("check-params", write_params(tmp_path / "params.yaml", tree))
    assert bad.returncode == 1
    assert "unknown key 'train.epochz' (did you mean 'train.epochs'?)" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_check_params_suggests_the_key_by_what_people_type_then_by_spelling(tmp_path):
    """Names from other tools (timm, Ultralytics, MMPretrain, …) map to ours, a misspelt one too
    (`lerning_rate` is close to `learning_rate`, which is train.lr, while by spelling alone it is
    closest to train.decay_rate); a plain typo gets the closest of our keys; a key like none gets none."""
    tree = real_params()
    tree["train"]["lerning_rate"] = 0.1
    out = tinyclf("check-params", write_params(tmp_path / "params.yaml", tree))
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "unknown key 'train.lerning_rate' (did you mean 'train.lr'?)" in out.stderr
    for typed, meant in [("num_epochs", "train.epochs"), ("bs", "train.batch_size"), ("learning-rate", "train.lr"),
                         ("max_epochs", "train.epochs"), ("optimizer", "train.opt"), ("backbone", "train.model"),
                         ("amp", "train.precision"), ("image_size", "data.image_size"), ("imgsz", "data.image_size"),
                         ("dataset", "data.dataset"), ("wieght_decay", "train.weight_decay"),
                         ("epochz", "train.epochs")]:
        tree = real_params()
        tree["train"][typed] = 1
        with pytest.raises(ParamsError, match=re.escape(f"unknown key 'train.{typed}' (did you mean '{meant}'?)")):
            params_from_dict(tree, "params.yaml")
    tree = real_params()
    tree["evaluate"]["num_workers"] = 1  # an alias names the key of the section it was typed in
    with pytest.raises(ParamsError, match=re.escape("(did you mean 'evaluate.workers'?)")):
        params_from_dict(tree, "params.yaml")
    tree = real_params()
    tree["train"]["frobnicate"] = 1
    with pytest.raises(ParamsError, match=r"unknown key 'train\.frobnicate' \(known: model, epochs,") as err:
        params_from_dict(tree, "params.yaml")
    assert "did you mean" not in str(err.value)


def test_info_and_predict_use_the_model_file(tmp_path):
    model_path = make_model_file(tmp_path / "model.pt", ModelFile(num_classes=4, size=16))
    info = tinyclf("info", model_path)
    assert info.returncode == 0, info.stderr
    assert "test_resnet" in info.stdout and "GENERATED" in info.stdout and "4 classes, 16x16 px" in info.stdout

    image = np.random.default_rng(0).integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), image)
    out = tinyclf("predict", model_path, tmp_path / "a.png")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()[1:]
    assert len(lines) == 4  # top-min(5, classes)
    # the printed top class is the model's own top class for that image (BGR file -> RGB, normalized)
    model, meta = load_model_file(model_path)
    # cv2.imwrite took `image` as BGR, so the RGB the command sees is `image` with channels reversed
    x = torch.from_numpy(image[:, :, ::-1].copy()).permute(2, 0, 1)[None].float() / 255
    mean, std = torch.tensor(meta["mean"]).view(1, 3, 1, 1), torch.tensor(meta["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        top = int(model((x - mean) / std).argmax())
    assert meta["classes"][top]["name"] in lines[0]


def test_min_confidence_answers_unknown_below_it(tmp_path):
    """`tinyclf predict --min-confidence P`: each result answers its top-1 class, or "unknown" when the
    top-1 probability is below P (json `answer`, a csv column, a table line)."""
    import io
    import json

    from tinyclf.serve.predict_files import predict_files
    from tinyclf.serve.predictor import load_predictor

    predictor = load_predictor(make_model_file(tmp_path / "model.pt", ModelFile(num_classes=4, size=16)))
    for i in range(3):
        image = np.random.default_rng(i).integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
        cv2.imwrite(str(tmp_path / f"{i}.png"), image)
    files = [str(tmp_path / f"{i}.png") for i in range(3)]
    out = io.StringIO()
    assert predict_files(predictor, files, fmt="json", streams=(out, sys.stderr)) == 0
    plain = json.loads(out.getvalue())
    assert all("answer" not in item for item in plain)
    top1 = sorted(item["top_k"][0]["probability"] for item in plain)
    between = (top1[0] + top1[-1]) / 2  # some answers above it, some below
    assert top1[0] < between < top1[-1]
    out = io.StringIO()
    assert predict_files(predictor, files, fmt="json", min_confidence=between, streams=(out, sys.stderr)) == 0
    for item in json.loads(out.getvalue()):
        expected = item["top_k"][0]["id"] if item["top_k"][0]["probability"] >= between else "unknown"
        assert item["answer"] == expected
    above_all = (top1[-1] + 1) / 2
    out = io.StringIO()
    predict_files(predictor, files, fmt="table", min_confidence=above_all, streams=(out, sys.stderr))
    assert out.getvalue().count("  unknown: top-1 ") == 3 and f"below --min-confidence {above_all:g}" in out.getvalue()
    out = io.StringIO()
    predict_files(predictor, files[:1], fmt="csv", min_confidence=above_all, streams=(out, sys.stderr))
    rows = out.getvalue().splitlines()
    assert rows[0].endswith(",answer") and all(row.endswith(",unknown") for row in rows[1:])


def test_predict_names_an_unreadable_image(tmp_path):
    model_path = make_model_file(tmp_path / "model.pt")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    out = tinyclf("predict", model_path, tmp_path / "broken.jpg")
    assert out.returncode == 1
    assert f"tinyclf predict: {tmp_path / 'broken.jpg'}: not a decodable image" in out.stderr


def test_info_on_a_missing_model_is_one_line(tmp_path):
    out = tinyclf("info", tmp_path / "nope.pt")
    assert out.returncode == 1
    assert "nope.pt" in out.stderr and "Traceback" not in out.stderr


def test_check_params_reads_the_corrections_file(tmp_path):
    fixes = tmp_path / "fixes.csv"
    fixes.write_text("source,action,class\ntrain/cat/1.jpg,rename,dog\n")
    tree = real_params()
    tree["data"]["corrections"] = str(fixes)
    out = tinyclf("check-params", write_params(tmp_path / "params.yaml", tree))
    assert out.returncode == 1 and out.stdout == ""
    line = out.stderr.strip().splitlines()
    assert len(line) == 1 and line[0].startswith(
        f"tinyclf check-params: {tmp_path / 'params.yaml'}: data.corrections: {fixes}: line 2: "), line


def test_check_params_refuses_drop_path_for_a_model_without_it(tmp_path):
    tree = real_params()
    tree["train"].update(model="vgg11", drop_path=0.1)
    out = tinyclf("check-params", write_params(tmp_path / "params.yaml", tree))
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.strip().splitlines() == [
        f"tinyclf check-params: {tmp_path / 'params.yaml'}: train.drop_path=0.1: vgg11 has no stochastic depth "
        "(timm builds it without a drop_path_rate); set train.drop_path=0"]
    # What check-params runs on a setting that works (in this process: a second command costs 4 s).
    from tinyclf.train.setup import check_finetune_model

    tree["train"].update(model="resnet18", freeze="backbone", freeze_epochs=2, init="w.pt")
    check_finetune_model(params_from_dict(tree).train)


def test_check_params_refuses_an_unknown_model_with_close_matches(tmp_path):
    tree = real_params()
    tree["train"]["model"] = "resnet9000"
    out = tinyclf("check-params", write_params(tmp_path / "params.yaml", tree))
    assert out.returncode == 1 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "train.model: unknown model 'resnet9000'" in lines[0]
    assert "did you mean resnet200" in lines[0]  # from timm's registry
    tree["train"]["model"] = "convnext_nano"  # any timm architecture is fine
    assert tinyclf("check-params", write_params(tmp_path / "params.yaml", tree)).returncode == 0


def test_every_command_line_mistake_is_one_line(tmp_path):
    cases = [
        (["frobnicate"], "tinyclf: argument command: invalid choice: 'frobnicate'"),
        (["predict"], "tinyclf predict: the following arguments are required: model, inputs"),
        (["remote-check", "--bogus"], "tinyclf remote-check: unrecognized arguments: --bogus"),
        (["predict", "m.pt", "a.jpg", "--min-confidence", "1.5"],
         "tinyclf predict: argument --min-confidence: must be between 0 and 1 (exclusive), got 1.5"),
    ]
    for args, expected in cases:
        out = tinyclf(*args, cwd=tmp_path)
        assert out.returncode == 2, args
        assert out.stderr.strip().splitlines() == [out.stderr.strip()] and out.stderr.startswith(expected), out.stderr
        assert "--help" in out.stderr
    stage = subprocess.run([sys.executable, str(REPO / "stages" / "evaluate.py"), "--data", "x"], capture_output=True,
                           text=True, timeout=60)
    assert stage.returncode == 2 and len(stage.stderr.strip().splitlines()) == 1
    assert "the following arguments are required: --model, --out" in stage.stderr
