"""The resume checkpoint's corners a CPU run does not reach by itself: GPU random states when a run
resumes with fewer visible GPUs, and what a resume sends between ranks.

This machine has no GPU: `FakeGpus` patches torch.cuda's device count, current device and RNG state
functions (only those), with torch's behaviour for a device index it does not have (IndexError).
The ranks are real gloo processes on loopback (support/gloo_ranks.py).
"""

from __future__ import annotations

import pickle

import torch
import torch.distributed as dist
from support.gloo_ranks import run_ranks

from tinyclf.train import checkpoint
from tinyclf.train.checkpoint import CheckpointError, capture_rng, restore_rng


class FakeGpus:
    """`count` visible GPUs, this process on `current`; each GPU's RNG state a distinct tensor."""

    def __init__(self, monkeypatch, count: int, current: int = 0):
        self.states = {i: torch.full((16,), i, dtype=torch.uint8) for i in range(count)}
        self.set_calls: list[int] = []
        for module in (torch.cuda, torch.cuda.random):
            monkeypatch.setattr(module, "is_available", lambda: True, raising=False)
            monkeypatch.setattr(module, "device_count", lambda: count)
            monkeypatch.setattr(module, "current_device", lambda: current)
            monkeypatch.setattr(module, "get_rng_state", self.get_rng_state)
            monkeypatch.setattr(module, "set_rng_state", self.set_rng_state)

    def _index(self, device) -> int:
        index = device if isinstance(device, int) else torch.device(device).index or 0
        if index not in self.states:  # torch: default_generators[index]
            raise IndexError("tuple index out of range")
        return index

    def get_rng_state(self, device="cuda") -> torch.Tensor:
        return self.states[self._index(device)].clone()

    def set_rng_state(self, new_state, device="cuda") -> None:
        index = self._index(device)
        self.states[index] = new_state.clone()
        self.set_calls.append(index)


def test_a_rank_saves_and_restores_its_own_gpus_random_state(monkeypatch):
    """Rank 1 of a 2-GPU node keeps GPU 1's state only, and a resume on a node where it sees one GPU
    puts that state on its own device."""
    FakeGpus(monkeypatch, count=2, current=1)
    saved = capture_rng()
    assert torch.equal(saved["cuda_device"], torch.full((16,), 1, dtype=torch.uint8))
    assert "cuda" not in saved  # no other GPU's state
    gpu = FakeGpus(monkeypatch, count=1, current=0)
    restore_rng(saved)
    assert gpu.set_calls == [0] and torch.equal(gpu.states[0], saved["cuda_device"])


def test_a_checkpoint_with_every_gpus_state_resumes_with_fewer_gpus(monkeypatch):
    """The older layout held every visible GPU's state: each rank takes its own device's entry, and
    one GPU visible now (the checkpoint saw two) is no IndexError."""
    old = {key: value for key, value in capture_rng().items() if key != "cuda_device"}
    old["cuda"] = [torch.full((16,), 7, dtype=torch.uint8), torch.full((16,), 8, dtype=torch.uint8)]
    gpu = FakeGpus(monkeypatch, count=1, current=0)
    restore_rng(old)
    assert gpu.set_calls == [0] and torch.equal(gpu.states[0], old["cuda"][0])
    two = FakeGpus(monkeypatch, count=2, current=1)  # the same layout on a node that still has both
    restore_rng(old)
    assert two.set_calls == [1] and torch.equal(two.states[1], old["cuda"][1])


# ------------------------------------------------------------------------------ resuming under DDP
def checkpoint_of(size_mb: float, update: int = 7) -> dict:
    """A checkpoint's state with `size_mb` of weights, at optimizer step `update` of epoch 1."""
    weights = torch.arange(int(size_mb * 2**20) // 4, dtype=torch.float32)
    return {"fingerprint": {"train.lr": 0.1}, "complete": False, "epoch": 1, "update": update, "micro_in_epoch": 3,
            "world_size": 2, "model": {"w": weights}, "ranks": []}


def resume_and_record(info, checkpoint_dirs: list[str]) -> dict:
    """On each rank: `checkpoint.resume_state` from this rank's folder, recording the bytes rank 0
    broadcasts (what `broadcast_object_list` pickles)."""
    sent = []
    broadcast = dist.broadcast_object_list

    def recording(objects, src=0, **kwargs):
        if info.rank == src:
            sent.append(len(pickle.dumps(objects)))
        return broadcast(objects, src=src, **kwargs)

    dist.broadcast_object_list = recording
    try:
        state = checkpoint.resume_state(checkpoint_dirs[info.rank], {"train.lr": 0.1}, info)
    except CheckpointError as exc:
        return {"error": str(exc), "sent": sent}
    return {"update": state["update"], "weights_sum": float(state["model"]["w"].double().sum()), "sent": sent}


def test_a_resume_broadcasts_the_decision_not_the_checkpoint(tmp_path):
    """Each rank reads the file itself: what rank 0 sends stays small whatever the model."""
    state = checkpoint_of(size_mb=4)
    checkpoint.save(tmp_path / "ck" / "last.pt", state)
    ranks = run_ranks(resume_and_record, 2, [str(tmp_path / "ck")] * 2)
    expected = float(state["model"]["w"].double().sum())
    assert [r.get("update") for r in ranks] == [7, 7] and all(r["weights_sum"] == expected for r in ranks), ranks
    assert sum(ranks[0]["sent"]) < 1024, ranks[0]["sent"]  # the checkpoint is 4 MB


def test_a_rank_that_sees_another_checkpoint_stops_every_rank(tmp_path):
    """Rank 1's node has no checkpoint, or another one: both ranks stop with the reason, none waits."""
    checkpoint.save(tmp_path / "shared" / "last.pt", checkpoint_of(size_mb=0.01))
    checkpoint.save(tmp_path / "other" / "last.pt", checkpoint_of(size_mb=0.01, update=5))
    for rank1_dir, reason in (("empty", "no checkpoint"), ("other", "'update': 5")):
        ranks = run_ranks(resume_and_record, 2, [str(tmp_path / "shared"), str(tmp_path / rank1_dir)])
        assert "another process could not read the checkpoint" in ranks[0]["error"], ranks
        assert ranks[1]["error"].startswith("rank 1: ") and reason in ranks[1]["error"], ranks
        assert "every node must see the same checkpoint folder" in ranks[1]["error"]

