"""What a run cost: FLOPs per image, MFU against the card's peak, GPU-hours and a price; "n/a" on a CPU."""

from __future__ import annotations

import pytest

from tinyclf.report.facts import cost_text, mfu_text
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


def test_mfu_is_achieved_over_peak_and_undefined_without_a_known_gpu():
    # The target: 15,000 images/s of tiny_resnet50 on one H100 is 10% of its bf16 peak.
    assert mfu(15_000, 6.57e9, "NVIDIA H100 80GB HBM3", 1) == pytest.approx(0.0996, abs=1e-4)
    assert mfu(30_000, 6.57e9, "NVIDIA H100 80GB HBM3", 2) == pytest.approx(0.0996, abs=1e-4)
    assert mfu(15_000, 6.57e9, "Some Future GPU", 1) is None
    assert peak_flops("cpu") is None


def test_a_cpu_run_costs_n_a_not_zero():
    cost = RunCost("tiny_resnet50", 10, 32, "cpu", "cpu", 1)
    assert cost.flops_per_image is None and cost.mfu(100.0) is None
    record = cost.record(train_seconds=3600.0, images_per_s=100.0)
    assert record == {"gpu_hours": None, "train_gflops_per_image": None, "peak_bf16_tflops_per_gpu": None,
                      "mfu": None}
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
