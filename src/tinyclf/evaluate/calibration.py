"""Temperature scaling (Guo et al. 2017): one number T > 0 that divides the logits, fitted on val so
that softmax(logits / T) is as likely as possible on the val labels. The predicted class is the
same for every T (dividing by a positive number keeps the order); only the probabilities change,
which makes them closer to the accuracy they claim (expected calibration error).

`fit_temperature` is called once per run, by the train stage on the val split (never on test), and
the model file keeps the result (meta `temperature` and `calibration`); the evaluate stage, the
ONNX export's `probabilities` output, `tinyclf predict`, the demo and the Space all apply it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# Where the fit is clamped: beyond these the val set is too small or too degenerate to trust it
# (a model right on every val image drives T towards 0, one never right towards infinity).
TEMPERATURE_RANGE = (0.05, 20.0)


def fit_temperature(logits: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor) -> dict:
    """T minimizing the mean cross-entropy of softmax(logits / T) on `labels` (LBFGS on log T, float64,
    deterministic). Returns {"temperature", "nll_before", "nll_after"} (nll at T = 1 and at T)."""
    x = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-14,
                                  line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(x / log_t.exp(), y)
        loss.backward()
        return loss

    optimizer.step(closure)
    low, high = TEMPERATURE_RANGE
    temperature = float(min(max(float(log_t.detach().exp()), low), high))
    with torch.no_grad():
        before, after = (float(F.cross_entropy(x / t, y)) for t in (1.0, temperature))
    return {"temperature": round(temperature, 6), "nll_before": round(before, 6), "nll_after": round(after, 6)}


def apply_temperature(log_probs: np.ndarray, temperature: float) -> np.ndarray:
    """log softmax(logits / T) from log softmax(logits) (they differ by a constant per row, which the
    softmax ignores), in float64."""
    scaled = np.asarray(log_probs, dtype=np.float64) / temperature
    return scaled - np.logaddexp.reduce(scaled, axis=1, keepdims=True)
