"""What the recipe decides from the card it runs on: the precision `auto` resolves to, and the run
log's line saying why. This machine has no GPU: the card's compute capability and name are patched
(torch.cuda.get_device_capability, get_device_name), nothing else."""

from __future__ import annotations

import pytest
import torch

from tinyclf.train.recipe import TrainingError, precision_note, resolve_precision

CUDA, CPU = torch.device("cuda", 0), torch.device("cpu")


@pytest.fixture
def card(monkeypatch):
    """Pretend the GPU is `card(name, (major, minor))`."""
    def pretend(name: str, capability: tuple[int, int]) -> None:
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    return pretend


@pytest.mark.parametrize("name, capability, expected", [
    ("Tesla T4", (7, 5), "fp16"), ("Tesla V100-SXM2-16GB", (7, 0), "fp16"),
    ("NVIDIA A100-SXM4-40GB", (8, 0), "bf16"), ("NVIDIA A40", (8, 6), "bf16"),
    ("NVIDIA H100 80GB HBM3", (9, 0), "bf16"),
])
def test_auto_takes_bf16_where_the_card_has_it_and_fp16_below_8_0(card, name, capability, expected):
    card(name, capability)
    assert resolve_precision("auto", CUDA) == expected
    note = precision_note("auto", CUDA)
    if expected == "fp16":  # the run log says what was picked, and why
        assert note == (f"train: precision auto -> fp16 with GradScaler: {name} (compute capability "
                        f"{capability[0]}.{capability[1]}) has no native bf16 (it needs 8.0)")
    else:
        assert note is None


def test_an_explicit_precision_is_kept_and_bf16_below_8_0_is_said(card):
    card("Tesla T4", (7, 5))
    assert [resolve_precision(p, CUDA) for p in ("bf16", "fp16", "fp32")] == ["bf16", "fp16", "fp32"]
    assert "bf16 is emulated or unsupported below compute capability 8.0" in precision_note("bf16", CUDA)
    assert precision_note("fp16", CUDA) is None and precision_note("fp32", CUDA) is None


def test_on_a_cpu_auto_is_fp32_and_fp16_is_refused():
    assert resolve_precision("auto", CPU) == "fp32" and precision_note("auto", CPU) is None
    with pytest.raises(TrainingError, match="train.precision=fp16 needs a CUDA device"):
        resolve_precision("fp16", CPU)
