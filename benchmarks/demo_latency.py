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

Under load, as a class sharing one demo link:

    .venv/bin/python benchmarks/demo_latency.py --clients 16 --requests 25 [--candidates 1x2 2x1 none] [--json out.json]

starts `clients` gradio_client clients, each in its own process (so that neither the GIL nor one
client's threads limit the load), each sending `requests` real photos of mixed sizes, 64 px Tiny
ImageNet JPEGs as published up to a 12-megapixel JPEG (real ones scaled up with sensor-like noise, see
`mixed_photos`), all at once after one warm-up request each. It reports the p50/p95/p99 latency,
requests/s, errors (an exception, or a top-5 other than the model's own for that file), the server's
RSS (its process and children) before the load, after it and at its peak, and the CPU seconds the
server and the clients used. Each candidate setting ("LIMITxTHREADS": webui.CONCURRENCY_LIMIT,
"none" for no limit, and webui.MODEL_THREADS; default: the settings webui has) is measured on its
own fresh server, one after the other, in the same run. Without a model file it exports the
reference model (tiny_resnet50, 64 px, 200 classes, random weights, as benchmarks/inference.py).
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

from tinyclf import atomic

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


# Runs `tinyclf demo` with webui's concurrency settings replaced by a candidate's (argv: limit,
# threads, then the demo's arguments): the real command, one constant each changed.
_CANDIDATE_LAUNCHER = """
import sys
from tinyclf.serve import demo, webui
limit, threads = sys.argv[1:3]
webui.CONCURRENCY_LIMIT = None if limit == "none" else int(limit)
webui.MODEL_THREADS = int(threads)
sys.exit(demo.main(sys.argv[3:]))
"""


@contextlib.contextmanager
def running_demo(model_path: Path, log: Path, timeout: float = 120, setting: tuple[str, int] | None = None):
    """`tinyclf demo model_path` serving on a free port: its URL and process; stopped afterwards.
    `setting`: (webui.CONCURRENCY_LIMIT as text, webui.MODEL_THREADS) to serve with, else webui's own."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    args = ["demo", str(model_path), "--port", str(port), "--num-examples", "0", "--metrics", ""]
    cmd = ([sys.executable, "-c", _CANDIDATE_LAUNCHER, setting[0], str(setting[1]), *args[1:]] if setting
           else [sys.executable, "-m", "tinyclf.commands.cli", *args])
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
        yield url, proc
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
        with running_demo(Path(model_path).resolve(), Path(tmp) / "demo.log") as (url, _):
            round_trip, server = _time_client(url, images, requests)
            http, http_server = _time_http(url, images, requests)
    figures = {"": round_trip, "server_": server, "http_": http, "http_server_": http_server}
    result = {"model": str(model_path), "requests": requests, "mean_ms": round(statistics.fmean(round_trip), 2)}
    for prefix, values in figures.items():
        p50, p95 = _percentiles(values)
        result.update({f"{prefix}p50_ms": round(p50, 2), f"{prefix}p95_ms": round(p95, 2)})
    return result


# ------------------------------------------------------------------------------ under load
# Photo sizes of the load, (width, height): what a class uploads, from a Tiny ImageNet stamp to a
# 12-megapixel phone photo; 64 px ones are the subset's JPEGs as published, the others real ones
# scaled up. One request in 8 is the 12-megapixel one.
PHOTO_SIZES = [(64, 64), (64, 64), (64, 64), (256, 256), (640, 480), (1280, 960), (1600, 1200), (4000, 3000)]


def mixed_photos(out_dir: Path) -> list[Path]:
    """JPEG files of PHOTO_SIZES: each a different real validation image, the larger ones scaled up
    (bicubic) with a little Gaussian noise (sigma 3) so that they compress like photos, not like
    smooth gradients (the 12-megapixel one is about 1.6 MB at quality 92)."""
    import cv2

    sources = real_images(out_dir, len(PHOTO_SIZES))
    rng = np.random.default_rng(0)
    paths = []
    for i, ((width, height), source) in enumerate(zip(PHOTO_SIZES, sources)):
        if (width, height) == (64, 64):
            paths.append(source)
            continue
        small = cv2.imdecode(np.frombuffer(source.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
        big = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.float32)
        big = np.clip(big + rng.normal(0, 3, big.shape).astype(np.float32), 0, 255).astype(np.uint8)
        path = out_dir / f"photo_{i}_{width}x{height}.jpg"
        path.write_bytes(cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes())
        paths.append(path)
    return paths


def expected_top5(model_path: Path, photos: list[Path]) -> dict[str, list[str]]:
    """The class ids of the model's own top-5 for each photo (as `tinyclf predict` says), by file name."""
    from tinyclf.serve.predictor import load_predictor, read_image

    predictor = load_predictor(model_path)
    return {path.name: [c["id"] for c, _ in predictor.top_k(predictor.probabilities(
        read_image(path.read_bytes(), predictor)[None]))[0]] for path in photos}


def _tree_pids(pid: int) -> list[int]:
    """`pid` and its descendants."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    pids, todo = [], [pid]
    while todo:
        pids.append(todo.pop())
        todo.extend(children.get(pids[-1], []))
    return pids


def tree_rss_mb(pid: int) -> float:
    """VmRSS of `pid` and its descendants, MB (/proc/PID/status)."""
    total_kb = 0
    for p in _tree_pids(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except OSError:
            pass
    return total_kb / 1024


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of `pid` and its descendants so far (/proc/PID/stat)."""
    tick, total = os.sysconf("SC_CLK_TCK"), 0
    for p in _tree_pids(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / tick


def _client(url: str, photos: list[str], requests: int, offset: int, start, results) -> None:
    """One user, in its own process: a warm-up request, then (once every client is ready) `requests`
    photos one after the other; puts (per request (start s, ms, file name, error or top-5 ids),
    its CPU seconds) on `results`."""
    from gradio_client import Client, handle_file

    # ssl_verify=False on this plain-HTTP URL: otherwise gradio_client builds a verifying TLS context
    # (certifi's bundle) for every upload and call, unused here, about 80 ms of a client's CPU per
    # request (6 ms without): 16 clients would take the server's 2 cores and measure themselves.
    try:
        client = Client(url, verbose=False, ssl_verify=False)
        client.predict(handle_file(photos[offset % len(photos)]), api_name="/predict")
    except BaseException:
        start.abort()  # the benchmark stops (BrokenBarrierError) rather than wait for this client
        raise
    start.wait()
    cpu, done = time.process_time(), []
    for i in range(requests):
        path = photos[(offset + i) % len(photos)]
        began = time.perf_counter()
        try:
            answer = client.predict(handle_file(path), api_name="/predict")
            outcome = [p["id"] for p in answer["predictions"]]
        except Exception as exc:  # noqa: BLE001 - any failure is an error to count and show
            outcome = f"{type(exc).__name__}: {str(exc)[:200]}"
        done.append((began, (time.perf_counter() - began) * 1e3, Path(path).name, outcome))
    results.put((done, time.process_time() - cpu))


def load_test(model_path: Path, photos: list[Path], expected: dict, clients: int, requests: int,
              setting: tuple[str, int] | None, log: Path) -> dict:
    """One server, `clients` concurrent clients of `requests` each: the figures."""
    import multiprocessing as mp
    import threading

    ctx = mp.get_context("spawn")  # clean client processes, none of this one's threads or imports
    with running_demo(model_path, log, setting=setting) as (url, server):
        rss_idle = tree_rss_mb(server.pid)
        start, results = ctx.Barrier(clients + 1), ctx.Queue()
        procs = [ctx.Process(target=_client, args=(url, [str(p) for p in photos], requests, c, start, results))
                 for c in range(clients)]
        for proc in procs:
            proc.start()
        try:
            start.wait(timeout=300)  # every client has made its warm-up request
        except BaseException:
            for proc in procs:
                proc.kill()
            raise
        rss_before, cpu_before = tree_rss_mb(server.pid), tree_cpu_seconds(server.pid)
        peak, sampling = [rss_before], threading.Event()

        def sample() -> None:
            while not sampling.wait(0.25):
                peak.append(tree_rss_mb(server.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        gathered = [results.get(timeout=1800) for _ in procs]
        sampling.set()
        sampler.join()
        for proc in procs:
            proc.join()
        server_cpu = tree_cpu_seconds(server.pid) - cpu_before
        rss_after = tree_rss_mb(server.pid)
    done = [r for per_client, _ in gathered for r in per_client]
    errors = [f"{name}: {outcome}" if isinstance(outcome, str) else f"{name}: top-5 {outcome} != {expected[name]}"
              for _, _, name, outcome in done if outcome != expected[name]]
    ms = [m for _, m, _, _ in done]
    wall = max(b + m / 1e3 for b, m, _, _ in done) - min(b for b, _, _, _ in done)
    limit, threads = setting or (None, None)  # None: webui's own settings
    return {"setting": f"{limit}x{threads}" if setting else "webui's", "concurrency_limit": limit,
            "model_threads": threads,
            "clients": clients, "requests": len(done), "errors": len(errors), "error_examples": errors[:5],
            **{f"p{q}_ms": round(float(np.percentile(ms, q)), 1) for q in (50, 95, 99)},
            "max_ms": round(max(ms), 1), "throughput_rps": round(len(done) / wall, 2), "wall_s": round(wall, 1),
            "rss_idle_mb": round(rss_idle, 1), "rss_before_mb": round(rss_before, 1),
            "rss_after_mb": round(rss_after, 1), "rss_peak_mb": round(max(peak), 1),
            "rss_growth_mb": round(rss_after - rss_before, 1), "server_cpu_s": round(server_cpu, 1),
            "clients_cpu_s": round(sum(cpu for _, cpu in gathered), 1)}


def parse_setting(text: str) -> tuple[str, int]:
    """"2x1" -> ("2", 1); "none" or "nonex2" -> no limit (with 2 threads), threads default 0."""
    limit, _, threads = text.lower().partition("x")
    if not (limit == "none" or limit.isdigit()) or (threads and not threads.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r}: a candidate is LIMITxTHREADS, e.g. 2x1, 1x2, nonex1")
    return limit, int(threads or 0)


def reference_onnx(out_dir: Path) -> Path:
    """The reference model of benchmarks/inference.py exported to ONNX (random weights: latency
    does not depend on them)."""
    import torch
    from inference import MEAN, STD, reference_meta

    from tinyclf.model.architectures import create_model
    from tinyclf.serve.export import build_onnx
    from tinyclf.serve.torch_model import ServingModel

    torch.manual_seed(0)
    net = create_model("tiny_resnet50", 200).eval()
    data, _ = build_onnx(ServingModel(net, MEAN, STD).eval(), reference_meta("tiny_resnet50", 200, 64),
                         Path("tiny_resnet50"))
    path = out_dir / "model.onnx"
    path.write_bytes(data)
    return path


def measure_load(model_path: Path | None, clients: int, requests: int, settings: list) -> dict:
    with tempfile.TemporaryDirectory(prefix="demo-load-") as tmp:
        tmp = Path(tmp)
        model_path = model_path or reference_onnx(tmp)
        photos = mixed_photos(tmp)
        expected = expected_top5(model_path, photos)
        runs = []
        for setting in settings:
            runs.append(load_test(model_path, photos, expected, clients, requests, setting, tmp / "demo.log"))
            print(json.dumps(runs[-1]), flush=True)
    return {"model": str(model_path), "photos": [f"{w}x{h}" for w, h in PHOTO_SIZES], "cpus": os.cpu_count(),
            "load_1min": os.getloadavg()[0], "runs": runs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default=None,
                        help="models/model.onnx (default) or models/model.pt; under load without one, the "
                             "reference model exported in a temporary folder")
    parser.add_argument("--requests", type=int, default=None,
                        help="timed requests (default 50), per client with --clients")
    parser.add_argument("--clients", type=int, default=0,
                        help="concurrent clients, each in its own process (default: the single-client mode)")
    parser.add_argument("--candidates", type=parse_setting, nargs="+", default=None, metavar="LIMITxTHREADS",
                        help="under load: settings to compare, each on a fresh server (default: webui's own)")
    parser.add_argument("--json", type=Path, default=None, help="also write the result there (atomically)")
    args = parser.parse_args()
    model = Path(args.model) if args.model else REPO / "models" / "model.onnx"
    if args.clients:
        result = measure_load(model if args.model or model.is_file() else None, args.clients, args.requests or 25,
                              args.candidates or [None])
        print(f"tinyclf demo under load, {args.clients} clients x {args.requests or 25} requests, "
              f"{result['cpus']} CPUs, 1-min load {result['load_1min']:.1f} at the end:")
        print("| setting | p50 ms | p95 ms | p99 ms | requests/s | errors | RSS before -> after (peak) MB | "
              "CPU s server / clients |")
        print("|---|---|---|---|---|---|---|---|")
        for r in result["runs"]:
            print(f"| {r['setting']} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['p99_ms']:.0f} | "
                  f"{r['throughput_rps']:.1f} | {r['errors']} | {r['rss_before_mb']:.0f} -> {r['rss_after_mb']:.0f} "
                  f"({r['rss_peak_mb']:.0f}) | {r['server_cpu_s']:.0f} / {r['clients_cpu_s']:.0f} |")
        if args.json:
            atomic.write_json(args.json, result, sort_keys=False)
        return 1 if any(r["errors"] for r in result["runs"]) else 0
    if not model.is_file():
        raise SystemExit(f"demo_latency: {model}: no such model file (dvc repro export writes models/model.onnx)")
    requests = args.requests or 50
    result = measure(model, requests)
    print(json.dumps(result, indent=1))
    print(f"tinyclf demo, {requests} requests: gradio_client round trip p50 {result['p50_ms']:.1f} ms, "
          f"p95 {result['p95_ms']:.1f} ms; plain HTTP p50 {result['http_p50_ms']:.1f} ms "
          f"({result['p50_ms'] / result['http_p50_ms']:.1f}x less); server compute p50 {result['server_p50_ms']:.1f} ms "
          f"(during the gradio_client requests), {result['http_server_p50_ms']:.1f} ms (during the plain ones)")
    if args.json:
        atomic.write_json(args.json, result, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
