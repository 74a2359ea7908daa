"""How many parameters a model has: the one count behind `tinyclf info`, the ONNX export's
metadata and the predictor's facts.

Its own module, apart from the report's layer table (`tinyclf.model.summary`), so that the export
stage, which needs only the count, does not re-run when the table's formatting changes.
"""

from __future__ import annotations

from torch import nn


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
