"""Interrupt and resume: kill -9 mid-epoch, SIGTERM, then resume to the same weights as an uninterrupted run,
with the data loaded per image by workers and with the data and augmentation on the device; the
device case also fine-tunes (a backbone frozen for the first epoch, layer decay, a classifier lr
scale, drop path), killed while frozen and stopped after the switch, so the resumed run crosses it.

CPU, one thread, deterministic: the data order depends only on (seed, epoch) (class-balanced draws
with train.balance: sampler too), augmentation on (seed, epoch, index or draw position), and every RNG state is in the checkpoint, so the resumed run must match the
uninterrupted one bit for bit. Mixup, random erasing and EMA are on to make that a real claim
(they consume numpy, python and torch random streams).
"""

from __future__ import annotations

import json
import signal

import pytest
import torch
from support.helpers import shrunk_params, write_params
from support.synthetic_prepared import write_prepared
from support.train_stage import kill_when, start_stage, wait_for_checkpoint

from tinyclf.model.architectures import create_model
from tinyclf.params import params_from_dict
from tinyclf.train import checkpoint
from tinyclf.train.run import run_training

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("backend, balance, finetune", [("workers", "none", False), ("device", "none", True),
                                                       ("workers", "sampler", False)])
def test_kill_9_and_sigterm_then_resume_reach_the_uninterrupted_weights(tmp_path, backend, balance, finetune):
    prepared = write_prepared(tmp_path / "prepared", num_classes=4, train_per_class=32, val_per_class=8)
    finetuning = {}
    if finetune:
        torch.save(create_model("test_resnet", 7).state_dict(), tmp_path / "source.pt")
        # Two frozen epochs of the three: the kill below must land before the switch, and a poller on
        # a loaded machine missed every checkpoint of a single frozen epoch once (update 21 killed).
        finetuning = dict(train__init=str(tmp_path / "source.pt"), train__freeze="backbone", train__freeze_epochs=2,
                          train__layer_decay=0.7, train__head_lr_scale=10.0, train__drop_path=0.1)
    # 8 optimizer steps per epoch, 3 epochs; step checkpoints every 3 steps land mid-epoch.
    tree = shrunk_params(train__model="test_resnet", train__crop="pad_crop", train__lr=0.4, train__epochs=3,
                         train__deterministic=True, train__checkpoint_every_steps=3, train__mixup=0.2,
                         train__cutmix=1.0, train__random_erasing=0.25, train__ema=True, train__save_weights="ema",
                         train__aug_backend=backend, train__balance=balance, **finetuning)
    params_file = write_params(tmp_path / "params.yaml", tree)

    ref = tmp_path / "ref"
    run_training(params_from_dict(tree), prepared, ref / "model.pt", ref / "live", ref / "ck", progress_bar=False)

    out = tmp_path / "resumed"
    ck = out / "ck" / "last.pt"
    proc = start_stage(params_file, prepared, out)
    frozen_steps = 16 if finetune else None  # 8 optimizer steps per epoch
    kill_when(ck, proc, lambda state: state["micro_in_epoch"] > 0 and not state["complete"]
              and (frozen_steps is None or state["update"] < frozen_steps))
    killed = checkpoint.load(ck)
    assert not killed["complete"] and killed["micro_in_epoch"] > 0, "the kill should land mid-epoch"

    # Resume, then stop it politely: SIGTERM saves a checkpoint at the next step and exits 128 + 15.
    proc = start_stage(params_file, prepared, out)
    # Fine-tuning: past the switch at step 16 (the killed run was still frozen).
    stop_after = frozen_steps if finetune else killed["update"]
    wait_for_checkpoint(ck, proc, lambda state: state["update"] > stop_after)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in err and "run the stage again to resume" in err
    assert "resuming from" in err
    stopped = checkpoint.load(ck)
    assert not stopped["complete"] and stopped["update"] > killed["update"]

    run_training(params_from_dict(tree), prepared, out / "model.pt", out / "live", out / "ck", progress_bar=False)

    a = torch.load(ref / "model.pt", weights_only=True)
    b = torch.load(out / "model.pt", weights_only=True)
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    assert a["meta"] == b["meta"]
    if finetune:
        assert "the whole network trains from here" in err and a["meta"]["finetune"]["freeze"]["epochs"] == 2
    # The checkpoint's optimizer state matches as well (momentum buffers included).
    ca, cb = checkpoint.load(ref / "ck" / "last.pt"), checkpoint.load(ck)
    assert ca["update"] == cb["update"] == 24
    for key in ca["model"]:
        assert torch.equal(ca["model"][key], cb["model"][key]), key

    # DVCLive continued: one row per epoch, no duplicates, same final metrics.
    rows = (out / "live" / "plots" / "metrics" / "val" / "top1.tsv").read_text().splitlines()[1:]
    assert [r.split("\t")[0] for r in rows] == ["0", "1", "2"]
    ref_rows = (ref / "live" / "plots" / "metrics" / "val" / "top1.tsv").read_text().splitlines()[1:]
    assert [r.split("\t")[1] for r in rows] == [r.split("\t")[1] for r in ref_rows]
    ref_summary = json.loads((ref / "live" / "metrics.json").read_text())
    summary = json.loads((out / "live" / "metrics.json").read_text())
    assert summary["val"] == ref_summary["val"] and summary["train"] == ref_summary["train"]
