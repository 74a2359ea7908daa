"""The summarize stage: byte-identical reruns, the GENERATED banner, params diffs, model table, timing.

Inputs are real: a prepared directory and model file (tests/support/stage_outputs.py), the evaluate
stage's own outputs, and a train directory written by a real `dvclive.Live`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from support.helpers import load_stage, png_size
from support.stage_outputs import EPOCHS, report_inputs

from tinyclf.report.inputs import read_dvclive_series
from tinyclf.report.sections.parameters import params_differences
from tinyclf.report.reference import reference_verdict

torch.set_num_threads(1)

OUTPUTS = ("report.md", "model_card.md", "training_curves.png")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """prepared + model + train dir + evaluate outputs, all in one temp tree."""
    return report_inputs(tmp_path_factory.mktemp("summary"))


def summarize(p: dict, out: Path) -> int:
    return load_stage("summarize").main(["--data", str(p["prepared"]), "--model", str(p["model"]),
                                         "--train", str(p["train"]), "--evaluate", str(p["evaluate"]),
                                         "--out", str(out), "--params", str(p["params"])])


@pytest.fixture(scope="module")
def summary(pipeline):
    out = pipeline["root"] / "summary"
    assert summarize(pipeline, out) == 0
    return out


def test_twice_gives_identical_bytes(pipeline, summary):
    first = {name: (summary / name).read_bytes() for name in OUTPUTS}
    assert summarize(pipeline, summary) == 0
    for name in OUTPUTS:
        assert (summary / name).read_bytes() == first[name], f"{name} changed between identical runs"
    png_size(summary / "training_curves.png")


def test_no_absolute_paths_or_timestamps(pipeline, summary):
    for name in ("report.md", "model_card.md"):
        text = (summary / name).read_text()
        assert str(pipeline["root"]) not in text
        assert "/tmp" not in text and str(Path.home()) not in text


def test_report_says_generated_and_compares_with_the_reference(summary, pipeline):
    report = (summary / "report.md").read_text()
    assert "trained on GENERATED data — not a Tiny ImageNet result" in report.replace("Trained", "trained")
    assert "GENERATED" in (summary / "model_card.md").read_text()
    metrics = json.loads((pipeline["evaluate"] / "metrics.json").read_text())
    assert f"{metrics['top1'] * 100:.2f}%" in report
    # generated data is never claimed to beat or miss the reference
    assert "cannot be compared with the reference 70% top-1" in report
    assert reference_verdict(metrics["top1"]) not in report
    assert "falls short of the reference 70% top-1 by" in reference_verdict(0.5)
    assert reference_verdict(0.7123) == "beats the reference 70% top-1 by 1.23 points"


def test_report_lists_params_that_differ_from_defaults(summary):
    report = (summary / "report.md").read_text()
    section = report.split("## Parameters that differ from the defaults")[1].split("\n## ")[0]
    assert "| `train.lr` | 0.1 | 0.05 |" in section
    assert "| `download.source` | official | generated |" in section
    assert "| `train.model` | tiny_resnet50 | test_resnet |" in section
    assert "train.momentum" not in section  # unchanged keys stay out


def test_params_differences_is_empty_for_defaults():
    from tinyclf.params import Params

    assert params_differences(Params()) == []


def test_report_has_model_table_curves_highlights_timing(summary, pipeline):
    report = (summary / "report.md").read_text()
    for needle in ("| Total params |", "| Total mult-adds |", "| Params size (MB) |",
                   "| Forward/backward pass size (MB) |", "](training_curves.png)",
                   "](../evaluate/plots/confusion_matrix.png)", "## Per-class highlights", "thing 0",
                   "| training seconds (timed epochs) | 4.5 |", "| training images/s | 16.0 |",
                   "| processes (world size) | 1 |", "evaluation images/s", "| torch |",
                   "| MFU (model FLOPs utilization) | n/a (not a GPU run) |",
                   "| cost | n/a (not a GPU run); reference: about $1.20 for ~50 min on 3× NVIDIA A40 |"):
        assert needle in report, needle
    for plot in ("per_class_accuracy", "confused_pairs", "misclassified"):
        assert f"../evaluate/plots/{plot}.png" in report
    card = (summary / "model_card.md").read_text()
    assert "load_model_file" in card and "## Limitations" in card
    assert "- Training cost: n/a (not a GPU run)" in card


def test_dvclive_series_are_read_per_metric(pipeline):
    series = read_dvclive_series(pipeline["train"])
    assert {"train/loss", "val/top1", "val/top5", "lr"} <= set(series)
    steps, values = series["val/top1"]
    assert steps.tolist() == list(range(EPOCHS))
    assert values.tolist() == pytest.approx([0.25, 0.35, 0.45])


def test_missing_evaluate_output_is_a_clear_error(pipeline, tmp_path, capsys):
    p = dict(pipeline, evaluate=tmp_path / "no-evaluate")
    out = tmp_path / "out"
    assert summarize(p, out) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "metrics.json: missing" in err
    assert not out.exists()


def rewrite(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_report_warns_of_imbalance_and_says_what_the_weights_started_from(pipeline, tmp_path):
    """A skewed train split (stats.json without class_balance, as written before preprocess recorded
    it) and a model file whose meta records train.init: the report and card say both."""
    import shutil

    from tinyclf.model.file import read_model_file, save_model_file

    p = dict(pipeline, prepared=tmp_path / "prepared", model=tmp_path / "model.pt")
    shutil.copytree(pipeline["prepared"], p["prepared"])
    rewrite(p["prepared"] / "stats.json", lambda s: s["splits"]["train"].update(per_class=[60, 6, 5, 4]))
    payload = read_model_file(pipeline["model"])
    init = {"source": "/somewhere/start.pt", "kind": "file", "description": "a state dict", "md5": "ab" * 16,
            "loaded": 60, "total": 62, "unused": 2, "classifier_reinitialised": True,
            "not_loaded": [{"module": "fc", "tensors": ["weight", "bias"],
                            "reason": "classifier: re-initialised for 4 classes (10 in the source)"}]}
    save_model_file(p["model"], payload["state_dict"], {**payload["meta"], "init": init})
    out = tmp_path / "summary"
    assert summarize(p, out) == 0
    report, card = (out / "report.md").read_text(), (out / "model_card.md").read_text()
    warning = ("> **⚠ Imbalanced classes:** the largest class has 60 train images and the smallest 4 (15×); "
               "rare classes are seen less often in training; try class-balanced sampling (`train.balance: sampler`")
    assert warning in report.split("## Dataset")[0]  # at the top
    assert "| 0 | thing 0, synthetic class | 60 | 6 |" in report and "| 3 | thing 3, synthetic class | 4 | 6 |" in report
    started = ("`start.pt` (a state dict, md5 `abababababababababababababababab`): 60 of 62 tensors loaded, "
               "classifier re-initialised; 2 tensors of the source unused")
    assert f"- **Initial weights:** {started}" in report
    assert "  - `fc` (weight, bias): classifier: re-initialised for 4 classes (10 in the source)" in report
    assert f"- Initial weights: {started}" in card and "strongly imbalanced" in card
    assert "/somewhere" not in report + card


def test_report_names_the_epoch_kept_and_why_the_run_stopped(pipeline, summary, tmp_path):
    from tinyclf.model.file import read_model_file, save_model_file

    # A model file from before train.keep (no `selected`) held its last epoch.
    report = (summary / "report.md").read_text()
    meta = read_model_file(pipeline["model"])["meta"]
    assert "selected" not in meta
    assert f"- **Epoch kept** (`train.keep`): the last epoch of {meta['epochs_trained']}\n" in report

    p = dict(pipeline, model=tmp_path / "model.pt")
    payload = read_model_file(pipeline["model"])
    selected = {"keep": "best", "metric": "val/loss", "epoch": 4, "value": 0.512345, "best_epoch": 4,
                "best_value": 0.512345, "epochs_run": 9, "patience": 5, "min_delta": 0.0, "stopped_early": True,
                "stop_reason": "val/loss has not improved by more than 0 for 5 epochs (best 0.5123 at epoch 4)"}
    save_model_file(p["model"], payload["state_dict"], {**payload["meta"], "selected": selected, "epochs_trained": 9})
    out = tmp_path / "summary"
    assert summarize(p, out) == 0
    report, card = (out / "report.md").read_text(), (out / "model_card.md").read_text()
    kept = "epoch 4 of 9 (the best val/loss, 0.5123)"
    stopped = ("- **Stopped early** after epoch 9: val/loss has not improved by more than 0 for 5 epochs "
               "(best 0.5123 at epoch 4) (`train.patience: 5`)")
    assert f"- **Epoch kept** (`train.keep`): {kept}\n{stopped}" in report
    assert f"- **Weights saved:** {payload['meta']['weights']} (EMA when `ema`), {kept}" in report
    assert f"- Weights: {payload['meta']['weights']}, {kept}" in card


def test_report_of_a_model_from_scratch_and_balanced_data(summary):
    report, card = (summary / "report.md").read_text(), (summary / "model_card.md").read_text()
    assert "Imbalanced" not in report and "imbalanced" not in card
    assert "- **Initial weights:** from scratch" in report and "- Initial weights: from scratch" in card
    assert "Images per class:" in report and "| 0 | thing 0, synthetic class | 6 | 6 |" in report


def test_class_counts_of_200_classes_stay_short():
    from tinyclf.report.sections.dataset import class_counts_lines
    from tinyclf.report.inputs import Inputs

    train = [500] * 200
    train[17], train[42] = 3, 900
    classes = {"classes": [{"index": i, "id": f"n{i}", "name": f"class {i}"} for i in range(200)]}
    stats = {"splits": {"train": {"per_class": train}, "val": {"per_class": [50] * 200}}}
    inputs = Inputs(params=None, classes=classes, stats=stats, meta={}, table={}, train_summary={}, series={},
                    run=None, metrics={}, speed={}, per_class={})
    text = "\n".join(class_counts_lines(inputs))
    assert "min 3, median 500, max 900 over 200 classes" in text
    assert text.count("\n| ") == 2 + 5 + 1 + 5 - 1  # header, align, 5 smallest, "…", 5 largest
    assert "| 17 | class 17 | 3 | 50 |" in text and "| 42 | class 42 | 900 | 50 |" in text


def test_report_and_card_mention_the_onnx_export_with_its_parity(pipeline, summary, tmp_path):
    from tinyclf.serve.export import export_model

    parity = tmp_path / "parity.json"
    export_model(pipeline["model"], pipeline["prepared"], tmp_path / "model.onnx", parity)
    figures = json.loads(parity.read_text())
    out = tmp_path / "summary"
    assert load_stage("summarize").main(["--data", str(pipeline["prepared"]), "--model", str(pipeline["model"]),
                                         "--train", str(pipeline["train"]), "--evaluate", str(pipeline["evaluate"]),
                                         "--export", str(parity), "--out", str(out),
                                         "--params", str(pipeline["params"])]) == 0
    report, card = (out / "report.md").read_text(), (out / "model_card.md").read_text()
    line = next(line for line in report.splitlines() if line.startswith("- **ONNX export:**"))
    assert "`models/model.onnx`" in line and f"opset {figures['opset']}" in line
    assert f"matches PyTorch on {figures['images']} validation images" in line
    assert f"max |logit difference| {figures['max_abs_logit_diff']:.2g}" in line and "same top-1 on 100.00%" in line
    assert "- ONNX export: `models/model.onnx`" in card and "onnxruntime" in card
    # Without the export stage's figures the report says nothing about ONNX.
    assert "ONNX" not in (summary / "report.md").read_text()


GROUPS = [{"index": 0, "name": "alpha things"}, {"index": 1, "name": "beta things"}, {"index": 2, "name": "gamma things"}]


def with_groups(pipeline: dict, tmp_path: Path, group_of: list[int], correct: list[int]) -> dict:
    """Copies of the prepared and evaluate directories where classes.json has class groups (GROUPS, as
    CIFAR-100's superclasses; class i in group `group_of[i]`) and per_class.json these `correct` counts."""
    import shutil

    p = dict(pipeline, prepared=tmp_path / "prepared", evaluate=tmp_path / "evaluate")
    shutil.copytree(pipeline["prepared"], p["prepared"])
    shutil.copytree(pipeline["evaluate"], p["evaluate"])

    def group_classes(data):
        data["groups"] = GROUPS
        for c, group in zip(data["classes"], group_of):
            c["group"] = group

    def set_correct(data):
        for c, n in zip(data["classes"], correct):
            c.update(correct=n, accuracy=n / c["count"])

    rewrite(p["prepared"] / "classes.json", group_classes)
    rewrite(p["evaluate"] / "per_class.json", set_correct)
    return p


def test_report_scores_each_superclass_when_classes_json_has_groups(pipeline, summary, tmp_path):
    # 6 validation images per class; "gamma things" has no classes, so no accuracy: it comes last.
    p = with_groups(pipeline, tmp_path, group_of=[1, 0, 1, 0], correct=[6, 1, 3, 4])
    out = tmp_path / "summary"
    assert summarize(p, out) == 0
    report, card = (out / "report.md").read_text(), (out / "model_card.md").read_text()
    section = report.split("## Per-superclass accuracy\n")[1].split("\n## ")[0]
    assert section == (
        "\nThe 3 class groups of `classes.json`, each scored over all the validation images of its classes, "
        "best first:\n\n"
        "| superclass | classes | validation images | correct | accuracy |\n"
        "|---|---|---|---|---|\n"
        "| beta things | 2 | 12 | 9 | 75.00% |\n"
        "| alpha things | 2 | 12 | 5 | 41.67% |\n"
        "| gamma things | 0 | 0 | 0 | — |\n")
    headings = [line for line in report.splitlines() if line.startswith("## ")]
    assert headings[headings.index("## Per-class highlights") + 1] == "## Per-superclass accuracy"
    assert ("Per superclass: from 41.67% (alpha things) to 75.00% (beta things) over the 3 class groups "
            "of `classes.json`; the report lists each.") in card.split("## Metrics")[1].split("\n## ")[0]
    # Without groups in classes.json neither file mentions them.
    for name in ("report.md", "model_card.md"):
        assert "superclass" not in (summary / name).read_text()


def test_a_class_outside_the_groups_is_a_clear_error(pipeline, tmp_path, capsys):
    p = with_groups(pipeline, tmp_path, group_of=[1, 0, 7, 0], correct=[6, 1, 3, 4])
    assert summarize(p, tmp_path / "out") == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "classes.json: class 2 has no group of `groups`" in err
