"""Where a run happens: the one place that names a device, and the versions that produced a model.

- `device_name(device)`: the CUDA device's name, or "cpu" (run.json's "device", the model file's
  meta["environment"]["device"]).
- `device_description(device)`: the same name with how it ran ("<gpu> (cuda)", "cpu (4 threads)"),
  for evaluate's speed.json, where timing depends on the thread count.
- `environment_info(device)`: versions and hardware for meta["environment"] in the model file.

Naming a device in one place keeps run.json, speed.json and the model file in agreement.
"""

from __future__ import annotations

import importlib.metadata
import platform

import torch


def device_name(device: str | torch.device) -> str:
    """The GPU's name for a CUDA device (the current GPU when it has no index), "cpu" for the CPU.

    Any other device (mps, or cuda on a machine without CUDA) is named by its type, as torch spells it.
    """
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(device if device.index is not None else None)
    return "cpu" if device.type == "cpu" else str(device)


def device_description(device: str | torch.device) -> str:
    """`device_name` plus how it ran: "<gpu name> (cuda)" or "cpu (N thread[s])".

    The CPU's thread count is part of it because CPU throughput scales with it.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return f"{device_name(device)} (cuda)"
    if device.type == "cpu":
        threads = torch.get_num_threads()
        return f"cpu ({threads} thread{'s' if threads != 1 else ''})"
    return device_name(device)


def _version(package: str) -> str | None:
    # Read from the installed metadata rather than importing: albumentations takes seconds to import.
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment_info(device: str | torch.device | None = None) -> dict:
    """Versions and hardware that produced a model, for meta["environment"] (plain types only).

    `cuda`/`cudnn` are the versions torch runs with, or None on a build or machine without CUDA;
    `device` is `device_name(device)`, by default of the current GPU when there is one, else "cpu".
    """
    cuda_ok = torch.cuda.is_available()
    if device is None:
        device = "cuda" if cuda_ok else "cpu"
    return {
        "torch": str(torch.__version__),  # a TorchVersion (str subclass) that weights_only refuses
        "torchvision": _version("torchvision"),
        "timm": _version("timm"),
        "albumentations": _version("albumentations"),
        "numpy": _version("numpy"),
        "python": platform.python_version(),
        "cuda": torch.version.cuda if cuda_ok else None,
        "cudnn": torch.backends.cudnn.version() if cuda_ok and torch.backends.cudnn.is_available() else None,
        "device": device_name(device),
        # CPU results depend on the thread count (reduction order in the BLAS/oneDNN kernels).
        "cpu_threads": torch.get_num_threads(),
    }
