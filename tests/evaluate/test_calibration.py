"""tinyclf.evaluate.calibration: the temperature fitted on an over-confident model's logits is the
one that made them so, the fit lowers the val loss, and applying it keeps every prediction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tinyclf.evaluate.calibration import apply_temperature, fit_temperature


def sampled_labels(logits: np.ndarray, seed: int) -> np.ndarray:
    """Labels drawn from softmax(logits): a model whose probabilities are exactly right."""
    probs = torch.from_numpy(logits).softmax(1).numpy()
    rng = np.random.default_rng(seed)
    return np.array([rng.choice(len(p), p=p) for p in probs])


@pytest.mark.parametrize("inflation", [0.5, 2.5])
def test_the_fit_finds_the_temperature_that_distorted_calibrated_logits(inflation):
    calibrated = np.random.default_rng(0).normal(0, 2.0, size=(4000, 10))
    labels = sampled_labels(calibrated, seed=1)
    fit = fit_temperature(calibrated * inflation, labels)  # over-confident (2.5) or under-confident (0.5)
    assert fit["temperature"] == pytest.approx(inflation, rel=0.06)
    assert fit["nll_after"] < fit["nll_before"]
    assert fit_temperature(calibrated * inflation, labels) == fit  # deterministic


def test_applying_a_temperature_keeps_every_prediction_and_normalizes():
    logits = np.random.default_rng(2).normal(0, 3.0, size=(500, 7)).astype(np.float32)
    log_probs = torch.from_numpy(logits).log_softmax(1).numpy()
    for temperature in (0.3, 1.0, 4.0):
        scaled = apply_temperature(log_probs, temperature)
        assert (scaled.argmax(1) == logits.argmax(1)).all()
        np.testing.assert_allclose(np.exp(scaled).sum(1), 1.0, atol=1e-12)
        expected = torch.from_numpy(logits.astype(np.float64) / temperature).log_softmax(1).numpy()
        np.testing.assert_allclose(scaled, expected, atol=1e-6)
