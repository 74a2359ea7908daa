"""Train options users set in params.yaml and rely on, each run for real: accumulation, clipping,
the step/multistep/plateau schedulers, torch.compile, device augmentation, DataLoader workers,
bf16 autocast, sync_bn, and optimizers other than SGD.

Every test trains a timm test model (`test_efficientnet_gn`: GroupNorm, 0.1M params, or
`test_resnet` where BatchNorm matters) for a few steps on tiny synthetic prepared data
(tests/support/synthetic_prepared.py) through `tinyclf.train.run.run_training`, and checks what the run
leaves behind: the model file, DVCLive's per-epoch logs, run.json and the resume checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from support.helpers import REPO, run, shrunk_params, venv_env, write_params
from support.synthetic_prepared import write_prepared

from tinyclf.evaluate.run import run_evaluation
from tinyclf.params import params_from_dict
from tinyclf.train.run import run_training

# GroupNorm: no batch statistics, so how a batch is split or sharded does not change the numbers.
GN = "test_efficientnet_gn"
FAST = dict(train__model=GN, train__crop="pad_crop", train__epochs=3)
CHANCE_LOSS = math.log(4)  # 4 classes

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """64 train (4 optimizer steps of 16 per epoch) / 16 val images, 4 classes."""
    return write_prepared(tmp_path_factory.mktemp("prepared"), num_classes=4, train_per_class=16, val_per_class=4)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """32 train (2 optimizer steps of 16 per epoch) / 8 val images: for runs of many epochs."""
    return write_prepared(tmp_path_factory.mktemp("small"), num_classes=4, train_per_class=8, val_per_class=2)


# ------------------------------------------------------------------------------ helpers
def train(tmp_path: Path, prepared: Path, name: str, **overrides) -> SimpleNamespace:
    """One run_training with FAST + overrides; returns what it wrote under tmp_path/name."""
    tree = shrunk_params(**{**FAST, **overrides})
    out = tmp_path / name
    result = run_training(params_from_dict(tree), prepared, out / "model.pt", out / "live", out / "ck",
                          progress_bar=False)
    model_file = torch.load(out / "model.pt", weights_only=True)
    return SimpleNamespace(
        out=out, tree=tree, result=result, state=model_file["state_dict"], meta=model_file["meta"],
        run=json.loads((out / "live" / "run.json").read_text()),
        summary=json.loads((out / "live" / "metrics.json").read_text()),
        lr=logged(out, "lr"),
    )


def logged(out: Path, metric: str) -> list[float]:
    """DVCLive's per-epoch values of `metric` (rows in step order 0, 1, …)."""
    rows = (out / "live" / "plots" / "metrics" / f"{metric}.tsv").read_text().splitlines()
    assert rows[0].split("\t") == ["step", metric.rsplit("/", 1)[-1]]
    body = [r.split("\t") for r in rows[1:]]
    assert [int(r[0]) for r in body] == list(range(len(body)))
    return [float(r[1]) for r in body]


def peak_lr(tree: dict) -> float:
    t = tree["train"]
    return t["lr"] * t["batch_size"] * t["accum_steps"] / 256


def cosine_lr(tree: dict, done: int, total: int) -> float:
    """timm's cosine (no warmup) after `done` of `total` optimizer steps, from the scaled peak to min_lr."""
    floor = tree["train"]["min_lr"]
    return floor + 0.5 * (peak_lr(tree) - floor) * (1 + math.cos(math.pi * done / total))


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point())


def numbers(summary: dict) -> dict:
    """DVCLive's summary without the timings (which differ between any two runs)."""
    return {k: v for k, v in summary.items() if k not in ("images_per_s", "epoch_time_s")}


def bitwise_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def assert_learned(r: SimpleNamespace) -> None:
    # 4 balanced classes, 16 val images: chance is 25% top-1 (10 of 16 right by luck: p < 0.001)
    # and a loss of ln 4 = 1.39.
    assert r.result["val"]["top1"] >= 10 / 16, r.result
    assert r.result["val"]["loss"] < 0.6 * CHANCE_LOSS, r.result


def initial_weights(tree: dict, num_classes: int = 4) -> dict:
    """The weights a run starts from: the timm model built from scratch right after seeding with train.seed."""
    import timm

    torch.manual_seed(tree["train"]["seed"] % 2**32)
    return timm.create_model(tree["train"]["model"], pretrained=False, num_classes=num_classes).state_dict()


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def stage_args(params_file: Path, prepared: Path, out: Path) -> list[str]:
    """The train stage's command line (after `python` or torchrun), as dvc.yaml runs it."""
    return ["stages/train.py", "--params", str(params_file), "--data", str(prepared), "--model-out",
            str(out / "model.pt"), "--live", str(out / "live"), "--checkpoints", str(out / "ck"), "--no-progress"]


# ------------------------------------------------------------------------------ 1. accum_steps
def test_accumulated_micro_batches_reach_the_weights_of_one_big_batch(tmp_path, prepared):
    """train.batch_size is the micro-batch: batch 8 x accum 2 is the same optimizer step as batch 16 x 1.

    Same images per step (the sampler order is per epoch, micro-batches are consecutive slices of it,
    augmentation is seeded per sample), the loss of each micro-batch is divided by accum_steps so the
    summed gradient is the mean over 16, and the peak lr is scaled by batch_size x accum_steps = 16
    either way; the steps per epoch are 64 // 16 = 4 in both. GroupNorm makes the forward pass
    independent of how the 16 images are split, so only float summation order differs.
    """
    # The workers backend, as when auto picked it on a CPU: with the device backend's crops this lr's
    # first epoch is unstable (loss above chance), which grows the float summation noise past the
    # rel 1e-5 below (the same holds for two processes: train/test_ddp.py).
    workers = dict(train__aug_backend="workers")
    big = train(tmp_path, prepared, "big", train__batch_size=16, train__accum_steps=1, **workers)
    accum = train(tmp_path, prepared, "accum", train__batch_size=8, train__accum_steps=2, **workers)
    small_steps = train(tmp_path, prepared, "small", train__batch_size=8, train__accum_steps=1, **workers)

    worst = max_diff(big.state, accum.state)
    assert worst < 1e-5, worst
    # The same schedule, logged per epoch, and the same optimizer-step count in the checkpoint.
    assert accum.lr == big.lr
    assert peak_lr(accum.tree) == peak_lr(big.tree) == 0.2 * 16 / 256
    assert big.lr == pytest.approx([cosine_lr(big.tree, 4 * e, 12) for e in (1, 2, 3)], rel=1e-9)
    for r in (big, accum):
        state = torch.load(r.out / "ck" / "last.pt", weights_only=True)
        assert state["update"] == 3 * 4 and state["complete"] is True
        assert r.run["train_images"] == 3 * 64
    assert accum.summary["train"]["loss"] == pytest.approx(big.summary["train"]["loss"], rel=1e-5)
    assert accum.summary["val"]["loss"] == pytest.approx(big.summary["val"]["loss"], rel=1e-5)
    assert accum.summary["val"]["top1"] == big.summary["val"]["top1"]
    # Not a comparison that any two runs pass: without accumulation (8 x 1: twice the steps at half
    # the lr) the weights end up far away, and the run did learn.
    assert small_steps.lr == pytest.approx([cosine_lr(small_steps.tree, 8 * e, 24) for e in (1, 2, 3)], rel=1e-9)
    assert max_diff(big.state, small_steps.state) > 1000 * worst
    assert_learned(big)


# ------------------------------------------------------------------------------ 2. clip_grad
def _displacement(state: dict, init: dict) -> float:
    # Parameters only (GroupNorm has no buffers; the model file holds exactly these tensors).
    assert state.keys() == init.keys()
    return math.sqrt(sum(((state[k].double() - init[k].double()) ** 2).sum().item() for k in init))


def test_clip_grad_bounds_how_far_the_weights_move(tmp_path, small):
    """train.clip_grad caps the global gradient norm at every optimizer step.

    SGD here is timm's `sgd`: Nesterov momentum m, no dampening, weight decay 0 (so only the
    gradients move the weights). With buf_t = m buf_{t-1} + g_t and step d_t = g_t + m buf_t, two
    steps at a constant lr move the weights by lr * ((1+m+m^2) g_1 + (1+m) g_2). Clipped, |g_t| <= c,
    and the first gradient (far above c at init) is clipped to exactly c, so
        lr c (1+m+m^2 - (1+m)) = lr c m^2  <=  |w_2 - w_0|  <=  lr c (2 + 2m + m^2).
    """
    c = 0.05
    common = dict(train__lr=1.6, train__epochs=1, train__weight_decay=0.0, train__momentum=0.9,
                  train__sched="step", train__decay_epochs=100)  # constant lr 1.6 x 16/256 = 0.1
    clipped = train(tmp_path, small, "clipped", train__clip_grad=c, **common)
    free = train(tmp_path, small, "free", train__clip_grad=0.0, **common)
    ck = torch.load(clipped.out / "ck" / "last.pt", weights_only=True)
    assert ck["update"] == 2
    assert [(g["nesterov"], g["momentum"], g["dampening"], g["weight_decay"]) for g in ck["optimizer"]["param_groups"]] \
        == [(True, 0.9, 0, 0.0)] * len(ck["optimizer"]["param_groups"])
    assert clipped.lr == [pytest.approx(0.1)]

    init = initial_weights(clipped.tree)
    lr, m = 0.1, 0.9
    moved = _displacement(clipped.state, init)
    low, high = lr * c * m**2, lr * c * (2 + 2 * m + m**2)
    assert low * (1 - 1e-4) <= moved <= high * (1 + 1e-4), (low, moved, high)
    # Unclipped, the same two steps go much further: the cap really bit.
    assert _displacement(free.state, init) > 10 * high


# ------------------------------------------------------------------------------ 3. schedulers
# What DVCLive logs as `lr` at step e is the optimizer's lr after epoch e has finished and the
# scheduler has been stepped, i.e. the lr epoch e+1 trains with (the first epoch's lr is never logged).
# step/multistep advance per optimizer step, decay_epochs and the milestones scaled to steps.
@pytest.mark.parametrize("sched, decay_epochs, batch_size, factors", [
    # step: x decay_rate every decay_epochs: epochs 0-1 at the peak, 2-3 halved, 4 quartered.
    ("step", 2, 16, [1, 0.5, 0.5, 0.25, 0.25]),
    # multistep: milestones at decay_epochs x 1, 2, 3 and no further decay after the third.
    ("multistep", 1, 16, [0.5, 0.25, 0.125, 0.125, 0.125]),
    # timm's multistep compares a milestone with t + 1 (its documented convention), t counting
    # optimizer steps here: each decay starts one step before its milestone epoch. With one step
    # per epoch (batch 32 on 32 images) that is a whole epoch early: 2nd, 4th, 6th milestone steps
    # decay the lr of epochs 1, 3, 5 (0-based), where `step` above decays epochs 2 and 4.
    ("multistep", 2, 32, [0.5, 0.5, 0.25, 0.25, 0.125]),
])
def test_step_schedulers_follow_their_milestones(tmp_path, small, sched, decay_epochs, batch_size, factors):
    r = train(tmp_path, small, f"{sched}{batch_size}", train__sched=sched, train__decay_epochs=decay_epochs,
              train__decay_rate=0.5, train__batch_size=batch_size, train__epochs=5, train__warmup_epochs=0)
    assert r.result["epochs"] == 5
    assert torch.load(r.out / "ck" / "last.pt", weights_only=True)["update"] == 5 * 32 // batch_size
    peak = peak_lr(r.tree)
    assert r.lr == pytest.approx([peak * f for f in factors], rel=1e-9)


def plateau_lrs(top1: list[float], peak: float, rate: float, min_lr: float) -> list[float]:
    """timm's plateau scheduler as tinyclf builds it: torch ReduceLROnPlateau on val top-1, mode max,
    timm's defaults (patience 10 epochs, relative threshold 1e-4, no cooldown), stepped once per epoch."""
    lr, best, bad, out = peak, -math.inf, 0, []
    for value in top1:
        if value > best * (1 + 1e-4):
            best, bad = value, 0
        else:
            bad += 1
        if bad > 10:
            new = max(lr * rate, min_lr)
            if lr - new > 1e-8:
                lr = new
            bad = 0
        out.append(lr)
    return out


def test_plateau_scheduler_decays_only_after_patience_without_improvement(tmp_path, small):
    # A tiny lr: val top-1 barely changes, so the plateau comes early and deterministically.
    r = train(tmp_path, small, "plateau", train__sched="plateau", train__decay_rate=0.5, train__lr=1e-4,
              train__min_lr=0.0, train__epochs=13, train__warmup_epochs=0)
    top1 = logged(r.out, "val/top1")
    peak = peak_lr(r.tree)
    expected = plateau_lrs(top1, peak, 0.5, 0.0)
    assert r.lr == pytest.approx(expected, rel=1e-9), (top1, r.lr)
    # The run did reach a plateau (otherwise this test would only show a constant lr) …
    assert expected[-1] < peak
    # … and the lr stayed at the peak through the 10 epochs of patience.
    first_decay = next(i for i, v in enumerate(r.lr) if v < peak)
    assert first_decay >= 11 and r.lr[:first_decay] == pytest.approx([peak] * first_decay)


def test_plateau_schedule_survives_an_interruption(tmp_path):
    """train/run.py promises that a resumed run continues the interrupted one exactly. With `plateau`
    that needs ReduceLROnPlateau's count of epochs without improvement in the checkpoint (timm's own
    state dict drops it): without it the lr decays up to 10 epochs later than uninterrupted."""
    prepared = write_prepared(tmp_path / "prepared", num_classes=4, train_per_class=32, val_per_class=2)
    # A tiny lr keeps val top-1 flat: every epoch after the first is one without improvement,
    # so the uninterrupted run decays after epoch 12 (index 11).
    tree = shrunk_params(**{**FAST, "train__sched": "plateau", "train__decay_rate": 0.5, "train__lr": 1e-6,
                            "train__min_lr": 0.0, "train__epochs": 13, "train__warmup_epochs": 0})
    ref = tmp_path / "ref"
    run_training(params_from_dict(tree), prepared, ref / "model.pt", ref / "live", ref / "ck", progress_bar=False)
    expected = logged(ref, "lr")
    if not expected[11] < expected[10] == expected[0]:
        raise RuntimeError(f"the uninterrupted run did not decay after epoch 12: {logged(ref, 'val/top1')}")

    out = tmp_path / "resumed"
    ck = out / "ck" / "last.pt"
    proc = subprocess.Popen([sys.executable] + stage_args(write_params(tmp_path / "params.yaml", tree), prepared, out),
                            cwd=REPO, env=venv_env(REPO), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while not (ck.exists() and torch.load(ck, weights_only=True)["epoch"] >= 2):
        if proc.poll() is not None or time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise RuntimeError(f"no checkpoint after 2 epochs before the run ended:\n{proc.communicate()[1]}")
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    stopped = torch.load(ck, weights_only=True)
    # Preconditions (RuntimeError, not an assertion, so a missed interruption is a real failure): it
    # stopped after at least one epoch without improvement and before the uninterrupted run's decay.
    if proc.returncode != 128 + signal.SIGTERM or stopped["complete"] or not 2 <= stopped["epoch"] <= 10:
        raise RuntimeError(f"interruption missed its window (rc {proc.returncode}, epoch {stopped['epoch']}):\n{err}")
    run_training(params_from_dict(tree), prepared, out / "model.pt", out / "live", out / "ck", progress_bar=False)

    assert logged(out, "lr") == expected


# ------------------------------------------------------------------------------ 4. compile
@pytest.mark.slow  # inductor builds C++ kernels with gcc: about a minute on 2 cores with a cold cache
def test_compile_learns_and_writes_plain_state_dict_keys(tmp_path, prepared):
    opts = dict(train__model="test_vit", train__epochs=2)  # a small graph: the quickest to compile
    compiled = train(tmp_path, prepared, "compiled", train__compile=True, **opts)
    eager = train(tmp_path, prepared, "eager", train__compile=False, **opts)
    assert compiled.run["compile"] is True and eager.run["compile"] is False
    # The model file loads into the plain architecture: no `_orig_mod.` from the compile wrapper.
    assert not [k for k in compiled.state if "_orig_mod" in k]
    assert compiled.state.keys() == eager.state.keys()
    assert_learned(compiled)
    # Compiled (fused) kernels round differently, so the weights are not bit-identical to eager ones
    # (two eager runs are: see the workers test), but it is the same training within float noise.
    assert not bitwise_equal(compiled.state, eager.state)
    assert max_diff(compiled.state, eager.state) < 1e-4
    assert compiled.summary["val"]["top1"] == eager.summary["val"]["top1"]


def test_the_training_step_of_tiny_resnet50_compiles_without_graph_breaks():
    """What `train.compile` compiles (the model's forward, in train mode, channels_last, and the
    loss of mixed soft targets) is one graph: a graph break would leave that part to Python on a GPU."""
    from timm.loss import SoftTargetCrossEntropy

    from tinyclf.model.architectures import create_model

    model = create_model("tiny_resnet50", 200).to(memory_format=torch.channels_last).train()
    loss_fn = SoftTargetCrossEntropy()
    x = torch.randn(4, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    target = torch.softmax(torch.randn(4, 200), dim=1)
    explained = torch._dynamo.explain(lambda images, soft: loss_fn(model(images), soft))(x, target)
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1


# ------------------------------------------------------------------------------ 5. device augmentation
def test_device_backend_learns_like_the_workers_backend(tmp_path, prepared):
    """The same recipe (pad-crop, flip, color jitter, erasing) with the data on the device: it learns
    as the per-image backend does, from its own random numbers, and says which backend it used."""
    recipe = dict(train__color_jitter=0.2, train__random_erasing=0.25, train__workers=0)
    device = train(tmp_path, prepared, "device", train__aug_backend="device", **recipe)
    workers = train(tmp_path, prepared, "workers", train__aug_backend="workers", **recipe)
    assert device.run["aug_backend"] == "device" and workers.run["aug_backend"] == "workers"
    assert device.meta["params"]["train"]["aug_backend"] == "device"
    assert_learned(device)
    assert_learned(workers)
    assert abs(device.result["val"]["loss"] - workers.result["val"]["loss"]) < 0.5 * CHANCE_LOSS
    assert max_diff(device.state, workers.state) > 1e-3  # other crops: other weights
    # auto is the device backend on a CPU too (no policy), and the workers backend with a policy.
    auto = train(tmp_path, prepared, "auto", train__aug_backend="auto", **recipe)
    assert auto.run["aug_backend"] == "device" and bitwise_equal(auto.state, device.state)
    from tinyclf.train.recipe import resolve_aug_backend

    for device_type in ("cpu", "cuda"):
        with_policy = params_from_dict(shrunk_params(train__policy="randaugment")).train
        assert resolve_aug_backend(with_policy, torch.device(device_type)) == "workers"
        assert resolve_aug_backend(params_from_dict(shrunk_params()).train, torch.device(device_type)) == "device"


# ------------------------------------------------------------------------------ 6. DataLoader workers
def test_loader_workers_change_nothing_in_training_or_evaluation(tmp_path, prepared):
    """Augmentation is seeded per sample from (seed, epoch, index) and the order comes from the
    sampler, so where the images are loaded (main process or 2 workers) cannot change a bit."""
    # The workers backend: the one that has DataLoader workers (auto picks the device backend here).
    main = train(tmp_path, prepared, "w0", train__workers=0, train__aug_backend="workers")
    workers = train(tmp_path, prepared, "w2", train__workers=2, train__aug_backend="workers")
    assert bitwise_equal(main.state, workers.state)
    assert numbers(workers.summary) == numbers(main.summary)
    assert workers.lr == main.lr

    outputs = {}
    for n in (0, 2):
        ep = params_from_dict(shrunk_params(evaluate__workers=n)).evaluate
        assert ep.workers == n
        out = tmp_path / f"eval{n}"
        run_evaluation(prepared, main.out / "model.pt", out, ep, progress=False)
        outputs[n] = {name: (out / name).read_bytes() for name in ("metrics.json", "predictions.csv", "per_class.json")}
    assert outputs[2] == outputs[0]
    assert json.loads(outputs[0]["per_class.json"])["num_images"] == 16


# ------------------------------------------------------------------------------ 7. bf16
def test_bf16_autocast_on_cpu_learns_and_is_recorded(tmp_path, prepared):
    bf16 = train(tmp_path, prepared, "bf16", train__precision="bf16", train__epochs=4)
    fp32 = train(tmp_path, prepared, "fp32", train__precision="fp32", train__epochs=4)
    assert bf16.run["precision"] == "bf16" and fp32.run["precision"] == "fp32"
    # What bf16 must guarantee is learning, not one epoch's top-1 on 16 images: bf16 rounding differs
    # between CPUs (with and without bf16 instructions), and on a Xeon without them top-1 dipped to
    # 8/16 at the last epoch while the loss was 0.43. The loss falls well below chance on any CPU.
    assert bf16.result["val"]["loss"] < 0.6 * CHANCE_LOSS, bf16.result
    # Autocast really ran in bfloat16 (8-bit mantissa): the weights differ from the fp32 run's …
    assert max_diff(bf16.state, fp32.state) > 1e-4
    # … while the saved weights themselves stay float32.
    assert {v.dtype for v in bf16.state.values() if v.is_floating_point()} == {torch.float32}


# ------------------------------------------------------------------------------ 8. sync_bn
def test_sync_bn_in_one_process_changes_nothing(tmp_path, small):
    """sync_bn converts BatchNorm to SyncBatchNorm only under DDP; in one process it is ignored
    (there is nothing to synchronize), so the run is bit-identical to sync_bn: false."""
    opts = dict(train__model="test_resnet", train__epochs=2)
    synced = train(tmp_path, small, "sync", train__sync_bn=True, **opts)
    plain = train(tmp_path, small, "plain", train__sync_bn=False, **opts)
    assert any(k.endswith("running_mean") for k in plain.state)  # a BatchNorm model
    assert bitwise_equal(synced.state, plain.state)
    assert numbers(synced.summary) == numbers(plain.summary)


def test_sync_bn_under_torchrun_on_cpu_stops_with_one_clear_line(tmp_path, small):
    tree = shrunk_params(train__model="test_resnet", train__crop="pad_crop", train__sync_bn=True)
    params_file = write_params(tmp_path / "params.yaml", tree)
    out = tmp_path / "out"
    proc = run(TORCHRUN + stage_args(params_file, small, out), REPO, venv_env(REPO), check=False, timeout=240)
    assert proc.returncode != 0
    # Rank 0 states the problem once, naming the key and the fix.
    lines = [line for line in proc.stderr.splitlines() if line.startswith("train:")]
    assert lines == ["train: train.sync_bn needs CUDA devices (torch's SyncBatchNorm has no CPU kernel); "
                     "set train.sync_bn=false for CPU runs"], proc.stderr
    # No traceback from the stage or the library (torchrun's own launcher prints its ChildFailedError).
    assert not re.search(r'File "[^"]*(stages/train\.py|tinyclf/)', proc.stderr), proc.stderr
    # The check comes before any conversion: no error from torch's SyncBatchNorm itself.
    assert "SyncBatchNorm" not in proc.stderr.replace("torch's SyncBatchNorm has no CPU kernel", "")
    # It stopped before writing anything.
    assert not out.exists(), sorted(str(p) for p in out.rglob("*"))


def test_an_error_every_rank_shares_is_printed_once_per_machine(tmp_path):
    """Every rank exits non-zero, but only the first process of each machine prints the shared message.
    Under torchrun -nproc_per_node=2 whether rank 1 gets to print before torchrun's SIGTERM is a
    race, so the check runs single processes in the environment torchrun gives them (RANK,
    LOCAL_RANK) with a params error every rank hits alike."""
    tree = shrunk_params(train__model="test_resnet")
    tree["train"]["sync_bn"] = "yes"  # not a boolean: the same ParamsError on every rank
    params_file = write_params(tmp_path / "params.yaml", tree)
    env = {**venv_env(REPO), "RANK": "1"}
    proc = run([sys.executable] + stage_args(params_file, tmp_path / "prepared", tmp_path / "out"), REPO, env,
               check=False, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "train.sync_bn" not in proc.stderr, proc.stderr
    # The first process of a second machine says it, naming its rank.
    env = {**venv_env(REPO), "RANK": "2", "LOCAL_RANK": "0"}
    proc = run([sys.executable] + stage_args(params_file, tmp_path / "prepared", tmp_path / "out"), REPO, env,
               check=False, timeout=120)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("train (rank 2): ") and "train.sync_bn" in lines[0], proc.stderr


# ------------------------------------------------------------------------------ 9. optimizer
def test_adamw_trains_and_really_is_adamw(tmp_path, prepared):
    r = train(tmp_path, prepared, "adamw", train__opt="adamw", train__lr=0.016, train__weight_decay=0.05)
    assert r.meta["params"]["train"]["opt"] == "adamw"
    assert r.lr == pytest.approx([cosine_lr(r.tree, 4 * e, 12) for e in (1, 2, 3)], rel=1e-9)
    assert_learned(r)
    ck = torch.load(r.out / "ck" / "last.pt", weights_only=True)
    opt = ck["optimizer"]
    # Adam's moment estimates for every parameter (SGD would keep one momentum_buffer instead).
    assert len(opt["state"]) == len(r.state)
    for state in opt["state"].values():
        assert set(state) == {"step", "exp_avg", "exp_avg_sq"}
        assert state["step"].item() == 3 * 4
    groups = opt["param_groups"]
    assert all(tuple(g["betas"]) == (0.9, 0.999) for g in groups)
    # timm's no-decay rule: 0.05 on weights, 0 on norm parameters and biases.
    assert sorted(g["weight_decay"] for g in groups) == [0.0, 0.05]
