"""The report's "Results" section: the metrics, the verdict against the reference, and the evaluate
stage's figures."""

from __future__ import annotations

from tinyclf.report.facts import metrics_table
from tinyclf.report.inputs import Inputs
from tinyclf.report.markdown import md_table, pct
from tinyclf.report.reference import comparability_note, reference_text, reference_verdict

MISTAKES_LISTED = 10  # files of the most confident mistakes listed under the figures
FIGURES = (("Per-class accuracy", "per_class_accuracy.png"), ("Most confused pairs", "confused_pairs.png"),
           ("Confusion matrix", "confusion_matrix.png"), ("Misclassified examples", "misclassified.png"))


def results_section(inputs: Inputs, plots_rel: str) -> str:
    """Metrics, the verdict against the reference, and the evaluate stage's figures (under `plots_rel`)."""
    m, classes = inputs.metrics, inputs.classes
    evaluated = inputs.per_class  # what was evaluated: num_images, tta_flip, generated
    note = comparability_note(classes["dataset"], bool(evaluated.get("generated", classes["generated"])))
    tta = ("with horizontal-flip test-time augmentation" if evaluated.get("tta_flip")
           else "without test-time augmentation")
    if inputs.evaluated_split == "test":
        where = (f"Evaluated on all {evaluated['num_images']:,} test images, {tta}: a split that neither training "
                 "nor the choice of epoch ever read. Beside them, the val figures the epoch was chosen by (chosen "
                 "on val, they tend to read high).")
    else:
        where = f"Evaluated on all {evaluated['num_images']:,} validation images, {tta}."
    lines = [
        "## Results",
        "",
        where,
        "",
        metrics_table(m, num_classes=len(classes["classes"]), val_metrics=inputs.val_metrics),
        "",
        f"**Against the reference** — {reference_text()}: this model reaches {pct(m['top1'])} top-1 and "
        f"**{reference_verdict(m['top1'], note is None)}**.",
    ]
    if note:
        lines += ["", f"_{note}_"]
    lines += calibration_lines(inputs, plots_rel) + unknown_lines(inputs)
    for title, file in FIGURES:
        lines += ["", f"![{title}]({plots_rel}/{file})"]
    lines += mistakes_lines(inputs)
    return "\n".join(lines) + "\n"


def calibration_lines(inputs: Inputs, plots_rel: str) -> list[str]:
    """The temperature the probabilities are divided by, and ECE before and after it (per_class.json
    `calibration`), with the reliability diagrams; nothing for results of an older evaluate stage."""
    calibration = inputs.per_class.get("calibration")
    if not calibration or "ece_before" not in calibration:
        return []
    fitted = ("fitted on val by the train stage, never on the evaluated split" if calibration.get("fitted_on")
              else "none in this model file: plain softmax")
    return ["", f"**Calibration:** the probabilities are softmax(logits / T) with T = "
                f"{calibration['temperature']:.4g} ({fitted}); expected calibration error "
                f"{calibration['ece_before']:.4f} before, {calibration['ece_after']:.4f} after. The predicted "
                "classes are the same at any T.", "", f"![Reliability diagrams]({plots_rel}/reliability.png)"]


def unknown_lines(inputs: Inputs) -> list[str]:
    """The proposed "I don't know" threshold (per_class.json `unknown_threshold`), chosen on val."""
    proposal = inputs.per_class.get("unknown_threshold")
    if not proposal:
        return []
    val, evaluated = proposal["val"], proposal["evaluated"]

    def share(value):
        return "—" if value is None else pct(value)

    where = ("" if inputs.evaluated_split != "test" else
             f" On the test split it keeps {share(evaluated['keeps_correct'])} of the correct answers and "
             f"rejects {share(evaluated['rejects_wrong'])} of the wrong ones.")
    return ["", f"**\"I don't know\":** answering `unknown` below a confidence of {proposal['threshold']:.4f} "
                f"(`tinyclf predict --min-confidence {proposal['threshold']:.4f}`) keeps {share(val['keeps_correct'])} "
                f"of val's correct answers and rejects {share(val['rejects_wrong'])} of its wrong ones (chosen on "
                f"val to keep 95% of the correct ones).{where}"]


def mistakes_lines(inputs: Inputs) -> list[str]:
    """The most confident mistakes by file (per_class.json `misclassified`), so each can be opened."""
    shown = inputs.per_class.get("misclassified", [])[:MISTAKES_LISTED]
    if not shown:
        return []
    names = [c["name"] for c in inputs.classes["classes"]]
    rows = [[f"`{m['source']}`", names[m["true"]], names[m["predicted"]], pct(m["confidence"])] for m in shown]
    return ["", f"The {len(shown)} most confident mistakes, by file (`results/evaluate/predictions.csv` has every "
                "image's):", "", md_table(["file", "true", "predicted", "confidence"], rows).rstrip("\n")]

