"""The demo's facts say which split their accuracy was measured on: test when the evaluate stage had
a test split (per_class.json `split`), validation otherwise, and where the page's "I don't know"
threshold starts; the Space's README says the same. Below that threshold the page answers "I don't know"."""

from __future__ import annotations

import html
import json
from types import SimpleNamespace

import pytest

from tinyclf.serve.demo import model_facts
from tinyclf.serve.space import readme
from tinyclf.serve.webui import UNKNOWN, answer, facts_html, predictions_html

FACTS = {"model": "resnet18", "parameters": 11_000_000, "dataset": "folder", "generated": False, "num_classes": 3,
         "image_size": 64, "backend": "torch"}


@pytest.mark.parametrize("split, title", [("test", "test"), ("val", "validation"), (None, "validation")])
def test_the_accuracy_shown_names_the_split_it_was_measured_on(tmp_path, split, title):
    (tmp_path / "metrics.json").write_text(json.dumps({"top1": 0.8125, "top5": 0.97}))
    if split is not None:  # None: an evaluate stage from before the split was recorded
        (tmp_path / "per_class.json").write_text(json.dumps({"split": split, "num_images": 48}))
    facts = model_facts(SimpleNamespace(facts=dict(FACTS)), tmp_path / "metrics.json")
    assert f"<th style='text-align:left;padding-right:1em'>{title} accuracy</th><td>top-1 81.2%" in facts_html(facts)
    assert f"| {title} top-1 | 81.2% |" in readme(facts, "My classifier", 12.5)


def test_the_page_starts_at_the_threshold_the_evaluate_stage_proposed_or_the_one_given(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"top1": 0.8125, "top5": 0.97}))
    (tmp_path / "per_class.json").write_text(json.dumps({"split": "test", "unknown_threshold": {
        "threshold": 0.4137, "chosen_on": "val", "val": {}, "evaluated": {}}}))
    model = SimpleNamespace(facts=dict(FACTS))
    proposed = model_facts(model, tmp_path / "metrics.json")
    assert (proposed["min_confidence"], proposed["min_confidence_from"]) == (0.4137, "proposed on val by the evaluate stage")
    shown = "41.4% (proposed on val by the evaluate stage)"
    assert f"I don't know\" below</th><td>{shown}</td>" in html.unescape(facts_html(proposed))
    assert f'| "I don\'t know" below | {shown} |' in readme(proposed, "My classifier", 12.5)
    given = model_facts(model, tmp_path / "metrics.json", min_confidence=0.6)
    assert (given["min_confidence"], given["min_confidence_from"]) == (0.6, "--min-confidence")
    (tmp_path / "per_class.json").write_text(json.dumps({"split": "test"}))  # an evaluation from before the proposal
    assert "below</th><td>off (the slider sets one)</td>" in html.unescape(facts_html(model_facts(model, tmp_path / "metrics.json")))


def test_below_the_threshold_the_answer_is_i_dont_know():
    result = {"predictions": [{"rank": 1, "index": 2, "id": "n02", "name": "goldfish", "probability": 0.3},
                              {"rank": 2, "index": 0, "id": "n00", "name": "tabby", "probability": 0.25}]}
    # As `tinyclf predict --min-confidence`: a top-1 probability equal to the threshold is an answer.
    assert [answer(result, t) for t in (None, 0, 0.3, 0.31)] == ["n02", "n02", "n02", UNKNOWN]
    page = predictions_html(result, 0.31)
    assert 'data-answer="unknown"' in page
    assert "I don't know: the best guess, goldfish, has 30.0%, under the 31.0% threshold" in page
    assert 'data-answer="n02"' in predictions_html(result, 0.3) and "I don't know" not in predictions_html(result, 0.3)
