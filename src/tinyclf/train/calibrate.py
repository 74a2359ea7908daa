"""The train stage's last step on rank 0: the temperature of the weights the model file gets, fitted
on the whole val split (`tinyclf.evaluate.calibration`; the test split is never read)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from tinyclf.evaluate.calibration import fit_temperature
from tinyclf.loading.dataset import PreparedDataset
from tinyclf.loading.normalize import ModelInput

VAL_BATCH = 256  # images per forward pass; any value gives the same logits up to float noise


@torch.no_grad()
def calibrate_on_val(model: nn.Module, prepared_dir: Path, to_input: ModelInput, device: torch.device,
                     autocast_dtype: torch.dtype | None) -> dict:
    """{"fitted_on": "val", "temperature", "nll_before", "nll_after"} for `model` over every val image."""
    loader = DataLoader(PreparedDataset(prepared_dir, "val"), batch_size=VAL_BATCH, shuffle=False, num_workers=0)
    was_training = model.training
    model.eval()
    logits, labels = [], []
    autocast = (torch.autocast(device_type=device.type, dtype=autocast_dtype) if autocast_dtype is not None
                else contextlib.nullcontext())
    for images, batch_labels in loader:
        with autocast:
            logits.append(model(to_input(images.to(device))).float().cpu())
        labels.append(batch_labels)
    model.train(was_training)
    return {"fitted_on": "val", **fit_temperature(torch.cat(logits), torch.cat(labels))}
