"""Which epoch's weights the model file gets (`train.keep`), and when a run stops early (`train.patience`).

After each epoch's validation, `EpochSelection.observe` compares the selected metric
(`train.select_metric`: val/top1, val/top5 or val/loss, of the weights `train.save_weights` names)
with the best so far. An epoch is an improvement when it beats the best by more than
`train.min_delta` (the first epoch always is). With `keep: best` rank 0 keeps a copy of the
improving epoch's weights (on the device they live on: a copy, no wait for the host), and the
model file gets them; with `keep: last` the last epoch's weights, as before. With `patience: N > 0`
the run stops once N epochs in a row did not improve.

Everything here is part of the resume checkpoint (`state`/`load_state`), the best weights included,
so a run killed during a patience window and resumed stops at the same epoch with the same weights.
Every rank decides from rank 0's value (the caller broadcasts it), so under DDP all ranks stop at
the same epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

# The metrics of tinyclf.params.SELECT_METRICS where a smaller value is better; the others are accuracies.
SMALLER_IS_BETTER = frozenset({"val/loss"})


@dataclass
class EpochSelection:
    keep: str  # best or last
    metric: str  # one of tinyclf.params.SELECT_METRICS
    patience: int = 0  # 0: never stop early
    min_delta: float = 0.0
    best_epoch: int = -1  # 0-based; -1: no epoch observed yet
    best_value: float | None = None
    last_epoch: int = -1
    last_value: float | None = None
    epochs_without_improvement: int = 0
    stopped_early: bool = False
    best_weights: dict[str, torch.Tensor] | None = None  # rank 0, keep: best

    @classmethod
    def from_params(cls, train_params) -> EpochSelection:
        return cls(keep=train_params.keep, metric=train_params.select_metric, patience=train_params.patience,
                   min_delta=train_params.min_delta)

    @property
    def value_key(self) -> str:
        """The key of `engine.evaluate`'s result that the metric reads."""
        return self.metric.split("/", 1)[1]

    def improves(self, value: float) -> bool:
        if self.best_value is None:
            return True
        if self.metric in SMALLER_IS_BETTER:
            return value < self.best_value - self.min_delta
        return value > self.best_value + self.min_delta

    def observe(self, epoch: int, value: float, weights: nn.Module, *, keep_copy: bool) -> bool:
        """Record epoch `epoch`'s value; returns True when it is the new best. `weights` is the module the
        model file gets; `keep_copy`: this process keeps the best weights (rank 0 with keep: best)."""
        self.last_epoch, self.last_value = epoch, value
        improved = self.improves(value)
        if improved:
            self.best_epoch, self.best_value = epoch, value
            self.epochs_without_improvement = 0
            if keep_copy and self.keep == "best":
                self.best_weights = {k: v.detach().clone() for k, v in weights.state_dict().items()}
        else:
            self.epochs_without_improvement += 1
        self.stopped_early = 0 < self.patience <= self.epochs_without_improvement
        return improved

    @property
    def selected_epoch(self) -> int:
        return self.best_epoch if self.keep == "best" else self.last_epoch

    def weights_to_save(self, last: nn.Module) -> nn.Module | dict[str, torch.Tensor]:
        """What the model file gets: the best epoch's weights with keep: best, else `last`."""
        if self.keep == "best" and self.best_weights is not None:
            return self.best_weights
        return last

    def stop_reason(self) -> str:
        return (f"{self.metric} has not improved by more than {self.min_delta:g} for {self.patience} epochs "
                f"(best {self.best_value:.4f} at epoch {self.best_epoch + 1})")

    def record(self, epochs_run: int) -> dict:
        """Plain facts for the model file's meta, run.json, DVCLive and the report (epochs 1-based)."""
        selected = self.selected_epoch
        value = self.best_value if self.keep == "best" else self.last_value
        return {"keep": self.keep, "metric": self.metric, "epoch": selected + 1, "value": value,
                "best_epoch": self.best_epoch + 1, "best_value": self.best_value, "epochs_run": epochs_run,
                "patience": self.patience, "min_delta": self.min_delta, "stopped_early": self.stopped_early,
                "stop_reason": self.stop_reason() if self.stopped_early else None}

    # ------------------------------------------------------------------------- the checkpoint's part
    def state(self) -> dict:
        return {"best_epoch": self.best_epoch, "best_value": self.best_value, "last_epoch": self.last_epoch,
                "last_value": self.last_value, "epochs_without_improvement": self.epochs_without_improvement,
                "stopped_early": self.stopped_early, "best_weights": self.best_weights}

    def load_state(self, state: dict | None) -> None:
        if not state:
            return
        for key in ("best_epoch", "last_epoch", "epochs_without_improvement"):
            setattr(self, key, int(state[key]))
        for key in ("best_value", "last_value"):
            setattr(self, key, None if state[key] is None else float(state[key]))
        self.stopped_early = bool(state["stopped_early"])
        self.best_weights = state.get("best_weights")
