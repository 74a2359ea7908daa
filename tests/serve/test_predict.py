"""`tinyclf predict` as a user runs it: files, folders and globs; table, JSON and CSV; the PyTorch
and ONNX backends agree; a bad file is one line naming it while the others are still predicted.

Real components: a model trained and exported by the real code (tests/support/served_model.py), real JPEGs
from the Tiny ImageNet subset (generated ones when it is absent), real bad files (text, empty,
truncated JPEG, a PNG whose header promises 100 megapixels, tests/support/bombs.py).
"""

from __future__ import annotations

import csv
import io
import json
import sys
import zipfile

import cv2
import numpy as np
import pytest
import torch
from support.bombs import png_bomb
from support.helpers import REAL_SUBSET, REPO, run, venv_env
from support.served_model import train_and_export

from tinyclf.commands import cli
from tinyclf.data.arrays import load_split
from tinyclf.data.images import MAX_IMAGE_BYTES

pytestmark = pytest.mark.usefixtures("one_torch_thread")
PHOTOS = 12


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("predict")
    paths = train_and_export(root)
    photos = root / "photos"
    (photos / "more").mkdir(parents=True)
    for i, data in enumerate(_photo_bytes(paths["prepared"])):
        (photos / ("more" if i % 3 == 0 else ".") / f"photo_{i:02d}.jpg").write_bytes(data)
    (photos / "notes.txt").write_text("a folder's other files are not images and are left alone\n")
    return {**paths, "photos": photos}


def _photo_bytes(prepared) -> list[bytes]:
    """Real 64x64 Tiny ImageNet JPEGs (squashed to the model's 32 px, as preprocess would), or generated ones."""
    if REAL_SUBSET.exists():
        with zipfile.ZipFile(REAL_SUBSET) as z:
            return [z.read(f"tiny-imagenet-200/val/images/val_{i}.JPEG") for i in range(PHOTOS)]
    images, _ = load_split(prepared, "val")
    return [cv2.imencode(".jpg", np.ascontiguousarray(img[..., ::-1]))[1].tobytes() for img in images[:PHOTOS]]


def predict(capsys, *args) -> tuple[int, str, str]:
    rc = cli.main(["predict", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


def test_a_folder_is_searched_recursively_in_order_as_json(served, capsys):
    rc, out, err = predict(capsys, served["model"], served["photos"], "--format", "json")
    assert rc == 0 and err == ""
    results = json.loads(out)
    names = [r["path"] for r in results]
    assert len(names) == PHOTOS and names == sorted(names, key=lambda p: ("/more/" in p, p))
    for r in results:
        probs = [c["probability"] for c in r["top_k"]]
        assert len(probs) == 5 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0 + 1e-5
        assert set(r["top_k"][0]) == {"index", "id", "name", "probability"}


def test_torch_and_onnx_backends_give_the_same_top5(served, capsys):
    rows = {}
    for backend in ("torch", "onnx"):
        rc, out, _ = predict(capsys, served["model"], served["photos"], "--backend", backend, "--format", "csv")
        assert rc == 0
        rows[backend] = list(csv.DictReader(io.StringIO(out)))
    assert len(rows["torch"]) == PHOTOS * 5
    assert [(r["path"], r["index"]) for r in rows["torch"]] == [(r["path"], r["index"]) for r in rows["onnx"]]
    diff = max(abs(float(a["probability"]) - float(b["probability"])) for a, b in zip(rows["torch"], rows["onnx"]))
    assert diff <= 1e-5
    # The .onnx file alone (what the Space runs) gives the same answer as the model file told to use onnx.
    _, out, _ = predict(capsys, served["onnx"], served["photos"], "--format", "csv")
    assert list(csv.DictReader(io.StringIO(out))) == rows["onnx"]


def test_globs_file_lists_and_the_table(served, capsys):
    photos = served["photos"]
    rc, out, _ = predict(capsys, served["onnx"], photos / "photo_01.jpg", str(photos / "**" / "photo_0[36].jpg"),
                         "--top-k", "2", "--batch-size", "2")
    assert rc == 0
    blocks = out.strip().split("\n")
    assert blocks[0::3] == [str(photos / "photo_01.jpg"), str(photos / "more" / "photo_03.jpg"),
                            str(photos / "more" / "photo_06.jpg")]
    for line in blocks[1::3] + blocks[2::3]:  # "  12.34%  generated class 3 (g0000003)"
        percent, name = line.split("%  ")
        assert 0 <= float(percent) <= 100 and name.startswith("generated class ") and name.endswith(")")


def test_top_k_is_clamped_to_the_classes_and_zero_is_refused(served, capsys):
    rc, out, err = predict(capsys, served["model"], served["photos"] / "photo_01.jpg", "--top-k", "50",
                           "--format", "json")
    assert rc == 0 and len(json.loads(out)[0]["top_k"]) == 6
    assert err.strip() == "tinyclf predict: --top-k 50 is more than the model's 6 classes; showing all 6"
    with pytest.raises(SystemExit) as exc:
        cli.main(["predict", str(served["model"]), "x.jpg", "--top-k", "0"])
    assert exc.value.code == 2 and "--top-k: must be at least 1, got 0" in capsys.readouterr().err


def test_bad_files_are_one_line_each_and_the_rest_still_predicted(served, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "text.jpg").write_text("not an image at all\n")
    (bad / "zero.png").write_bytes(b"")
    good = (served["photos"] / "photo_01.jpg").read_bytes()
    (bad / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (bad / "bomb.png").write_bytes(png_bomb(10000, 10000))  # 100 megapixels promised in ~100 KB
    with (bad / "huge.jpg").open("wb") as fh:  # sparse: takes no disk, refused by its size alone
        fh.truncate(MAX_IMAGE_BYTES + 1)
    (bad / "fine.jpg").write_bytes(good)
    proc = run([sys.executable, "-m", "tinyclf.commands.cli", "predict", str(served["model"]), str(bad),
                str(tmp_path / "missing.jpg"), "--format", "csv"], REPO, venv_env(REPO), check=False)
    assert proc.returncode == 1
    assert {r["path"] for r in csv.DictReader(io.StringIO(proc.stdout))} == {str(bad / "fine.jpg")}
    lines = proc.stderr.strip().splitlines()
    expected = {"text.jpg": "not a decodable image", "zero.png": "empty file",
                "truncated.jpg": "truncated JPEG", "bomb.png": "10000x10000 pixels, over the limit",
                "huge.jpg": "over the limit of 67,108,864"}
    for name, reason in expected.items():
        (line,) = [line for line in lines if f"{bad / name}:" in line]
        assert line.startswith(f"tinyclf predict: {bad / name}: ") and reason in line, line
    assert f"tinyclf predict: {tmp_path / 'missing.jpg'}: no such file or folder" in lines
    assert lines[-1] == "tinyclf predict: 6 of 7 inputs could not be predicted"
    assert len(lines) == 7


def test_a_missing_model_or_export_is_one_line(served, tmp_path, capsys):
    rc, _, err = predict(capsys, tmp_path / "model.pt", served["photos"])
    assert rc == 1 and err.strip() == f"tinyclf predict: {tmp_path / 'model.pt'}: no such model file"
    (tmp_path / "model.pt").write_bytes(served["model"].read_bytes())
    rc, _, err = predict(capsys, tmp_path / "model.pt", served["photos"], "--backend", "onnx")
    assert rc == 1
    assert err.strip() == (f"tinyclf predict: {tmp_path / 'model.onnx'}: no such model file "
                           "(the export stage writes it: dvc repro export)")
