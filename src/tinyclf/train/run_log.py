"""What rank 0 of a training run tells the user: DVCLive metrics per epoch and the console lines.

DVCLive writes `<live_dir>/metrics.json` (the last values) and one TSV per metric under
`<live_dir>/plots/metrics/` (step = epoch index), which dvc.yaml declares as plots. Logged per
epoch: `train/loss`, `train/acc`, `val/loss`, `val/top1`, `val/top5` (the weights saved to model.pt),
`val_raw/*` or `val_ema/*` (the other set, when EMA is on), `lr`, `images_per_s`, `epoch_time_s`.
`mfu` (CUDA only, `tinyclf.train.cost`): model FLOPs utilization of the epoch.
metrics.json also holds `selected`: the epoch the model file kept, by which metric, its value and
whether the run stopped early (`tinyclf.train.selection`).
`lr` is the learning rate after the epoch's last scheduler step: with per-step schedules, the one
the next epoch starts with (timm's per-step rate changes within every epoch). It is the schedule's
rate: with `train.layer_decay` or `train.head_lr_scale`, each parameter group learns at it times the
group's scale (the model file's meta `finetune` lists the scales; `tinyclf.train.param_groups`).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from tinyclf import atomic

VAL_METRICS = ("loss", "top1", "top5")


def trim_live_history(live_dir: Path, keep_steps: int) -> None:
    """Drop DVCLive plot rows with step >= keep_steps: an epoch logged after the last checkpoint is
    re-run on resume and must not appear twice."""
    metrics_dir = live_dir / "plots" / "metrics"
    if not metrics_dir.is_dir():
        return
    for tsv in metrics_dir.rglob("*.tsv"):
        with open(tsv, newline="") as fh:
            rows = list(csv.reader(fh, delimiter="\t"))
        if not rows or "step" not in rows[0]:
            continue
        header, body = rows[0], rows[1:]
        step_col = header.index("step")
        kept = [r for r in body if r and int(r[step_col]) < keep_steps]
        if len(kept) != len(body):
            lines = ["\t".join(header)] + ["\t".join(r) for r in kept]
            atomic.write_text(tsv, "\n".join(lines) + "\n")


def say(line: str) -> None:
    """One console line for the user (stderr: stdout stays free for results)."""
    print(line, file=sys.stderr)


class RunLog:
    """DVCLive and console output of one run (create it on rank 0 only)."""

    def __init__(self, live_dir: Path, params_dict: dict, *, start_epoch: int, resuming: bool):
        from dvclive import Live

        if resuming:
            trim_live_history(live_dir, start_epoch)
        # resume=True keeps the history (Live() deletes its directory otherwise); dvcyaml=None because
        # our dvc.yaml declares the plots.
        self.live = Live(dir=str(live_dir), resume=resuming, dvcyaml=None, save_dvc_exp=False, report=None)
        self.live.step = start_epoch
        self.live.log_params(params_dict)

    def log_epoch(self, epoch: int, num_epochs: int, train: dict, evals: dict[str, dict], main_key: str,
                  lr: float, mfu: float | None = None) -> None:
        """Log one finished epoch: `evals[main_key]` as val/*, the other weights as val_<key>/*."""
        live, val = self.live, evals[main_key]
        live.log_metric("train/loss", train["loss"])
        live.log_metric("train/acc", train["acc"])
        for name in VAL_METRICS:
            live.log_metric(f"val/{name}", val[name])
        for other, ev in evals.items():
            if other != main_key:
                for name in VAL_METRICS:
                    live.log_metric(f"val_{other}/{name}", ev[name])
        live.log_metric("lr", lr)
        live.log_metric("images_per_s", train["images_per_s"])
        live.log_metric("epoch_time_s", train["seconds"])
        if mfu is not None:  # CUDA on a card of known peak only (tinyclf.train.cost)
            live.log_metric("mfu", mfu)
        live.next_step()
        mfu_text = f", MFU {mfu:.1%}" if mfu is not None else ""
        say(f"epoch {epoch + 1}/{num_epochs}: train loss {train['loss']:.4f} acc {train['acc']:.4f} | "
            f"val loss {val['loss']:.4f} top-1 {val['top1']:.4f} top-5 {val['top5']:.4f} | "
            f"{train['images_per_s']:.0f} img/s{mfu_text}")

    def end(self, selected: dict) -> None:
        """Close the run's DVCLive log with the epoch the model file kept (`EpochSelection.record`)
        beside the last values in metrics.json, and say which epoch that is and why the run ended."""
        self.live.summary["selected"] = {"epoch": selected["epoch"], "metric": selected["metric"],
                                         "value": selected["value"], "stopped_early": selected["stopped_early"]}
        self.live.end()
        if selected["stopped_early"]:
            say(f"train: stopped early after epoch {selected['epochs_run']}: {selected['stop_reason']}")
        say(f"train: the model file keeps epoch {selected['epoch']} of {selected['epochs_run']} "
            f"({selected['metric']} {selected['value']:.4f}, train.keep: {selected['keep']})")
