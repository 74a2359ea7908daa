"""What only a GPU can show: mixed precision steps, compile, NCCL, determinism, device augmentation
and evaluation on CUDA agreeing with the CPU, a checkpoint moving between CUDA and CPU, and a
steady-state step that never waits for the GPU.

Marked `cuda`; every test skips without a CUDA device. `benchmarks/gpu_check.py` runs them
(`pytest -m cuda`) on a machine that has one. Sizes are small: the whole module takes about a
minute on one H100, most of it compiling.
"""

from __future__ import annotations

import json
import socket
import warnings

import pytest
import torch
from support.helpers import shrunk_params
from support.synthetic_prepared import write_prepared

from tinyclf.params import params_from_dict
from tinyclf.train.distributed import DistInfo
from tinyclf.train.engine import Progress, StepControl
from tinyclf.train.recipe import seed_everything
from tinyclf.train.run import run_training
from tinyclf.train.setup import stage_loop

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

CUDA = torch.device("cuda", 0)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return write_prepared(tmp_path_factory.mktemp("prepared"), num_classes=4, train_per_class=64, val_per_class=16)


def tree(**overrides) -> dict:
    return shrunk_params(**{"train__model": "tiny_resnet50", "train__epochs": 2, "train__batch_size": 32,
                            "train__crop": "pad_crop", **overrides})


def train(tmp_path, prepared, name: str, **overrides) -> dict:
    out = tmp_path / name
    result = run_training(params_from_dict(tree(**overrides)), prepared, out / "model.pt", out / "live", out / "ck",
                          progress_bar=False)
    return {"result": result, "run": json.loads((out / "live" / "run.json").read_text()),
            "state": torch.load(out / "model.pt", weights_only=True)["state_dict"]}


@pytest.mark.parametrize("precision, compile_", [("auto", "auto"), ("fp16", False), ("fp32", False)])
def test_a_cuda_run_in_each_precision(tmp_path, prepared, precision, compile_):
    """auto (bf16 from compute capability 8.0, else fp16) compiled, fp16 with its GradScaler, fp32:
    each trains and learns on the device backend (auto on CUDA)."""
    r = train(tmp_path, prepared, precision, train__precision=precision, train__compile=compile_)
    run = r["run"]
    native_bf16 = torch.cuda.get_device_capability(CUDA) >= (8, 0)
    expected = ("bf16" if native_bf16 else "fp16") if precision == "auto" else precision
    assert run["device_type"] == "cuda" and run["precision"] == expected and run["aug_backend"] == "device"
    assert run["compile"] is (compile_ == "auto")
    assert run["gpu_hours"] > 0 and (run["mfu"] is None or run["mfu"] > 0)
    assert r["result"]["val"]["top1"] > 0.5  # 4 classes: chance 0.25
    assert all(torch.isfinite(t).all() for t in r["state"].values() if t.is_floating_point())


def test_nccl_process_group_all_reduces():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    torch.distributed.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1,
                                         device_id=CUDA)
    try:
        t = torch.arange(4.0, device=CUDA)
        torch.distributed.all_reduce(t)
        assert t.tolist() == [0.0, 1.0, 2.0, 3.0]
    finally:
        torch.distributed.destroy_process_group()


def test_deterministic_training_on_cuda_repeats_bit_for_bit(tmp_path, prepared):
    """tiny_resnet50 pools with a mean, whose CUDA backward is deterministic (AdaptiveAvgPool2d's is
    not): two deterministic runs give the same weights. A timm model using AdaptiveAvgPool2d runs too
    (torch warns about that op instead of refusing)."""
    a = train(tmp_path, prepared, "a", train__deterministic=True, train__compile=False)
    b = train(tmp_path, prepared, "b", train__deterministic=True, train__compile=False)
    assert a["state"].keys() == b["state"].keys()
    assert all(torch.equal(a["state"][k], b["state"][k]) for k in a["state"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        timm_run = train(tmp_path, prepared, "timm", train__model="resnet18", train__deterministic=True,
                         train__compile=False)
    assert timm_run["run"]["device_type"] == "cuda"


def test_device_augmentation_is_the_same_on_cuda_and_cpu():
    """Integer draws are identical. Float kernels (grid_sample, log/cos) differ in the last bits, and
    a box side computed with exp and sqrt within a hair of x.5 may round to another pixel on CUDA:
    exactly those samples (support/device_rounding.py) may differ, no others, and they are few."""
    from support.device_rounding import near_a_rounding

    from tinyclf.augment.device import DeviceAugment, sample_keys, uniforms
    from tinyclf.params import TrainParams

    indices = torch.arange(1000, 1256)
    assert torch.equal(uniforms(sample_keys(3, 2, indices.to(CUDA)), 44).cpu(), uniforms(sample_keys(3, 2, indices), 44))
    images = torch.randint(0, 256, (len(indices), 3, 32, 32), dtype=torch.uint8)
    for crop in ("pad_crop", "random_resized_crop"):
        tp = TrainParams(crop=crop, color_jitter=0.3, random_erasing=0.25)
        aug = DeviceAugment(tp, 32, [0.5] * 3, [0.25] * 3, seed=3, channels_last=True)
        on_cpu = aug(images, indices, epoch=2)
        on_cuda = aug(images.to(CUDA), indices.to(CUDA), epoch=2).cpu()
        differ = (on_cpu - on_cuda).abs().flatten(1).amax(dim=1) >= 1e-3
        near = near_a_rounding(aug, 32, 32, indices, epoch=2)
        assert not (differ & ~near).any(), (crop, (differ & ~near).nonzero().flatten().tolist())
        assert near.float().mean() < 0.1, crop


def _steady_loop(prepared, device, **overrides):
    """The stage's loop on `device` (precision auto: bf16 on CUDA, fp32 on the CPU), uncompiled."""
    train_params = params_from_dict(tree(**{"train__compile": False, **overrides})).train
    return stage_loop(prepared, train_params, DistInfo(rank=0, world_size=1, local_rank=0, local_world_size=1,
                                                       device=device))


def test_a_checkpoint_moves_from_cuda_to_cpu_and_back(tmp_path, prepared):
    from tinyclf.train.checkpoint import RunCheckpoint, load

    fingerprint = {"test": "cuda-cpu"}
    progress = Progress()
    for device in (CUDA, torch.device("cpu"), CUDA):
        loop = _steady_loop(prepared, device)
        ckpt = RunCheckpoint(tmp_path / "ck", fingerprint, loop.parts, loop.info)
        if (tmp_path / "ck" / "last.pt").exists():
            progress = Progress()
            assert ckpt.restore(load(tmp_path / "ck" / "last.pt"), progress)
        before, plan = progress.update, loop.data.plan
        metrics = loop.steps(loop.data.train_batches.epoch(progress.epoch), plan.micro_per_epoch, progress=progress,
                             control=StepControl(sync_every=4))
        progress.end_epoch(metrics["seconds"], metrics["images"])
        assert progress.update == before + plan.updates_per_epoch and 0 < metrics["loss"] < 10
        ckpt.save(progress)
    assert progress.epoch == 3


def test_evaluate_on_cuda_equals_evaluate_on_cpu(tmp_path, prepared):
    from tinyclf.evaluate.run import run_evaluation
    from tinyclf.params import EvaluateParams

    train(tmp_path, prepared, "model", train__compile=False)
    model = tmp_path / "model" / "model.pt"
    on = {name: run_evaluation(prepared, model, tmp_path / name, EvaluateParams(workers=0), device=device,
                               progress=False)["metrics"]
          for name, device in (("cpu", torch.device("cpu")), ("cuda", CUDA))}
    assert abs(on["cpu"]["loss"] - on["cuda"]["loss"]) < 1e-3
    assert abs(on["cpu"]["top1"] - on["cuda"]["top1"]) <= 1 / 64  # at most one of 64 images flips


@pytest.mark.parametrize("backend, device_data", [("device", "auto"), ("device", "host"), ("workers", "auto")])
def test_a_steady_state_step_never_waits_for_the_gpu(prepared, backend, device_data):
    """CUDA's sync detector during an epoch with sync_every 1000: only the epoch's last step may read,
    on either data backend and with the device backend's splits in host memory (pinned staging
    buffers, non-blocking copies; no tensor from Python data per batch: train/test_sync_free.py)."""
    loop = _steady_loop(prepared, CUDA, train__aug_backend=backend, train__workers=1, train__device_data=device_data)
    seed_everything(0)
    batches, control = loop.data.train_batches, StepControl(sync_every=1000)
    loop.steps(batches.epoch(0), 4, control=control)  # warm-up: lazy state, cuDNN choices
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            loop.steps(batches.epoch(1), loop.data.plan.micro_per_epoch, progress=Progress(epoch=1), control=control)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
    # The epoch's order copied to the device once, and the sums read once at the end.
    assert len(syncs) <= 3, [str(w.message) for w in syncs]
