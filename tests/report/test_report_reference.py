"""Every sentence about the reference result is built from `tinyclf.report.reference.REFERENCE`.

The report and the card are rendered from the real inputs of test_summarize's pipeline, once with
the reference as it is and once with another; nothing of the first may remain in the second.
"""

from __future__ import annotations

import pytest
from support.helpers import shrunk_params
from support.stage_outputs import report_inputs

from tinyclf.params import params_from_dict
from tinyclf.report import reference
from tinyclf.report.card import render_model_card
from tinyclf.report.facts import cost_text
from tinyclf.report.inputs import Sources, read_inputs
from tinyclf.report.reference import Reference, reference_verdict
from tinyclf.report.run import render_report


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """What the summarize stage reads: prepared data, a model file, train and evaluate outputs."""
    return report_inputs(tmp_path_factory.mktemp("reference"))


OTHER = Reference(top1=0.8125, dataset="cifar10", dataset_name="CIFAR-10", model="ResNet-18", epochs=30, minutes=7,
                  gpus="1× NVIDIA H100", cost_usd=0.35)
# What the texts say of today's reference: none of it may be left once the constant changes.
TODAY = ("70%", "Tiny ImageNet", "ResNet-50", "150 epochs", "50 min", "A40", "$1.20")


def render(pipeline: dict, **change) -> str:
    sources = Sources(pipeline["prepared"], pipeline["model"], pipeline["train"], pipeline["evaluate"])
    inputs = read_inputs(sources, params_from_dict(shrunk_params(train__lr=0.05)))
    inputs.classes = {**inputs.classes, **change.get("classes", {})}
    inputs.metrics = {**inputs.metrics, **change.get("metrics", {})}
    inputs.per_class = {**inputs.per_class, **change.get("per_class", {})}
    return render_report(inputs, "plots") + render_model_card(inputs)


def test_the_texts_state_todays_reference(pipeline):
    texts = render(pipeline)
    for fact in TODAY:
        assert fact in texts, fact
    assert reference_verdict(0.7123) == "beats the reference 70% top-1 by 1.23 points"


def test_changing_the_reference_changes_every_sentence(pipeline, monkeypatch):
    monkeypatch.setattr(reference, "REFERENCE", OTHER)
    # A real run on the other reference's dataset: comparable, so every verdict is a number.
    texts = render(pipeline, classes={"dataset": "cifar10", "generated": False},
                   metrics={"top1": 0.9}, per_class={"generated": False})
    for fact in TODAY:
        assert fact not in texts, fact
    verdict = "beats the reference 81.25% top-1 by 8.75 points"
    assert reference_verdict(0.9) == verdict
    assert "**Top-1 90.00%**" in texts and f"validation images — {verdict}." in texts  # the headline
    assert ("**Against the reference** — 81.25% top-1 on the CIFAR-10 validation set with the reference "
            "ResNet-18, 30 epochs in about 7 minutes on 1× NVIDIA H100: this model reaches 90.00% top-1 and "
            f"**{verdict}**.") in texts
    assert ("Reference: 81.25% top-1 on the CIFAR-10 validation set with the reference ResNet-18, 30 epochs in "
            f"about 7 minutes on 1× NVIDIA H100; this model {verdict}.") in texts  # the card
    assert "| training time | 0.1 min (reference: about 7 min on 1× NVIDIA H100) |" in texts
    cost = "n/a (not a GPU run); reference: about $0.35 for ~7 min on 1× NVIDIA H100"
    assert f"| cost | {cost} |" in texts and f"- Training cost: {cost}" in texts
    assert cost_text({"gpu_hours": 0.5}, 3.0).endswith("reference: about $0.35 for ~7 min on 1× NVIDIA H100")


@pytest.mark.parametrize("dataset, generated, note", [
    ("tiny-imagenet", True, "Not comparable: this model was trained and evaluated on generated data, not CIFAR-10."),
    ("tiny-imagenet", False, "Not comparable: the reference is a CIFAR-10 result and this run used tiny-imagenet."),
    ("folder", False, "Not comparable: the reference is a CIFAR-10 result and this run used your own images."),
])
def test_runs_off_the_reference_dataset_say_so_in_its_terms(pipeline, monkeypatch, dataset, generated, note):
    monkeypatch.setattr(reference, "REFERENCE", OTHER)
    texts = render(pipeline, classes={"dataset": dataset, "generated": generated}, per_class={"generated": generated})
    for fact in TODAY:
        assert fact not in texts, fact
    assert note in texts and "cannot be compared with the reference 81.25% top-1" in texts
    assert ("GENERATED data — not a CIFAR-10 result" in texts) == generated

