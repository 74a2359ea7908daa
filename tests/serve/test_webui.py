"""The demo's facts say which split their accuracy was measured on: test when the evaluate stage had
a test split (per_class.json `split`), validation otherwise; the Space's README says the same."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from tinyclf.serve.demo import model_facts
from tinyclf.serve.space import readme
from tinyclf.serve.webui import facts_html

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
