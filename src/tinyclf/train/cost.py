"""What a training run cost: arithmetic per image, model FLOPs utilization (MFU) and accelerator-hours.

- `train_flops_per_image(model_name, num_classes, image_size)`: FLOPs of one image's forward and
  backward pass, counted by torch's FlopCounterMode on the meta device (no memory, no arithmetic):
  3 × the forward's (the backward costs about twice the forward). tiny_resnet50 at 64×64: 6.6 GFLOP.
- `peak_flops(device_name)`: the card's dense bf16 tensor-core peak (no sparsity), from the makers'
  data sheets, for the cards in `PEAK_BF16_TFLOPS` (the longest fragment of the name that the table
  holds picks the entry: `peak_entry`); None for any other (MFU then reads "n/a").
- `mfu(images_per_s, flops_per_image, device_name, devices)`: achieved FLOP/s over the peak of all
  the devices. Not defined on a CPU.
"""

from __future__ import annotations

# Dense bf16 tensor-core TFLOP/s (the data sheets' "with sparsity" figures halved) by a fragment of
# torch.cuda.get_device_name(). A name can hold several fragments ("NVIDIA GH200 480GB" holds "H200",
# "NVIDIA L40S" holds "L4" and "L40"): the longest one present names the card, so the order here
# cannot shadow an entry (tests/train/test_cost.py checks every entry is reached by its own name).
PEAK_BF16_TFLOPS = {
    "H100": 989.4,  # SXM: "NVIDIA H100 80GB HBM3"
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H200": 989.4,  # SXM: "NVIDIA H200"
    "H200 NVL": 835.0,
    "GH200": 989.4,  # Grace Hopper: "NVIDIA GH200 480GB"
    "A100": 312.0,  # SXM and PCIe alike
    "L40S": 362.1,
    "L40": 181.0,
    "A40": 149.7,
    "L4": 121.0,
    "A10G": 70.0,
    "A10": 125.0,
}


def peak_entry(device_name: str) -> str | None:
    """The PEAK_BF16_TFLOPS fragment that names this card: the longest one in `device_name`; None if none is."""
    present = [fragment for fragment in PEAK_BF16_TFLOPS if fragment in device_name]
    return max(present, key=len) if present else None


def peak_flops(device_name: str) -> float | None:
    """The dense bf16 peak of one card, in FLOP/s; None when the card is not in PEAK_BF16_TFLOPS."""
    entry = peak_entry(device_name)
    return PEAK_BF16_TFLOPS[entry] * 1e12 if entry is not None else None


def train_flops_per_image(model_name: str, num_classes: int, image_size: int) -> float | None:
    """FLOPs to train on one image (forward + backward ≈ 3 × forward), counted on the meta device;
    None for a model whose forward cannot run there (MFU then reads "n/a")."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from tinyclf.model.architectures import create_model

    try:
        with torch.device("meta"):
            model = create_model(model_name, num_classes).eval()  # eval: BatchNorm takes a batch of one
            x = torch.empty(1, 3, image_size, image_size)
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(x)
    except Exception:  # noqa: BLE001 - a timm model with a data-dependent forward: no count, no MFU
        return None
    return 3.0 * counter.get_total_flops()


def mfu(images_per_s: float | None, flops_per_image: float | None, device_name: str, devices: int) -> float | None:
    """Achieved over peak FLOP/s of `devices` cards named `device_name`; None when it cannot be said."""
    peak = peak_flops(device_name)
    if not images_per_s or not flops_per_image or peak is None or devices < 1:
        return None
    return images_per_s * flops_per_image / (peak * devices)


class RunCost:
    """The cost accounting of one training run on `devices` cards (nothing on a CPU: "n/a").

    The run's MFU is measured on its steady epochs: under torch.compile the first epoch a process
    trains also compiles (a resumed run compiles again), so `add_epoch` leaves it out when later
    ones exist, and run.json's `mfu_basis` says which epochs the figure comes from."""

    def __init__(self, model_name: str, num_classes: int, image_size: int, device_type: str, device_name: str,
                 devices: int, *, compiled: bool = False):
        self.on_gpu, self.compiled = device_type == "cuda", compiled
        self.device_name, self.devices = device_name, devices
        self.flops_per_image = train_flops_per_image(model_name, num_classes, image_size) if self.on_gpu else None
        self.epochs: list[tuple[float, int]] = []  # (seconds, images) of each epoch this process trained

    def mfu(self, images_per_s: float | None) -> float | None:
        return mfu(images_per_s, self.flops_per_image, self.device_name, self.devices) if self.on_gpu else None

    def add_epoch(self, seconds: float, images: int) -> None:
        self.epochs.append((seconds, images))

    def steady_rate(self) -> tuple[float | None, str]:
        """(images/s, which epochs it covers) for the run's MFU."""
        counted = self.epochs[1:] if self.compiled and len(self.epochs) > 1 else self.epochs
        seconds, images = sum(s for s, _ in counted), sum(n for _, n in counted)
        if not self.compiled:
            basis = "every epoch"
        elif len(counted) < len(self.epochs):
            basis = "the epochs after the first this process trained (it compiles)"
        else:
            basis = "one epoch, compile time included"
        return (images / seconds if seconds > 0 else None), basis

    def record(self, train_seconds: float) -> dict:
        """run.json's cost facts. GPU-hours count training time (across resumes), not validation."""
        peak = peak_flops(self.device_name) if self.on_gpu else None
        rate, basis = self.steady_rate()
        run_mfu = self.mfu(rate)
        return {
            "gpu_hours": round(train_seconds * self.devices / 3600, 4) if self.on_gpu else None,
            "train_gflops_per_image": round(self.flops_per_image / 1e9, 3) if self.flops_per_image else None,
            "peak_bf16_tflops_per_gpu": round(peak / 1e12, 1) if peak else None,
            "mfu": round(run_mfu, 4) if run_mfu is not None else None,
            "mfu_basis": basis if run_mfu is not None else None,
        }
