"""Inference images/s at the reference size: PyTorch eager, PyTorch channels_last and onnxruntime.

    .venv/bin/python benchmarks/inference.py                 # tiny_resnet50, 64x64, 200 classes, batch 1 and 64
    .venv/bin/python benchmarks/inference.py --model resnet18 --rounds 5

All three run the same weights (random: throughput does not depend on them) on the same uint8 NHWC
batches, normalization included, in this process, with the threads each library picks by default:
- eager: the model as the evaluate stage runs it (contiguous NCHW float input);
- channels_last: the model and its input in channels_last memory format;
- onnxruntime: the graph the export stage writes (`tinyclf.serve.export.build_onnx`), taking
  uint8 NHWC and normalizing inside.
Rounds alternate between the three so background load hits each alike; the median of each is
reported, with its ratio against eager from the same run. Also prints the export's own time. When
benchmarks/demo_latency.py exists, it then measures the Gradio demo's p50/p95 latency over 50 requests
on the exported model (`measure(model_path, requests=50)`).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from machine import cpu_model  # noqa: E402 - benchmarks/machine.py, found through the path set above

MEAN, STD = [0.48, 0.45, 0.40], [0.27, 0.26, 0.28]  # Tiny ImageNet's, near enough; timings only


def reference_meta(model: str, num_classes: int, size: int) -> dict:
    """The model-file meta keys the export's metadata needs."""
    classes = [{"id": f"g{i:07d}", "name": f"class {i}"} for i in range(num_classes)]
    return {"model": model, "num_classes": num_classes, "classes": classes, "image_size": size, "mean": MEAN,
            "std": STD, "dataset": "tiny-imagenet", "generated": True, "params": {"data": {"dataset": "tiny-imagenet"}}}


def torch_runner(net: torch.nn.Module, channels_last: bool):
    from tinyclf.loading.normalize import to_model_input

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=fmt)

    def run(images: np.ndarray) -> None:
        x = torch.from_numpy(images).permute(0, 3, 1, 2)
        with torch.inference_mode():
            net(to_model_input(x, MEAN, STD, channels_last=channels_last)).softmax(1)
    return run


def seconds_per_batch(run, images: np.ndarray, min_seconds: float) -> float:
    """Mean seconds per call over at least `min_seconds` (and at least 3 calls), after one warm-up call."""
    run(images)
    calls, start = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - start < min_seconds:
        run(images)
        calls += 1
    return (time.perf_counter() - start) / calls


def build(args) -> tuple[dict, Path, float]:
    """The three runners, the exported ONNX file and the export's seconds."""
    from tinyclf.model.architectures import create_model
    from tinyclf.serve.export import build_onnx
    from tinyclf.serve.onnx_model import OnnxModel
    from tinyclf.serve.torch_model import ServingModel

    torch.manual_seed(0)
    net = create_model(args.model, args.classes).eval()
    meta = reference_meta(args.model, args.classes, args.image_size)
    start = time.perf_counter()
    data, exporter = build_onnx(ServingModel(net, MEAN, STD).eval(), meta, Path(args.model))
    export_seconds = time.perf_counter() - start
    onnx_path = Path(tempfile.mkdtemp(prefix="tinyclf-bench-")) / "model.onnx"
    onnx_path.write_bytes(data)
    onnx_model = OnnxModel(onnx_path)
    print(f"export: {exporter} exporter, {export_seconds:.2f} s, {len(data) / 1e6:.1f} MB")
    channels_last_net = create_model(args.model, args.classes).eval()
    channels_last_net.load_state_dict(net.state_dict())
    runners = {"eager": torch_runner(net, False), "channels_last": torch_runner(channels_last_net, True),
               "onnxruntime": onnx_model.run}
    return runners, onnx_path, export_seconds


def demo_latency(onnx_path: Path) -> None:
    path = REPO / "benchmarks" / "demo_latency.py"
    if not path.exists():
        print("demo latency: skipped (benchmarks/demo_latency.py is not there)")
        return
    spec = importlib.util.spec_from_file_location("demo_latency", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    print(f"demo latency over 50 requests ({onnx_path.name}): {module.measure(onnx_path, requests=50)}")


def main() -> int:
    parser = argparse.ArgumentParser(description="Inference images/s: PyTorch eager, channels_last, onnxruntime.")
    parser.add_argument("--model", default="tiny_resnet50")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--classes", type=int, default=200)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of the three runners")
    parser.add_argument("--seconds", type=float, default=2.0, help="minimum timed seconds per runner and round")
    parser.add_argument("--no-demo", action="store_true", help="skip the demo latency")
    args = parser.parse_args()

    runners, onnx_path, _ = build(args)
    rng = np.random.default_rng(0)
    print(f"{args.model} {args.image_size}x{args.image_size}, {args.classes} classes, fp32 on {cpu_model()}, "
          f"torch {torch.__version__} with {torch.get_num_threads()} threads")
    for batch in args.batches:
        images = rng.integers(0, 256, size=(batch, args.image_size, args.image_size, 3), dtype=np.uint8)
        times = {name: [] for name in runners}
        for _ in range(args.rounds):
            for name, run in runners.items():
                times[name].append(seconds_per_batch(run, images, args.seconds))
        eager = statistics.median(times["eager"])
        for name, samples in times.items():
            median = statistics.median(samples)
            print(f"batch {batch:3d}  {name:14s} {batch / median:9.1f} images/s  {eager / median:5.2f}x eager")
    if not args.no_demo:
        demo_latency(onnx_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
