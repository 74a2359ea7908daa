"""A frozen backbone for the first epochs of a fine-tuning run (`train.freeze: backbone`,
`train.freeze_epochs`): a linear probe on the starting weights, then the whole network.

While frozen, every parameter outside the classifier has `requires_grad` off, so it gets no
gradient: the optimizer skips it (no step, no weight decay, no momentum: its tensors stay bitwise
as loaded) and backward stops at the classifier (cheaper epochs). The backbone's BatchNorm layers
stay in eval mode, so their running statistics stay those of the starting weights, and they
normalise with them as they will at test time.

The switch, at the start of epoch `freeze_epochs`: the backbone's parameters train again. The
optimizer was built with every parameter in it (its groups and layer-decay scales do not change),
so the backbone's state (momentum, Adam's moments) simply starts empty at its first step, as every
parameter's does at a run's start. The learning-rate schedule is one function of the step count
over the whole run and does not restart: the backbone starts at the rate the schedule has reached
(after its warmup; the cosine decay has begun). DDP registers only the parameters that train when it
is built, so the run wraps the model again at the switch (`tinyclf.train.run`).

Which phase an epoch is in depends only on its index, so a run resumed on either side of the switch
(or exactly at it) continues as an uninterrupted run does.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from tinyclf.train.recipe import TrainingError


@dataclass
class BackboneFreeze:
    """What is frozen (all but `classifier`: parameter names) and until which epoch."""

    classifier: frozenset[str]
    epochs: int  # epochs 0 .. epochs-1 train only the classifier
    frozen: bool = False  # the state last applied

    @classmethod
    def from_params(cls, train_params, model: nn.Module, classifier: set[str]) -> BackboneFreeze | None:
        if train_params.freeze == "none":
            return None
        names = {name for name, _ in model.named_parameters()}
        if not classifier & names or not names - classifier:
            raise TrainingError(f"train.freeze=backbone: {train_params.model} has no separate classifier layer to "
                                "train alone (timm's get_classifier() finds none); set train.freeze=none")
        return cls(frozenset(classifier & names), train_params.freeze_epochs)

    def frozen_at(self, epoch: int) -> bool:
        return epoch < self.epochs

    def enter_epoch(self, model: nn.Module, epoch: int) -> bool:
        """Freeze or unfreeze `model` for `epoch`; True when that changed what trains."""
        frozen = self.frozen_at(epoch)
        changed = frozen != self.frozen
        for name, param in model.named_parameters():
            param.requires_grad_(not frozen or name in self.classifier)
        self.frozen = frozen
        return changed

    def hold_in_eval(self, model: nn.Module) -> None:
        """After the model's `train()`: while frozen, the backbone's BatchNorm layers back to eval mode."""
        if not self.frozen:
            return
        for name, module in model.named_modules():
            if isinstance(module, _BatchNorm) and not any(n.startswith(f"{name}.") for n in self.classifier):
                module.eval()

    def record(self, model: nn.Module) -> dict:
        """For the model file's meta: how long, and how many tensors trained while frozen."""
        params = [name for name, _ in model.named_parameters()]
        return {"epochs": self.epochs, "trained_while_frozen": sorted(self.classifier),
                "frozen_tensors": len([n for n in params if n not in self.classifier]), "tensors": len(params)}
