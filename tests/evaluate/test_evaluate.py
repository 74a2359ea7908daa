"""The evaluate stage: exact metrics recountable from its own CSV, TTA, clear errors, 200-class plots.

Builds a prepared directory (numpy + json, per docs/architecture.md) and a real small model file
(timm's tiny `test_resnet` via create_model/save_model_file), then runs the real stage.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from support.helpers import load_stage, params_file, png_size, shrunk_params
from support.stage_outputs import ModelFile, make_model_file, make_prepared

from tinyclf.evaluate.metrics import expected_calibration_error
from tinyclf.evaluate.run import run_evaluation
from tinyclf.model.file import load_model_file
from tinyclf.params import params_from_dict

torch.set_num_threads(1)

PLOTS = ("per_class_accuracy.png", "confusion_matrix.png", "confused_pairs.png", "misclassified.png")
OUTPUTS = ("metrics.json", "speed.json", "predictions.csv", "per_class.json")


def read_predictions(path: Path) -> list[dict]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    prepared = make_prepared(root / "prepared")
    model = make_model_file(root / "model.pt")
    params = params_file(root)
    return root, prepared, model, params


@pytest.fixture(scope="module")
def evaluated(setup):
    root, prepared, model, params = setup
    out = root / "evaluate"
    rc = load_stage("evaluate").main(["--data", str(prepared), "--model", str(model), "--out", str(out),
                                      "--params", str(params), "--no-progress"])
    assert rc == 0
    return out


# ------------------------------------------------------------------------------ tests
def test_writes_every_output(evaluated):
    for name in OUTPUTS:
        assert (evaluated / name).is_file(), name
    for name in PLOTS:
        png_size(evaluated / "plots" / name)
    # metrics.json holds what runs are compared by, in the order `dvc exp show` shows it; the facts of
    # the run (what was evaluated) are in per_class.json.
    metrics = json.loads((evaluated / "metrics.json").read_text())
    assert list(metrics) == ["top1", "top5", "mean_class_accuracy", "loss", "ece", "macro_f1"]
    evaluated_facts = json.loads((evaluated / "per_class.json").read_text())
    assert evaluated_facts["generated"] is True and evaluated_facts["tta_flip"] is False
    speed = json.loads((evaluated / "speed.json").read_text())
    assert speed["images_per_s"] > 0 and speed["seconds"] > 0 and speed["device"].startswith("cpu")


def test_every_val_image_exactly_once(setup, evaluated):
    _, prepared, _, _ = setup
    rows = read_predictions(evaluated / "predictions.csv")
    labels = np.load(prepared / "val" / "labels.npy")
    assert [int(r["index"]) for r in rows] == list(range(len(labels)))
    assert [int(r["true"]) for r in rows] == labels.tolist()


def test_metrics_equal_a_recount_from_predictions_csv(evaluated):
    rows = read_predictions(evaluated / "predictions.csv")
    metrics = json.loads((evaluated / "metrics.json").read_text())
    true = np.array([int(r["true"]) for r in rows])
    pred = np.array([int(r["predicted"]) for r in rows])
    top5 = [list(map(int, r["top5"].split())) for r in rows]
    assert all(t[0] == p for t, p in zip(top5, pred))
    assert all(len(t) == 4 for t in top5)  # k = min(5, classes) with 4 classes
    # The recount must not be trivial, or it could not catch a wrong metric.
    assert 0 < (pred == true).mean() < 1
    assert json.loads((evaluated / "per_class.json").read_text())["num_images"] == len(rows)
    assert metrics["top1"] == round(float((pred == true).mean()), 6)
    assert metrics["top5"] == round(float(np.mean([t in k for t, k in zip(true, top5)])), 6)
    per_class = [(pred[true == c] == c).mean() for c in np.unique(true)]
    assert metrics["mean_class_accuracy"] == round(float(np.mean(per_class)), 6)
    confidence = np.array([float(r["confidence"]) for r in rows])
    assert metrics["ece"] == pytest.approx(expected_calibration_error(confidence, (pred == true) * 1.0, 15), abs=1e-5)
    per_class_json = json.loads((evaluated / "per_class.json").read_text())
    assert [c["correct"] for c in per_class_json["classes"]] == [int(((pred == c) & (true == c)).sum()) for c in range(4)]


def test_loss_and_confidence_match_the_model(setup, evaluated):
    """Recompute the softmax of a few images directly with the model: the stage's path is the plain one."""
    _, prepared, model_path, _ = setup
    model, meta = load_model_file(model_path)
    images = np.load(prepared / "val" / "images.npy")
    labels = np.load(prepared / "val" / "labels.npy")
    x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - torch.tensor(meta["mean"]).view(1, 3, 1, 1)) \
        / torch.tensor(meta["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        logp = torch.log_softmax(model(x), 1).numpy()
    rows = read_predictions(evaluated / "predictions.csv")
    assert [float(r["confidence"]) for r in rows] == pytest.approx(np.exp(logp.max(1)).tolist(), abs=2e-6)
    loss = json.loads((evaluated / "metrics.json").read_text())["loss"]
    assert loss == pytest.approx(float(-logp[np.arange(len(labels)), labels].mean()), abs=2e-6)


def test_identical_runs_give_identical_bytes(setup, evaluated, tmp_path):
    _, prepared, model, params = setup
    out = tmp_path / "again"
    assert load_stage("evaluate").main(["--data", str(prepared), "--model", str(model), "--out", str(out),
                                        "--params", str(params), "--no-progress"]) == 0
    for name in ("metrics.json", "predictions.csv", "per_class.json") + tuple(f"plots/{p}" for p in PLOTS):
        assert (out / name).read_bytes() == (evaluated / name).read_bytes(), name


def test_tta_flip_averages_image_and_mirror(setup, evaluated, tmp_path):
    _, prepared, model_path, _ = setup
    out = tmp_path / "tta"
    params = params_file(tmp_path, evaluate__tta_flip=True)
    assert load_stage("evaluate").main(["--data", str(prepared), "--model", str(model_path), "--out", str(out),
                                        "--params", str(params), "--no-progress"]) == 0
    assert json.loads((out / "per_class.json").read_text())["tta_flip"] is True
    plain = read_predictions(evaluated / "predictions.csv")
    tta = read_predictions(out / "predictions.csv")
    assert [r["confidence"] for r in plain] != [r["confidence"] for r in tta]
    # The TTA confidence is the averaged softmax of the image and its mirror, recomputed here.
    model, meta = load_model_file(model_path)
    images = torch.from_numpy(np.load(prepared / "val" / "images.npy")[:3]).permute(0, 3, 1, 2).float()
    x = (images / 255 - torch.tensor(meta["mean"]).view(1, 3, 1, 1)) / torch.tensor(meta["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        probs = (torch.softmax(model(x), 1) + torch.softmax(model(torch.flip(x, dims=[3])), 1)) / 2
    for i in range(3):
        assert int(tta[i]["predicted"]) == int(probs[i].argmax())
        assert float(tta[i]["confidence"]) == pytest.approx(float(probs[i].max()), abs=2e-6)


def _run_expecting_error(capsys, prepared, model, out, params) -> str:
    rc = load_stage("evaluate").main(["--data", str(prepared), "--model", str(model), "--out", str(out),
                                      "--params", str(params), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 1
    assert not out.exists(), "a failed evaluation must not leave outputs"
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_truncated_model_file_is_a_clear_error(setup, tmp_path, capsys):
    _, prepared, model, params = setup
    bad = tmp_path / "model.pt"
    bad.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    err = _run_expecting_error(capsys, prepared, bad, tmp_path / "out", params)
    assert str(bad) in err and "corrupt" in err


def test_missing_model_file_is_a_clear_error(setup, tmp_path, capsys):
    _, prepared, _, params = setup
    err = _run_expecting_error(capsys, prepared, tmp_path / "nope.pt", tmp_path / "out", params)
    assert "nope.pt" in err and "no such model file" in err


@pytest.mark.parametrize("kind", ["classes", "image_size", "dataset"])
def test_mismatched_model_is_a_clear_error(setup, tmp_path, capsys, kind):
    _, prepared, _, params = setup
    args = {"classes": {"num_classes": 5}, "image_size": {"size": 24}, "dataset": {"dataset": "cifar10"}}[kind]
    model = make_model_file(tmp_path / "other.pt", ModelFile(**args))
    err = _run_expecting_error(capsys, prepared, model, tmp_path / "out", params)
    expected = {"classes": "model has 5 classes but the prepared data has 4",
                "image_size": "model expects 24x24 images but the prepared val images are 16x16",
                "dataset": "model was trained on cifar10 but the prepared data is tiny-imagenet"}[kind]
    assert expected in err


def test_bad_params_fail_before_work(setup, tmp_path, capsys):
    _, prepared, model, _ = setup
    params = params_file(tmp_path)
    params.write_text(params.read_text().replace("ece_bins: 15", "ece_bins: 0"))
    err = _run_expecting_error(capsys, prepared, model, tmp_path / "out", params)
    assert "evaluate.ece_bins" in err


def test_ece_is_the_standard_binned_gap():
    conf = np.array([0.95, 0.95, 0.55, 0.55, 0.15])
    correct = np.array([1.0, 0.0, 1.0, 1.0, 0.0])
    # bins of width 0.1: (0.9,1]: acc 0.5 conf 0.95 -> 0.45*2/5; (0.5,0.6]: acc 1 conf .55 -> .45*2/5; (0.1,0.2]: .15*1/5
    assert expected_calibration_error(conf, correct, 10) == pytest.approx(0.45 * 0.4 + 0.45 * 0.4 + 0.15 * 0.2)
    assert expected_calibration_error(np.ones(3), np.ones(3), 15) == 0.0


def test_200_class_plots_render(tmp_path):
    """At 200 classes every plot renders (no per-class labels), and the counts stay exact."""
    prepared = make_prepared(tmp_path / "prepared", num_classes=200, size=8, per_class=2)
    model = make_model_file(tmp_path / "model.pt", ModelFile(num_classes=200, size=8))
    ep = params_from_dict(shrunk_params(**{"evaluate.batch_size": 200, "evaluate.misclassified_examples": 24})).evaluate
    out = tmp_path / "evaluate"
    result = run_evaluation(prepared, model, out, ep, progress=False)
    assert result["per_class"]["num_images"] == 400
    assert not math.isnan(result["metrics"]["loss"])
    sizes = {name: png_size(out / "plots" / name) for name in PLOTS}
    assert sizes["confusion_matrix.png"][0] >= 900  # large enough for a 200x200 heatmap
    per_class = json.loads((out / "per_class.json").read_text())
    assert len(per_class["classes"]) == 200
    assert len(per_class["confused_pairs"]) == ep.confused_pairs


def test_the_model_runs_in_the_memory_format_it_was_trained_in(setup, evaluated, tmp_path, monkeypatch):
    """channels_last on every device (the faster format here, docs/benchmarks.md) unless the model was
    trained with train.channels_last false; the format changes no prediction, only last digits."""
    from tinyclf.evaluate import run as evaluate_run

    _, prepared, _, _ = setup
    formats = []
    predict = evaluate_run.predict
    monkeypatch.setattr(evaluate_run, "predict",
                        lambda model, loader, to_input, **kw: formats.append(to_input.channels_last)
                        or predict(model, loader, to_input, **kw))
    ep = params_from_dict(shrunk_params()).evaluate
    outputs = {}
    for channels_last in (True, False):
        params = params_from_dict(shrunk_params(train__channels_last=channels_last))
        # The same weights each time (the same seed): only the memory format differs.
        model = make_model_file(tmp_path / f"model-{channels_last}.pt", ModelFile(params=params))
        outputs[channels_last] = run_evaluation(prepared, model, tmp_path / f"out-{channels_last}", ep,
                                                progress=False)["metrics"]
    assert formats == [True, False]
    predicted = {cl: [r["predicted"] for r in read_predictions(tmp_path / f"out-{cl}" / "predictions.csv")]
                 for cl in (True, False)}
    assert predicted[True] == predicted[False]
    assert outputs[True]["loss"] == pytest.approx(outputs[False]["loss"], abs=1e-5)
    assert outputs[True]["top1"] == outputs[False]["top1"]


# ------------------------------------------------------------------------------ a test split
def with_test_split(prepared: Path, root: Path, *, as_val: bool = False) -> Path:
    """A copy of `prepared` with a test split of 20 other images (or those images as its val split)."""
    import shutil

    copy = shutil.copytree(prepared, root)
    other = make_prepared(root.parent / f"{root.name}_source", per_class=5, seed=9)
    split = "val" if as_val else "test"
    shutil.rmtree(copy / split, ignore_errors=True)
    shutil.copytree(other / "val", copy / split)
    stats = json.loads((copy / "stats.json").read_text())
    stats["splits"][split] = json.loads((other / "stats.json").read_text())["splits"]["val"]
    (copy / "stats.json").write_text(json.dumps(stats))
    return copy


def test_with_a_test_split_the_metrics_are_tests_and_vals_sit_beside_them(setup, evaluated, tmp_path):
    root, prepared, model, params = setup
    out = tmp_path / "evaluate"
    assert load_stage("evaluate").main(["--data", str(with_test_split(prepared, tmp_path / "prepared")), "--model",
                                        str(model), "--out", str(out), "--params", str(params), "--no-progress"]) == 0
    # The same images as a val split, evaluated the usual way: the test figures are theirs.
    as_val = tmp_path / "as_val"
    assert load_stage("evaluate").main(["--data", str(with_test_split(prepared, tmp_path / "val_only", as_val=True)),
                                        "--model", str(model), "--out", str(as_val), "--params", str(params),
                                        "--no-progress"]) == 0
    assert (out / "metrics.json").read_bytes() == (as_val / "metrics.json").read_bytes()
    def without_sources(path):  # the rows name their split ("test#3", "val#3"): data without sources.json
        return [row[:-1] for row in csv.reader(path.open())]

    assert without_sources(out / "predictions.csv") == without_sources(as_val / "predictions.csv")
    # …and val's figures, the ones that chose the epoch, are what a run without a test split reports.
    assert (out / "val_metrics.json").read_bytes() == (evaluated / "metrics.json").read_bytes()
    assert (evaluated / "val_metrics.json").read_bytes() == (evaluated / "metrics.json").read_bytes()
    per_class = json.loads((out / "per_class.json").read_text())
    assert per_class["split"] == "test" and per_class["num_images"] == 20
    assert json.loads((evaluated / "per_class.json").read_text())["split"] == "val"


# ------------------------------------------------------------------------------ every prediction's file
def test_every_prediction_mistake_and_confused_pair_names_its_file(setup, tmp_path):
    root, prepared, model, params = setup
    import shutil

    from tinyclf.data import arrays

    data = shutil.copytree(prepared, tmp_path / "prepared")
    sources = [f"photos/val/class {i % 4}/IMG, {i}.jpg" for i in range(24)]  # a comma: CSV must quote it
    arrays.write_sources(data, "val", sources)
    out = tmp_path / "evaluate"
    assert load_stage("evaluate").main(["--data", str(data), "--model", str(model), "--out", str(out),
                                        "--params", str(params), "--no-progress"]) == 0
    rows = read_predictions(out / "predictions.csv")
    assert [row["source"] for row in rows] == sources
    per_class = json.loads((out / "per_class.json").read_text())
    for mistake in per_class["misclassified"]:
        row = rows[mistake["index"]]
        assert mistake["source"] == row["source"] and mistake["predicted"] == int(row["predicted"]) != mistake["true"]
    for pair in per_class["confused_pairs"]:
        examples = [r["source"] for r in rows if (int(r["true"]), int(r["predicted"])) == (pair["true"], pair["predicted"])]
        assert pair["examples"] == examples[:3]
    assert per_class["misclassified"] and per_class["confused_pairs"]


# ------------------------------------------------------------------------------ precision, recall, F1
def test_precision_recall_and_f1_are_scikit_learns(setup, tmp_path):
    """Per class and macro-averaged, against scikit-learn's classification_report on the stage's own
    predictions (the untrained model never predicts some classes: they have no precision)."""
    from sklearn.metrics import classification_report

    root, prepared, model, params = setup
    out = tmp_path / "evaluate"
    assert load_stage("evaluate").main(["--data", str(prepared), "--model", str(model), "--out", str(out),
                                        "--params", str(params), "--no-progress"]) == 0
    rows = read_predictions(out / "predictions.csv")
    true = [int(r["true"]) for r in rows]
    predicted = [int(r["predicted"]) for r in rows]
    per_class = json.loads((out / "per_class.json").read_text())["classes"]
    reference = classification_report(true, predicted, labels=list(range(len(per_class))), output_dict=True,
                                      zero_division=math.nan)
    assert len(set(predicted)) < len(per_class), "some class should never be predicted, to test that case"
    for entry in per_class:
        expected = reference[str(entry["index"])]
        for ours, theirs in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score")):
            if math.isnan(expected[theirs]):
                assert entry[ours] is None, (entry, expected)
            else:
                assert entry[ours] == pytest.approx(expected[theirs], abs=1e-6), (entry, expected)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["macro_f1"] == pytest.approx(reference["macro avg"]["f1-score"], abs=1e-6)


def test_a_class_without_images_has_no_recall_and_stays_out_of_macro_f1():
    from sklearn.metrics import f1_score, precision_score, recall_score

    from tinyclf.evaluate.metrics import precision_recall_f1

    true = np.array([0, 0, 1, 1, 1, 3, 3])  # class 2 has no image; class 3 is never predicted
    predicted = np.array([0, 1, 1, 1, 2, 0, 1])
    confusion = np.bincount(true * 4 + predicted, minlength=16).reshape(4, 4)
    precision, recall, f1 = precision_recall_f1(confusion)
    labels = [0, 1, 2, 3]
    for ours, theirs in ((precision, precision_score), (recall, recall_score), (f1, f1_score)):
        reference = theirs(true, predicted, labels=labels, average=None, zero_division=np.nan)
        assert np.allclose(ours, reference, equal_nan=True, atol=1e-12), (ours, reference)
    assert np.isnan(recall[2]) and np.isnan(precision[3]) and f1[2] == 0.0 and f1[3] == 0.0
    assert np.nanmean(f1) == pytest.approx(f1_score(true, predicted, labels=labels, average="macro",
                                                    zero_division=np.nan))


# ------------------------------------------------------------------------------ the model file's temperature
def test_the_temperature_changes_the_probabilities_and_never_a_prediction(setup, evaluated, tmp_path):
    from tinyclf.model.file import read_model_file, save_model_file

    root, prepared, model, params = setup
    payload = read_model_file(model)
    calibrated = tmp_path / "calibrated.pt"
    calibration = {"fitted_on": "val", "temperature": 2.5, "nll_before": 3.0, "nll_after": 2.0}
    save_model_file(calibrated, payload["state_dict"], {**payload["meta"], "temperature": 2.5,
                                                        "calibration": calibration})
    out = tmp_path / "evaluate"
    assert load_stage("evaluate").main(["--data", str(prepared), "--model", str(calibrated), "--out", str(out),
                                        "--params", str(params), "--no-progress"]) == 0
    plain, scaled = read_predictions(evaluated / "predictions.csv"), read_predictions(out / "predictions.csv")
    assert [(r["predicted"], r["top5"]) for r in plain] == [(r["predicted"], r["top5"]) for r in scaled]
    # A temperature above 1 flattens every distribution: no confidence grows, and some fall.
    assert all(float(s["confidence"]) <= float(p["confidence"]) + 1e-6 for p, s in zip(plain, scaled))
    assert any(float(s["confidence"]) < float(p["confidence"]) - 1e-3 for p, s in zip(plain, scaled))
    metrics = [json.loads((d / "metrics.json").read_text()) for d in (evaluated, out)]
    assert metrics[0]["top1"] == metrics[1]["top1"] and metrics[0]["top5"] == metrics[1]["top5"]
    per_class = json.loads((out / "per_class.json").read_text())
    assert per_class["calibration"]["temperature"] == 2.5 and per_class["calibration"]["fitted_on"] == "val"
    assert per_class["calibration"]["ece_before"] == metrics[0]["ece"]
    assert per_class["calibration"]["ece_after"] == metrics[1]["ece"]
    png_size(out / "plots" / "reliability.png")


def test_the_proposed_unknown_threshold_keeps_95_percent_of_val_correct_answers(evaluated):
    """per_class.json `unknown_threshold`: chosen on val, the highest confidence that keeps 95% of val's
    correct top-1 answers (recounted from predictions.csv, whose split is val here)."""
    proposal = json.loads((evaluated / "per_class.json").read_text())["unknown_threshold"]
    rows = read_predictions(evaluated / "predictions.csv")
    confidence = np.array([float(r["confidence"]) for r in rows])
    right = np.array([r["true"] == r["predicted"] for r in rows])
    threshold = proposal["threshold"]
    assert proposal["chosen_on"] == "val" and right.any()
    kept = confidence[right] >= threshold - 1e-6
    assert kept.mean() >= 0.95 and proposal["val"]["keeps_correct"] == pytest.approx(kept.mean(), abs=1e-6)
    higher = confidence[right][confidence[right] > threshold + 1e-6]
    assert all((confidence[right] >= h).mean() < 0.95 for h in higher)  # the highest that keeps 95%
    if (~right).any():
        assert proposal["val"]["rejects_wrong"] == pytest.approx((confidence[~right] < threshold - 1e-6).mean(), abs=1e-6)
    assert proposal["evaluated"] == proposal["val"]  # no test split here: the evaluated split is val
