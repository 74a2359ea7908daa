"""The audit stage on a small learnable dataset with planted faults: flipped labels, copies of train
images placed in val (resized, recompressed, cropped) and a frame of noise among the photos.
The model is a real one (timm's test_resnet) trained here for a few epochs; the stage runs for real.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from support.helpers import REPO, load_stage, shrunk_params, venv_env, write_params
from support.synthetic_prepared import _images, write_prepared_arrays

from tinyclf.data import arrays
from tinyclf.params import params_from_dict
from tinyclf.train.run import run_training

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CLASSES, TRAIN_PER_CLASS, VAL_PER_CLASS, SIZE = 4, 40, 10, 32
FLIPPED = (3, 17, 40, 77, 101, 140)  # train rows whose label is planted wrong
COPIED = (5, 60, 123)  # train rows copied into val: resized, recompressed, cropped


def _photos(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The class's colour and stripes (support.synthetic_prepared) over a scene of each image's own: a
    smooth random field, so that two images of a class are no closer than two photos of one."""
    pattern = _images(labels, SIZE, CLASSES, rng).astype(np.float32)
    scenes = np.stack([cv2.resize(rng.uniform(0, 255, (4, 4, 3)).astype(np.float32), (SIZE, SIZE),
                                  interpolation=cv2.INTER_CUBIC) for _ in labels])
    return np.clip(0.65 * pattern + 0.35 * scenes, 0, 255).astype(np.uint8)


def _copy(image: np.ndarray, how: int) -> np.ndarray:
    if how == 0:  # down to 0.6x and back
        small = cv2.resize(image, (int(SIZE * 0.6),) * 2, interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
    if how == 1:  # JPEG at quality 50
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 50])
        return cv2.imdecode(jpeg, cv2.IMREAD_UNCHANGED)
    return cv2.resize(image[1:, :SIZE - 1], (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)  # a pixel cropped off two sides


def planted_data(root: Path) -> dict:
    """A prepared dataset (docs/architecture.md format) with the faults planted, and what was planted."""
    rng = np.random.default_rng(0)
    labels = {split: np.repeat(np.arange(CLASSES), n) for split, n in (("train", TRAIN_PER_CLASS), ("val", VAL_PER_CLASS))}
    images = {split: _photos(labels[split], rng) for split in labels}
    true_train = labels["train"].copy()
    for row in FLIPPED:
        labels["train"][row] = (labels["train"][row] + 1 + row % (CLASSES - 1)) % CLASSES
    images["train"][7] = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    copies = np.stack([_copy(images["train"][row], how) for how, row in enumerate(COPIED)])
    images["val"] = np.concatenate([images["val"], copies])
    labels["val"] = np.concatenate([labels["val"], true_train[list(COPIED)]])
    classes = [{"index": i, "id": f"c{i}", "name": f"class {i}"} for i in range(CLASSES)]
    write_prepared_arrays(root, {s: (images[s], labels[s]) for s in images}, classes, generated=True)
    sources = {s: [f"{s}/img_{i:03d}.png" for i in range(len(labels[s]))] for s in labels}
    for split, names in sources.items():
        arrays.write_sources(root, split, names)
    return {"sources": sources, "true_train": true_train,
            "copies": {sources["val"][CLASSES * VAL_PER_CLASS + i]: sources["train"][row] for i, row in enumerate(COPIED)},
            "noise": sources["train"][7]}


def audit_params(path: Path, **overrides) -> Path:
    return write_params(path, shrunk_params(audit__enabled=True, audit__workers=0, **overrides))


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit")
    planted = planted_data(root / "prepared")
    tree = shrunk_params(train__model="test_resnet", train__epochs=8, train__crop="pad_crop", train__lr=0.1,
                         train__batch_size=32)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        run_training(params_from_dict(tree), root / "prepared", root / "model.pt", root / "live", root / "ck",
                     progress_bar=False)
    params = audit_params(root / "params.yaml")
    rc = load_stage("audit").main(["--data", str(root / "prepared"), "--model", str(root / "model.pt"),
                                   "--out", str(root / "audit"), "--params", str(params), "--no-progress"])
    assert rc == 0
    rows = list(csv.DictReader((root / "audit" / "issues.csv").open()))
    return root, planted, rows, json.loads((root / "audit" / "summary.json").read_text())


def test_planted_flips_come_out_on_top_with_their_true_class_suggested(audited):
    _, planted, rows, summary = audited
    flipped = {planted["sources"]["train"][row]: f"c{planted['true_train'][row]}" for row in FLIPPED}
    # The noise frame carries a label too, and no class fits it: it may rank among the flips.
    label_rows = [r for r in rows if r["kind"] == "label" and r["split"] == "train" and r["source"] != planted["noise"]]
    top = label_rows[:len(FLIPPED)]
    hits = [r for r in top if r["source"] in flipped]
    # Precision at k (k = the flips) at least 4/6, where chance is 6/160; cleanlab lists no more than it
    # finds, so a short list counts as misses.
    assert len(hits) >= 4, (summary["held_out_accuracy"], top)
    assert all(r["suggested_label"] == flipped[r["source"]] for r in hits), hits
    assert summary["counts"]["label"] == len([r for r in rows if r["kind"] == "label"])


def test_label_scores_rank_every_image_lowest_quality_first(audited):
    root, planted, rows, summary = audited
    scores = list(csv.DictReader((root / "audit" / "label_scores.csv").open()))
    assert len(scores) == summary["images"]["total"]
    quality = [float(r["label_quality"]) for r in scores]
    assert quality == sorted(quality)
    assert {r["source"] for r in scores if r["flagged"] == "1"} == {r["source"] for r in rows if r["kind"] == "label"}
    # Ranked, the flips lead: of the train images, the 6 of lowest quality hold at least 5 of the 6 flips.
    flipped = {planted["sources"]["train"][row] for row in FLIPPED}
    train = [r["source"] for r in scores if r["split"] == "train" and r["source"] != planted["noise"]]
    assert len(flipped & set(train[:len(FLIPPED)])) >= 5, train[:len(FLIPPED)]


def test_each_copy_in_val_is_paired_with_its_train_original_and_nothing_else_is(audited):
    _, planted, rows, summary = audited
    pairs = {(r["source"], r["duplicate_of"]) for r in rows if r["kind"] == "duplicate"}
    assert pairs == set(planted["copies"].items())
    assert summary["duplicates"]["pairs"] == {"train-val": len(COPIED)}
    val = summary["held_out_accuracy"]["val"]
    assert val["with_train_copy"] == len(COPIED) and val["images"] == CLASSES * VAL_PER_CLASS + len(COPIED)


def test_the_noise_frame_is_the_top_outlier(audited):
    _, planted, rows, _ = audited
    outliers = [r["source"] for r in rows if r["kind"] == "outlier"]
    assert outliers[:1] == [planted["noise"]], outliers


def test_contact_sheets_and_a_reproducible_summary(audited, tmp_path):
    root, _, rows, summary = audited
    for kind in ("label", "duplicate", "outlier"):
        assert (root / "audit" / "sheets" / f"{kind}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = tmp_path / "again"
    rc = load_stage("audit").main(["--data", str(root / "prepared"), "--model", str(root / "model.pt"), "--out",
                                   str(again), "--params", str(audit_params(tmp_path / "p.yaml")), "--no-progress"])
    assert rc == 0
    for name in ("issues.csv", "summary.json"):
        assert (again / name).read_bytes() == (root / "audit" / name).read_bytes(), name


def accept(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tinyclf.commands.cli", "audit", "accept", *map(str, args)],
                          cwd=cwd, env=venv_env(REPO), capture_output=True, text=True, timeout=60)


def test_accept_prints_corrections_lines_and_skips_what_is_decided(audited, tmp_path):
    root, planted, rows, _ = audited
    issues = root / "audit" / "issues.csv"
    labels = accept(issues, "--kind", "label", "--top", 2, cwd=tmp_path)
    assert labels.returncode == 0, labels.stderr
    expected = [[r["source"], "relabel", r["suggested_label"]] for r in rows if r["kind"] == "label"][:2]
    assert list(csv.reader(io.StringIO(labels.stdout))) == expected
    # A duplicate across train and val drops the train copy: val stays the same set of images.
    (tmp_path / "corrections.csv").write_text("source,action,class\n" + f"{planted['sources']['train'][5]},drop\n")
    dups = accept(issues, "--kind", "duplicate", cwd=tmp_path)
    assert sorted(dups.stdout.splitlines()) == sorted(f"{train},drop" for train in planted["copies"].values()
                                                      if train != planted["sources"]["train"][5])
    assert "skipped 1 already in corrections.csv" in dups.stderr
    bad = accept(tmp_path / "corrections.csv", "--kind", "label", cwd=tmp_path)
    assert bad.returncode == 1 and bad.stderr.strip().endswith("not an audit issues file (no column 'duplicate_of'; "
                                                                "the audit stage writes results/audit/issues.csv)")


def test_a_model_for_other_classes_fails_in_one_line_and_writes_nothing(audited, tmp_path, capsys):
    from support.stage_outputs import ModelFile, make_model_file

    root, _, _, _ = audited
    other = make_model_file(tmp_path / "other.pt", ModelFile(num_classes=CLASSES + 1, size=SIZE))
    rc = load_stage("audit").main(["--data", str(root / "prepared"), "--model", str(other), "--out",
                                   str(tmp_path / "out"), "--params", str(audit_params(tmp_path / "p.yaml")),
                                   "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and err[-1] == f"audit: model has {CLASSES + 1} classes but the prepared data has {CLASSES}"
    assert not (tmp_path / "out").exists()


def test_an_audit_that_is_off_says_why_without_loading_torch(tmp_path):
    params = write_params(tmp_path / "params.yaml", shrunk_params())  # tiny-imagenet: auto means off
    code = ("import sys, runpy; sys.argv = ['audit.py', '--data', 'none', '--model', 'none', '--out', 'out', "
            f"'--params', {str(params)!r}]; "
            f"exec(open({str(REPO / 'stages' / 'audit.py')!r}).read().replace('sys.exit(main())', 'main()')); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=venv_env(REPO), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "audit: off (audit.enabled is auto, which audits own photo folders only" in proc.stdout
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["enabled"] is False
    assert (tmp_path / "out" / "issues.csv").read_text().startswith("kind,split,source,score,")
    assert [p.name for p in (tmp_path / "out" / "sheets").iterdir()] == ["README.txt"]
