"""Latency of `tinyclf demo` as an API client sees it, against the server's own compute time.

    .venv/bin/python benchmarks/demo_latency.py [models/model.onnx] [--requests 50]

Starts `tinyclf demo MODEL` in its own process on a free port of 127.0.0.1 (no gallery, the threads
its libraries pick by default), then sends `requests` real Tiny ImageNet validation JPEGs (the first
ones of ../shared/data's subset; without it, data/prepared's val images as PNG files) one after the
other through `gradio_client`, upload included, as a script using the demo's API would. Reports the
p50/p95 of that round trip in ms; as the baseline, the same requests made as two plain HTTP calls
(upload, then /gradio_api/run/predict); and the server's own time for each request (decode + model,
from the API's answer). The differences are what gradio_client and HTTP + Gradio add.
`measure(model_path, requests=50) -> dict` does it from Python (benchmarks/inference.py calls it).
The first 3 requests warm the server up and are not counted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
REAL_SUBSET = REPO.parent / "shared" / "data" / "tiny-imagenet-200-subset.zip"
WARMUP = 3


def real_images(out_dir: Path, count: int, prepared: Path = REPO / "data" / "prepared") -> list[Path]:
    """`count` real validation image files written in `out_dir`: the subset's JPEGs as published,
    else prepared val images as PNG files (lossless)."""
    if REAL_SUBSET.exists():
        with zipfile.ZipFile(REAL_SUBSET) as zf:
            names = [f"tiny-imagenet-200/val/images/val_{i}.JPEG" for i in range(count)]
            paths = [out_dir / name.rsplit("/", 1)[-1] for name in names]
            for name, path in zip(names, paths):
                path.write_bytes(zf.read(name))
        return paths
    images_path = prepared / "val" / "images.npy"
    if not images_path.exists():
        raise SystemExit(f"demo_latency: no real images: neither {REAL_SUBSET} nor {images_path} exists")
    import cv2

    images = np.load(images_path, mmap_mode="r")
    paths = [out_dir / f"val_{i}.png" for i in range(min(count, len(images)))]
    for i, path in enumerate(paths):
        path.write_bytes(cv2.imencode(".png", cv2.cvtColor(np.array(images[i]), cv2.COLOR_RGB2BGR))[1].tobytes())
    return paths


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_demo(model_path: Path, log: Path, timeout: float = 120):
    """`tinyclf demo model_path` serving on a free port: its URL; stopped afterwards."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    cmd = [sys.executable, "-m", "tinyclf.cli", "demo", str(model_path), "--port", str(port),
           "--num-examples", "0", "--metrics", ""]
    # This checkout's tinyclf, whether or not it is the one installed.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"demo_latency: tinyclf demo did not start:\n{log.read_text()}") from None
                time.sleep(0.25)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _percentiles(values: list[float]) -> tuple[float, float]:
    return float(np.percentile(values, 50)), float(np.percentile(values, 95))


def _time_client(url: str, images: list[Path], requests: int) -> tuple[list[float], list[float]]:
    """Round-trip ms of each request through gradio_client, and the server's own ms for it."""
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False)
    for path in images[:WARMUP]:
        client.predict(handle_file(str(path)), api_name="/predict")
    round_trip, server = [], []
    for i in range(requests):
        start = time.perf_counter()
        answer = client.predict(handle_file(str(images[i % len(images)])), api_name="/predict")
        round_trip.append((time.perf_counter() - start) * 1e3)
        server.append(answer["latency_ms"]["total"])
    return round_trip, server


def _time_http(url: str, images: list[Path], requests: int) -> tuple[list[float], list[float]]:
    """Round-trip ms of each request made with two plain HTTP calls (upload, then the endpoint),
    the least any client can do (what gradio_client's own machinery costs shows against it), and
    the server's own ms for it."""
    import httpx

    with httpx.Client(base_url=url, timeout=60) as http:
        def call(path: Path) -> float:
            uploaded = http.post("gradio_api/upload", files={"files": path.read_bytes()}).json()[0]
            body = {"data": [{"path": uploaded, "meta": {"_type": "gradio.FileData"}}]}
            answer = http.post("gradio_api/run/predict", json=body)
            answer.raise_for_status()
            return answer.json()["data"][0]["latency_ms"]["total"]

        for path in images[:WARMUP]:
            call(path)
        times, server = [], []
        for i in range(requests):
            start = time.perf_counter()
            server.append(call(images[i % len(images)]))
            times.append((time.perf_counter() - start) * 1e3)
    return times, server


def measure(model_path: str | Path, requests: int = 50) -> dict:
    """p50/p95 round-trip latency in ms of `requests` real images sent to `tinyclf demo model_path`
    through gradio_client, then through plain HTTP calls, and the server's own p50/p95 (decode +
    model) during each."""
    with tempfile.TemporaryDirectory(prefix="demo-latency-") as tmp:
        images = real_images(Path(tmp), requests)
        with running_demo(Path(model_path).resolve(), Path(tmp) / "demo.log") as url:
            round_trip, server = _time_client(url, images, requests)
            http, http_server = _time_http(url, images, requests)
    figures = {"": round_trip, "server_": server, "http_": http, "http_server_": http_server}
    result = {"model": str(model_path), "requests": requests, "mean_ms": round(statistics.fmean(round_trip), 2)}
    for prefix, values in figures.items():
        p50, p95 = _percentiles(values)
        result.update({f"{prefix}p50_ms": round(p50, 2), f"{prefix}p95_ms": round(p95, 2)})
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default=str(REPO / "models" / "model.onnx"),
                        help="models/model.onnx (default) or models/model.pt")
    parser.add_argument("--requests", type=int, default=50, help="timed requests (default %(default)s)")
    args = parser.parse_args()
    if not Path(args.model).is_file():
        raise SystemExit(f"demo_latency: {args.model}: no such model file (dvc repro export writes models/model.onnx)")
    result = measure(args.model, args.requests)
    print(json.dumps(result, indent=1))
    print(f"tinyclf demo, {args.requests} requests: gradio_client round trip p50 {result['p50_ms']:.1f} ms, "
          f"p95 {result['p95_ms']:.1f} ms; plain HTTP p50 {result['http_p50_ms']:.1f} ms "
          f"({result['p50_ms'] / result['http_p50_ms']:.1f}x less); server compute p50 {result['server_p50_ms']:.1f} ms "
          f"(during the gradio_client requests), {result['http_server_p50_ms']:.1f} ms (during the plain ones)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
