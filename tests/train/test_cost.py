"""What a run cost: FLOPs per image, MFU against the card's peak, GPU-hours and a price; "n/a" on a CPU."""

from __future__ import annotations

import pytest

from tinyclf.report.facts import cost_text, mfu_text
from tinyclf.train import cost
from tinyclf.train.cost import RunCost, mfu, peak_flops, train_flops_per_image


def test_training_one_reference_image_costs_6_6_gflop():
    # 3 x the forward's conv FLOPs: 2 x 1,095,385,288 mult-adds less the two biased convs' adds.
    assert train_flops_per_image("tiny_resnet50", 200, 64) == 3 * 2 * (1_095_385_288 - 64 * 64 * 64 - 200)
    assert f"{train_flops_per_image('tiny_resnet50', 200, 64) / 1e9:.1f}" == "6.6"
    assert train_flops_per_image("resnet18", 10, 32) > 0  # a timm model counts too


@pytest.mark.parametrize("name, tflops", [
    ("NVIDIA H100 80GB HBM3", 989.4), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H200", 989.4),
    ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA A40", 149.7), ("NVIDIA L40S", 362.1), ("NVIDIA L4", 121.0),
])
def test_peak_of_known_cards(name, tflops):
    assert peak_flops(name) == tflops * 1e12


# Each card as torch.cuda.get_device_name() names it, with the entry that must price it: several
# names hold a shorter entry too ("NVIDIA GH200 480GB" holds "H200", "NVIDIA L40S" holds "L4").
CARDS = [
    ("NVIDIA H200 NVL", "H200 NVL", 835.0), ("NVIDIA H200", "H200", 989.4), ("NVIDIA GH200 480GB", "GH200", 989.4),
    ("NVIDIA H100 80GB HBM3", "H100", 989.4), ("NVIDIA H100 PCIe", "H100 PCIe", 756.0),
    ("NVIDIA H100 NVL", "H100 NVL", 835.0), ("NVIDIA A100-SXM4-80GB", "A100", 312.0),
    ("NVIDIA A100 80GB PCIe", "A100", 312.0), ("NVIDIA A10G", "A10G", 70.0), ("NVIDIA A10", "A10", 125.0),
    ("NVIDIA L40S", "L40S", 362.1), ("NVIDIA L40", "L40", 181.0), ("NVIDIA L4", "L4", 121.0),
    ("NVIDIA A40", "A40", 149.7),
]


@pytest.mark.parametrize("name, entry, tflops", CARDS)
def test_each_card_is_priced_by_its_own_entry(name, entry, tflops):
    assert peak_flops(name) == tflops * 1e12
    assert cost.peak_entry(name) == entry  # GH200 and H200 share a peak: only the entry tells them apart


@pytest.mark.parametrize("order", ["as written", "reversed"])
def test_no_entry_can_shadow_another_whatever_the_order(monkeypatch, order):
    table = dict(cost.PEAK_BF16_TFLOPS)
    if order == "reversed":  # "A10" ahead of "A100", "L4" ahead of "L40S": a first match would misprice those
        table = dict(reversed(table.items()))
    monkeypatch.setattr(cost, "PEAK_BF16_TFLOPS", table)
    assert {fragment: cost.peak_entry(f"NVIDIA {fragment}") for fragment in table} == {f: f for f in table}
    assert {name: cost.peak_entry(name) for name, _, _ in CARDS} == {name: entry for name, entry, _ in CARDS}


def test_mfu_is_achieved_over_peak_and_undefined_without_a_known_gpu():
    # The target: 15,000 images/s of tiny_resnet50 on one H100 is 10% of its bf16 peak.
    assert mfu(15_000, 6.57e9, "NVIDIA H100 80GB HBM3", 1) == pytest.approx(0.0996, abs=1e-4)
    assert mfu(30_000, 6.57e9, "NVIDIA H100 80GB HBM3", 2) == pytest.approx(0.0996, abs=1e-4)
    assert mfu(15_000, 6.57e9, "Some Future GPU", 1) is None
    assert peak_flops("cpu") is None


def test_a_cpu_run_costs_n_a_not_zero():
    cost = RunCost("tiny_resnet50", 10, 32, "cpu", "cpu", 1)
    assert cost.flops_per_image is None and cost.mfu(100.0) is None
    cost.add_epoch(36.0, 3600)
    record = cost.record(train_seconds=3600.0)
    assert record == {"gpu_hours": None, "train_gflops_per_image": None, "peak_bf16_tflops_per_gpu": None,
                      "mfu": None, "mfu_basis": None}
    run = {"device": "cpu", "device_type": "cpu", **record}
    assert mfu_text(run) == "n/a (not a GPU run)"
    assert cost_text(run, 3.0).startswith("n/a (not a GPU run); reference: about $1.20")


def test_a_gpu_runs_cost_and_mfu_text():
    run = {"device": "NVIDIA H100 80GB HBM3", "device_type": "cuda", "gpu_hours": 0.5, "mfu": 0.123,
           "peak_bf16_tflops_per_gpu": 989.4}
    assert cost_text(run, 3.0).startswith("$1.50 (0.50 GPU-hours at $3 each); reference: about $1.20")
    assert cost_text(run, 0.0).startswith("0.50 GPU-hours; price n/a (set summarize.price_per_gpu_hour)")
    assert mfu_text(run) == "12.3% of the bf16 peak (989.4 TFLOP/s per GPU)"
    assert "no bf16 peak known for Odd GPU" in mfu_text({**run, "mfu": None, "device": "Odd GPU"})


def test_a_compiled_runs_mfu_leaves_out_the_epoch_that_compiled():
    """The first epoch a process trains compiles (minutes on a GPU): the run's MFU is measured on the
    epochs after it, and run.json says so; a one-epoch compiled run says its figure includes compiling."""
    h100 = "NVIDIA H100 80GB HBM3"
    cost = RunCost("tiny_resnet50", 200, 64, "cuda", h100, 1, compiled=True)
    for seconds in (100.0, 10.0, 10.0):  # 10,000 images each: the first epoch spent 90 s compiling
        cost.add_epoch(seconds, 10_000)
    record = cost.record(train_seconds=120.0)
    assert record["mfu"] == pytest.approx(mfu(1000.0, cost.flops_per_image, h100, 1), abs=1e-4)
    assert record["mfu_basis"] == "the epochs after the first this process trained (it compiles)"
    assert mfu_text({"device_type": "cuda", **record}).endswith("per GPU; the epochs after the first this process "
                                                                "trained (it compiles))")
    one = RunCost("tiny_resnet50", 200, 64, "cuda", h100, 1, compiled=True)
    one.add_epoch(100.0, 10_000)
    assert one.record(100.0)["mfu_basis"] == "one epoch, compile time included"
    eager = RunCost("tiny_resnet50", 200, 64, "cuda", h100, 1)
    for seconds in (12.0, 10.0):
        eager.add_epoch(seconds, 10_000)
    assert eager.record(22.0)["mfu"] == pytest.approx(mfu(20_000 / 22.0, eager.flops_per_image, h100, 1), abs=1e-4)
    assert eager.record(22.0)["mfu_basis"] == "every epoch"

