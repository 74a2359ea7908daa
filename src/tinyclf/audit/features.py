"""One pass of the trained model over a prepared split: each image's penultimate features (what the
classifier reads) and its log-probabilities.

Features go to a float16 `.npy` on disk, written batch by batch and read back memory-mapped, so
memory stays one batch whatever the split's size (100,000 images of the reference model's 2,048
features are 400 MB on disk). The features are taken with a forward hook on the classifier
(`tinyclf.model.init_weights.classifier_names`): timm's `get_classifier()`, or the last layer with
one output per class, so any model the train stage builds works without a per-architecture
`forward_head`. A feature map (a 1x1-conv head over an unpooled map) is averaged over its
positions, which for a linear head is the same as pooling first.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from tinyclf.errors import TinyclfError
from tinyclf.evaluate.calibration import apply_temperature
from tinyclf.evaluate.run import in_order, runs_channels_last
from tinyclf.loading.dataset import PreparedDataset
from tinyclf.loading.normalize import ModelInput
from tinyclf.model.init_weights import classifier_names
from tinyclf.params import EvaluateParams


class AuditError(TinyclfError, ValueError):
    """Inputs the audit cannot work with (a model without a separate classifier, mismatched data)."""


@dataclass(frozen=True)
class SplitPass:
    """A split as the model sees it: features (N×D float16, memory-mapped), calibrated
    log-probabilities (N×C float32) and the given labels (N int64)."""

    features: np.ndarray
    log_probs: np.ndarray
    labels: np.ndarray

    @property
    def predicted(self) -> np.ndarray:
        return self.log_probs.argmax(axis=1)


class FeatureModel:
    """The trained model with a hook that keeps its classifier's input."""

    def __init__(self, model: nn.Module, meta: dict, device: torch.device):
        self.model = model.to(device).eval()
        self.device = device
        self.to_input = ModelInput(meta["mean"], meta["std"], channels_last=runs_channels_last(meta))
        if self.to_input.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.temperature = float(meta.get("temperature", 1.0))
        head = _classifier_module(model)
        self._captured: list[torch.Tensor] = []
        head.register_forward_hook(lambda _module, inputs, _output: self._captured.append(inputs[0]))

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features N×D float32, log-probabilities N×C float32) of a uint8 N×3×H×W batch."""
        self._captured.clear()
        logits = self.model(self.to_input(images.to(self.device, non_blocking=True))).float().flatten(1)
        features = self._captured[-1].float()
        if features.dim() > 2:  # a map: average over its positions
            features = features.flatten(2).mean(dim=2)
        return features.cpu(), torch.log_softmax(logits, dim=1).cpu()


def _classifier_module(model: nn.Module) -> nn.Module:
    names = {name.rsplit(".", 1)[0] for name in classifier_names(model)}
    modules = dict(model.named_modules())
    heads = [modules[name] for name in names if name in modules]
    if len(heads) != 1:
        raise AuditError(f"{type(model).__name__}: cannot tell which layer is the classifier (found "
                         f"{sorted(names) or 'none'}); the audit reads the features that layer takes")
    return heads[0]


def split_pass(feature_model: FeatureModel, prepared_dir: Path, split: str, features_path: Path, *,
               batch_size: int, workers: int, progress: bool = True) -> SplitPass:
    """Run `feature_model` over every image of `split` once, in order; features to `features_path`."""
    dataset = PreparedDataset(prepared_dir, split)
    loader = in_order(dataset, EvaluateParams(batch_size=batch_size, workers=workers), feature_model.device)
    out, log_probs, row = None, [], 0
    for images, _ in tqdm(loader, desc=f"audit {split}", unit="batch", file=sys.stderr, disable=not progress,
                          dynamic_ncols=True):
        features, batch_log_probs = feature_model(images)
        if out is None:
            out = np.lib.format.open_memmap(features_path, mode="w+", dtype=np.float16,
                                            shape=(len(dataset), features.shape[1]))
        out[row:row + len(features)] = features.numpy().astype(np.float16)
        log_probs.append(batch_log_probs.numpy())
        row += len(features)
    out.flush()
    del out
    log_probs = apply_temperature(np.concatenate(log_probs), feature_model.temperature)
    features = np.load(features_path, mmap_mode="r")
    return SplitPass(features=features, log_probs=log_probs.astype(np.float32), labels=dataset.labels)
