"""The train stage: it learns, the recipe is timm's, bad states stop with one clear line.

Tiny synthetic prepared data (tests/support/synthetic_prepared.py), timm's `test_resnet` (0.37M params) at
32 px, one CPU thread: each run takes seconds.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from support.helpers import REPO, run, shrunk_params, venv_env, write_params
from support.synthetic_prepared import write_prepared

from tinyclf.model.file import load_model_file
from tinyclf.params import params_from_dict
from tinyclf.train import checkpoint
from tinyclf.train.engine import NonFiniteLossError
from tinyclf.train.recipe import StepPlan, TrainingError, build_optimizer, build_scheduler, plan_steps, scaled_lr
from tinyclf.train.run import run_training

FAST = dict(train__model="test_resnet", train__crop="pad_crop", train__lr=0.4, train__epochs=3)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return write_prepared(tmp_path_factory.mktemp("prepared"), num_classes=4, train_per_class=32, val_per_class=16)


def make_params(**overrides):
    return params_from_dict(shrunk_params(**{**FAST, **overrides}))


def train(tmp_path: Path, prepared: Path, params):
    return run_training(params, prepared, tmp_path / "models" / "model.pt", tmp_path / "live", tmp_path / "ck",
                        progress_bar=False)


def test_short_run_learns_and_writes_every_output(tmp_path, prepared):
    params = make_params(train__ema=True, train__ema_decay=0.9998, train__save_weights="ema",
                         train__mixup=0.2, train__cutmix=1.0, train__random_erasing=0.25)
    result = train(tmp_path, prepared, params)
    # 4 classes: chance is 25%. Mixup, cutmix and erasing on, EMA weights evaluated and saved.
    assert result["val"]["top1"] >= 0.75, result
    assert result["val"]["count"] == 64

    model, meta = load_model_file(tmp_path / "models" / "model.pt")
    assert meta["weights"] == "ema" and meta["epochs_trained"] == 3 and meta["generated"] is True
    assert meta["num_classes"] == 4 and meta["image_size"] == 32 and meta["model"] == "test_resnet"
    assert [c["id"] for c in meta["classes"]] == [f"g{i:07d}" for i in range(4)]
    assert meta["params"]["train"]["lr"] == 0.4
    assert len(meta["mean"]) == 3 and len(meta["std"]) == 3

    live = tmp_path / "live"
    summary = json.loads((live / "metrics.json").read_text())
    assert summary["step"] == 2
    for key in ("loss", "acc"):
        assert math.isfinite(summary["train"][key])
    assert set(summary["val"]) == {"loss", "top1", "top5"}
    assert "val_raw" in summary  # the raw weights are validated next to the EMA
    for name in ("train/loss", "train/acc", "val/loss", "val/top1", "val/top5", "lr", "images_per_s", "epoch_time_s"):
        rows = (live / "plots" / "metrics" / f"{name}.tsv").read_text().splitlines()
        assert [r.split("\t")[0] for r in rows[1:]] == ["0", "1", "2"], name
    assert not (live / "dvc.yaml").exists()  # our dvc.yaml declares the plots, DVCLive must not write its own
    run_info = json.loads((live / "run.json").read_text())
    assert run_info["world_size"] == 1 and run_info["precision"] == "fp32" and run_info["images_per_s"] > 0
    assert run_info["train_images"] == 3 * 8 * 16
    # No GPU, no GPU-hours or MFU: "n/a" (None), never a made-up zero. train.aug_backend: auto picks
    # the device backend on a CPU too (no albumentations policy).
    assert run_info["gpu_hours"] is None and run_info["mfu"] is None and run_info["aug_backend"] == "device"

    # The finished checkpoint stays but is marked complete, so a new run starts fresh.
    state = checkpoint.load(tmp_path / "ck" / "last.pt")
    assert state["complete"] is True and state["epoch"] == 3 and state["update"] == 24
    assert checkpoint.resume_decision(tmp_path / "ck" / "last.pt", {"anything": "else"}) is None


def test_recipe_uses_timm_pieces_as_documented(prepared):
    params = make_params(train__batch_size=32, train__accum_steps=2, train__lr=0.1, train__weight_decay=5e-4,
                         train__warmup_epochs=1, train__warmup_lr=1e-5, train__epochs=4)
    tp = params.train
    assert scaled_lr(tp) == pytest.approx(0.1 * 32 * 2 / 256)
    from tinyclf.model.architectures import create_model

    model = create_model("test_resnet", 4)
    opt = build_optimizer(model, tp)
    by_decay = {g["weight_decay"]: g["params"] for g in opt.param_groups}
    names = {id(p): n for n, p in model.named_parameters()}
    # timm's filter_bias_and_bn: no decay on 1-D params (norm weights/biases, biases), decay on the rest.
    assert all(p.ndim <= 1 for p in by_decay[0.0]) and all(p.ndim > 1 for p in by_decay[5e-4])
    assert any("bn" in names[id(p)] for p in by_decay[0.0])
    plan = plan_steps(128, tp, world=1)
    assert plan == StepPlan(per_rank=32, updates_per_epoch=2, micro_per_epoch=4)
    sched, epochs = build_scheduler(opt, tp, plan.updates_per_epoch)
    assert epochs == 4
    sched.step_update(num_updates=0)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-5)  # warmup starts at warmup_lr
    peak = scaled_lr(tp)
    sched.step_update(num_updates=1)  # linear warmup over warmup_epochs x 2 steps
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-5 + (peak - 1e-5) / 2)
    sched.step_update(num_updates=2)  # timm's warmup sits inside the cosine (warmup_prefix=False)
    assert opt.param_groups[0]["lr"] == pytest.approx(tp.min_lr + (peak - tp.min_lr) * 0.5 * (1 + math.cos(math.pi * 2 / 8)))
    sched.step_update(num_updates=5)  # per step, not per epoch: mid-decay values differ step to step
    mid = opt.param_groups[0]["lr"]
    sched.step_update(num_updates=6)
    assert tp.min_lr < opt.param_groups[0]["lr"] < mid < scaled_lr(tp)


def test_impossible_batch_plans_fail_early():
    tp = make_params(train__batch_size=15, train__mixup=0.2).train
    with pytest.raises(TrainingError, match="even batch"):
        plan_steps(128, tp, world=1)
    with pytest.raises(TrainingError, match="not divisible by the 2 processes"):
        plan_steps(128, tp, world=2)
    with pytest.raises(TrainingError, match="fewer than one optimizer step"):
        plan_steps(10, make_params(train__batch_size=16).train, world=1)


def test_non_finite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path, prepared):
    # lr 1e6 blows the weights up within a few steps; a checkpoint follows every good step.
    params = make_params(train__lr=1.0e6, train__checkpoint_every_steps=1, train__label_smoothing=0.0,
                         train__warmup_epochs=0, train__epochs=3)
    with pytest.raises(NonFiniteLossError, match=r"non-finite training loss at optimizer step (\d+)") as err:
        train(tmp_path, prepared, params)
    bad_step = int(__import__("re").search(r"optimizer step (\d+)", str(err.value)).group(1))
    state = checkpoint.load(tmp_path / "ck" / "last.pt")
    assert state["complete"] is False
    # The checkpoint is the step before the bad one (epoch-end checkpoints follow a whole good epoch).
    assert state["update"] == bad_step - 1
    for name, tensor in state["model"].items():
        if tensor.is_floating_point():
            assert torch.isfinite(tensor).all(), name
    assert not (tmp_path / "models" / "model.pt").exists()


def test_mismatched_checkpoint_is_refused_by_the_stage_in_one_line(tmp_path, prepared):
    # An unfinished checkpoint: the run above stops on a non-finite loss after writing some.
    with pytest.raises(NonFiniteLossError):
        train(tmp_path, prepared, make_params(train__lr=1.0e6, train__checkpoint_every_steps=1,
                                              train__label_smoothing=0.0))
    assert (tmp_path / "ck" / "last.pt").exists()
    changed = shrunk_params(**{**FAST, "train__lr": 1.0e6, "train__checkpoint_every_steps": 1,
                               "train__label_smoothing": 0.0, "train__model": "resnet18", "data__image_size": 16})
    params_file = write_params(tmp_path / "params.yaml", changed)
    env = venv_env(REPO)
    proc = run([sys.executable, "stages/train.py", "--params", str(params_file), "--data", str(prepared),
                "--model-out", str(tmp_path / "m.pt"), "--live", str(tmp_path / "live2"),
                "--checkpoints", str(tmp_path / "ck"), "--no-progress"], REPO, env, check=False, timeout=120)
    assert proc.returncode == 1, proc.stderr
    message = [line for line in proc.stderr.splitlines() if line.startswith("train:")]
    assert len(message) == 1, proc.stderr
    assert "train.model: 'test_resnet' -> 'resnet18'" in message[0]
    assert "data.image_size: 32 -> 16" in message[0]
    assert "delete" in message[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize("backend", ["workers", "device"])
def test_training_and_the_choice_of_epoch_never_read_the_test_split(tmp_path, backend):
    """A test split whose files are not arrays at all: any read of them (loading, statistics, selection)
    would fail the run."""
    prepared = write_prepared(tmp_path / "prepared", num_classes=4, train_per_class=8, val_per_class=4)
    (prepared / "test").mkdir()
    for name in ("images.npy", "labels.npy"):
        (prepared / "test" / name).write_bytes(b"not an array: training must not open this")
    stats = json.loads((prepared / "stats.json").read_text())
    stats["splits"]["test"] = stats["splits"]["val"]
    (prepared / "stats.json").write_text(json.dumps(stats))
    tree = shrunk_params(train__model="test_resnet", train__crop="pad_crop", train__epochs=2, train__keep="best",
                         train__patience=1, train__aug_backend=backend, train__workers=1)
    result = run_training(params_from_dict(tree), prepared, tmp_path / "model.pt", tmp_path / "live",
                          tmp_path / "ck", progress_bar=False)
    assert result["epochs"] >= 1 and load_model_file(tmp_path / "model.pt")[1]["selected"]["keep"] == "best"
