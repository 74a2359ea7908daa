"""tinyclf.environment: one name for a device everywhere, and the environment a model file records."""

from __future__ import annotations

import pytest
import torch

from tinyclf.environment import device_description, device_name, environment_info


def test_environment_info_plain():
    env = environment_info()
    for key in ("torch", "torchvision", "timm", "albumentations", "numpy", "python", "cuda", "cudnn", "device"):
        assert key in env
    assert env["torch"] == torch.__version__
    assert all(v is None or isinstance(v, (str, int)) for v in env.values())
    if not torch.cuda.is_available():
        assert env["device"] == "cpu" and env["cuda"] is None


def test_cpu_is_named_cpu_everywhere():
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert device_name("cpu") == device_name(torch.device("cpu")) == "cpu"
        assert environment_info("cpu")["device"] == "cpu"
        assert device_description(torch.device("cpu")) == "cpu (1 thread)"
        torch.set_num_threads(4)
        assert device_description("cpu") == "cpu (4 threads)"
    finally:
        torch.set_num_threads(threads)


def test_a_gpu_is_named_by_cuda(monkeypatch):
    # No GPU needed: what matters is that every description goes through the one CUDA lookup.
    asked = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: asked.append(d) or "NVIDIA Test GPU")
    assert device_name("cuda:1") == "NVIDIA Test GPU" and asked[-1] == torch.device("cuda:1")
    assert device_name("cuda") == "NVIDIA Test GPU" and asked[-1] is None  # the current GPU
    assert device_description(torch.device("cuda", 0)) == "NVIDIA Test GPU (cuda)"
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.backends.cudnn, "is_available", lambda: False)
    assert environment_info()["device"] == "NVIDIA Test GPU" and asked[-1] is None
    assert environment_info("cpu")["device"] == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_real_gpu_name():
    name = torch.cuda.get_device_name(0)
    assert device_name("cuda:0") == name and device_description("cuda:0") == f"{name} (cuda)"
    assert environment_info("cuda:0")["device"] == name
