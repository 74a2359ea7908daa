"""One command for whoever has a GPU: does tinyclf's GPU path work, and how fast is it.

    python benchmarks/gpu_check.py --out DIR                        # on a CUDA machine: ≤ 7 min on one H100
    python benchmarks/gpu_check.py --device cpu --quick --out DIR   # the same script end to end, < 1 min (CI)
    python benchmarks/gpu_check.py --prepare .gpucheck              # here: what a bare GPU machine lacks

Writes DIR/gpu_check.json (every figure) and DIR/gpu_check.md (the same, to read), with:
  a. `pytest -m cuda` (tests/train/test_cuda.py): bf16 / fp16+GradScaler / compile runs, NCCL, determinism,
     device augmentation and evaluation on CUDA = CPU, a checkpoint CUDA -> CPU -> CUDA, no host
     syncs in a steady-state step (CUDA's sync detector). They skip without CUDA.
  b. Throughput of tiny_resnet50 at 64×64, global batch 512, through the train stage's own loop
     (`engine.train_one_epoch`, default recipe: mixup/cutmix, EMA, label smoothing): fp32; bf16;
     bf16 + channels_last; + compile; + device data. For each: images/s with the data path,
     the data path's share of the step (1 - step time with one fixed batch / step time with the
     real data path), step time, peak memory, MFU (images/s × train GFLOP per image ÷ the card's
     dense bf16 peak, `tinyclf.train.cost`; the peak used is written down).
  c. A real-data run through the stage scripts dvc.yaml runs (dvc itself is not needed):
     `stages/preprocess.py` on a Tiny ImageNet archive (`--archive`), then `stages/train.py` under
     torchrun for as many epochs as fit in `--real-seconds`; val top-1, images/s, run.json.
  d. The environment: GPU, driver, CUDA, torch, timm, Python.
Each part is recorded as ok / failed (with the error) / skipped (with why), so one failure does not
hide the others. --quick shrinks everything (a timm test model at 32 px, a few steps, an archive cut
to 10 classes) so that the whole script runs on a CPU in under a minute: CI runs it so it cannot rot.

On a machine lent through this workplace's `device` tool (Python 3.12, its own torch ≥ 2.11, timm,
OpenCV, pytest; no dvc, dvclive or albumentations, no network), prepare here, once:

    .venv/bin/python benchmarks/gpu_check.py --prepare .gpucheck     # .gpucheck/ is git-ignored
      # .gpucheck/wheels: dvclive's and albumentations' closure that the machine lacks (~24 MB,
      #   py3.12 manylinux wheels; pure-Python sdists built into wheels here)
      # .gpucheck/tiny-imagenet-reduced.zip: the real subset cut to fit beside them (200 classes,
      #   40 train and 20 val images each: ~27 MB)

then one `run` (timeout_s 540, carry [".gpucheck"], about 7 minutes):

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
        .gpucheck/wheels/*.whl && export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 && \
        python3 benchmarks/gpu_check.py --out $OUT --archive .gpucheck/tiny-imagenet-reduced.zip

and copy the figures of $OUT/gpu_check.md into docs/benchmarks.md with the card's name.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
DEFAULT_ARCHIVE = REPO.parent / "shared" / "data" / "tiny-imagenet-200-subset.zip"
# The packages a bare GPU machine's image has (its listing in the device tool's KINDS.md).
GPU_IMAGE_PACKAGES = """absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs
botorch build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings
cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock
flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx
huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin
jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite
lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict
multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro nvidia-ml-py onnx
onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint
packaging pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil
pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov
pytest-mock pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu
safetensors scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools
shellingham simplejson six sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server
tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric
torchmetrics torchvision tqdm transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop
wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp""".split()
MANYLINUX = ["manylinux_2_35_x86_64", "manylinux_2_34_x86_64", "manylinux_2_31_x86_64", "manylinux_2_28_x86_64",
             "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux_2_5_x86_64", "manylinux1_x86_64"]


# ------------------------------------------------------------------------------ parts
def part(name: str, results: dict, fn, *args):
    """Run one part; record its result, or the error, without stopping the others."""
    print(f"gpu_check: {name} …", flush=True)
    start = time.monotonic()
    try:
        out = fn(*args)
        results[name] = {"status": "ok", **(out or {})}
    except Skip as exc:
        results[name] = {"status": "skipped", "why": str(exc)}
    except Exception as exc:  # noqa: BLE001 - recorded; the other parts still run
        results[name] = {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                         "traceback": traceback.format_exc()[-3000:]}
    results[name]["seconds"] = round(time.monotonic() - start, 1)
    print(f"gpu_check: {name}: {results[name]['status']} ({results[name]['seconds']} s)", flush=True)


class Skip(Exception):
    """A part that cannot run here; the message says why."""


def environment() -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda_runtime": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "cpu_count": os.cpu_count()}
    for package in ("timm", "numpy", "cv2", "dvclive", "albumentations"):
        try:
            info[package] = __import__(package).__version__
        except Exception:  # noqa: BLE001 - missing or odd: say so
            info[package] = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=torch.cuda.get_device_name(0), gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    multiprocessors=props.multi_processor_count)
        smi = shutil.which("nvidia-smi")
        if smi:
            out = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                                 text=True)
            info["driver"] = out.stdout.strip() or None
    return info


def cuda_tests() -> dict:
    proc = subprocess.run([sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider",
                           str(REPO / "tests" / "train" / "test_cuda.py")], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"),
                                                                            os.environ.get("PYTHONPATH", "")])})
    summary = [line for line in proc.stdout.splitlines() if re.search(r"\d+ (passed|failed|skipped|error)", line)]
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|skipped|errors?)", summary[-1])} \
        if summary else {}
    if proc.returncode not in (0, 5) and not counts.get("failed") and not counts.get("error"):
        raise RuntimeError(f"pytest exited {proc.returncode}: {proc.stdout[-1500:]}{proc.stderr[-1500:]}")
    return {"summary": summary[-1] if summary else "", "counts": counts, "exit_code": proc.returncode,
            "output_tail": proc.stdout[-4000:]}


# ------------------------------------------------------------------------------ throughput
def synthetic_prepared(root: Path, n: int, size: int, classes: int) -> Path:
    """Random uint8 images in the prepared-array format (timing only: no accuracy is read from them)."""
    rng = np.random.default_rng(0)
    for split, count in (("train", n), ("val", max(classes, n // 8))):
        (root / split).mkdir(parents=True)
        np.save(root / split / "images.npy", rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8))
        np.save(root / split / "labels.npy", (np.arange(count) % classes).astype(np.int64))
    names = [{"index": i, "id": f"g{i:07d}", "name": f"class {i}"} for i in range(classes)]
    (root / "classes.json").write_text(json.dumps({"dataset": "tiny-imagenet", "generated": True, "classes": names}))
    stats = {"dataset": "tiny-imagenet", "generated": True, "image_size": [size, size], "mean": [0.48, 0.45, 0.4],
             "std": [0.27, 0.26, 0.28], "splits": {}}
    (root / "stats.json").write_text(json.dumps(stats))
    return root


def throughput(device_name: str, quick: bool) -> dict:
    import torch

    from tinyclf.train.cost import train_flops_per_image

    device = torch.device(device_name)
    model, size, batch, classes = ("test_resnet", 32, 32, 10) if quick else ("tiny_resnet50", 64, 512, 200)
    warmup, steps = (2, 3) if quick else (15, 30)
    on_cuda = device.type == "cuda"
    configs = [("fp32", dict(precision="fp32", channels_last=False, compile=False, aug_backend="workers")),
               ("bf16", dict(precision="bf16", channels_last=False, compile=False, aug_backend="workers")),
               ("bf16 + channels_last", dict(precision="bf16", channels_last=True, compile=False, aug_backend="workers")),
               ("+ compile", dict(precision="bf16", channels_last=True, compile=True, aug_backend="workers")),
               ("+ device data", dict(precision="bf16", channels_last=True, compile=True, aug_backend="device"))]
    flops = train_flops_per_image(model, classes, size)  # counted once: seconds on the meta device
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        prepared = synthetic_prepared(Path(tmp) / "prepared", batch * (warmup + steps + 1), size, classes)
        for name, config in configs:
            if quick and not on_cuda and config["compile"]:
                config = {**config, "compile": False}  # inductor on 2 CPU cores alone takes a minute
                name += " (compile skipped: --quick on CPU)"
            rows.append({"config": name, **measure(prepared, device, model, batch, warmup, steps, config, flops)})
    return {"model": model, "image_size": size, "global_batch": batch, "timed_steps": steps, "rows": rows}


def measure(prepared: Path, device, model: str, batch: int, warmup: int, steps: int, config: dict,
            flops: float | None) -> dict:
    """Images/s through the stage's loop with the real data path, and with one fixed batch (no data path)."""
    import torch

    from tinyclf.params import params_from_dict
    from tinyclf.train.cost import mfu
    from tinyclf.train.distributed import DistInfo
    from tinyclf.train.engine import Progress, StepControl, train_one_epoch
    from tinyclf.train.recipe import resolve_precision
    from tinyclf.train.run import build_step_recipe, build_trainables, load_train_data, wrap_for_training

    tree = yaml.safe_load((REPO / "params.yaml").read_text())  # the default recipe, as committed
    tree["train"].update(model=model, batch_size=batch, workers=min(8, os.cpu_count() or 1), **config)
    train_params = params_from_dict(tree).train
    info = DistInfo(rank=0, world_size=1, local_rank=0, local_world_size=1, device=device)
    precision = resolve_precision(train_params.precision, device)
    data = load_train_data(prepared, train_params, info)
    parts, _ = build_trainables(train_params, data, info, precision)
    recipe = build_step_recipe(train_params, parts, data, info, precision)
    train_model = wrap_for_training(parts.model, train_params, info)
    control = StepControl(sync_every=train_params.sync_every)

    def run(batches, count) -> float:
        progress = Progress()
        train_one_epoch(train_model, batches, recipe, progress, micro_batches=count, info=info, control=control)
        return progress.seconds

    run(data.train_batches.epoch(0), warmup)  # compile, cuDNN autotuning, lazy optimizer state
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with_data = run(data.train_batches.epoch(1), steps)
    fixed = next(iter(data.train_batches.epoch(2)))
    without_data = run(iter([fixed] * steps), steps)
    images_per_s = steps * batch / with_data
    device_label = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    util = mfu(images_per_s, flops, device_label, 1) if device.type == "cuda" else None
    return {
        "images_per_s": round(images_per_s, 1),
        "step_ms": round(1000 * with_data / steps, 2),
        "data_share": round(max(0.0, 1 - without_data / with_data), 4),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None,
        "mfu": round(util, 4) if util is not None else None,
        "train_gflops_per_image": round(flops / 1e9, 3) if flops else None,
    }


# ------------------------------------------------------------------------------ the real-data run
def reduced_archive(source: Path, dest: Path, classes: int | None, train_per_class: int, val_per_class: int) -> Path:
    """A Tiny ImageNet zip in the official layout with the first `classes` classes (None: all) and
    at most that many real images of each, from `source` (a published archive or the subset)."""
    with zipfile.ZipFile(source) as src:
        names = src.namelist()
        root = next(n for n in names if n.endswith("wnids.txt"))[: -len("wnids.txt")]
        wnids = src.read(root + "wnids.txt").decode().split()
        keep = wnids[:classes] if classes else wnids
        kept = set(keep)
        lines = src.read(root + "val/val_annotations.txt").decode().splitlines()
        val_lines, per_class = [], {w: 0 for w in keep}
        for line in lines:
            fields = line.split("\t")
            if len(fields) > 1 and fields[1] in kept and per_class[fields[1]] < val_per_class:
                per_class[fields[1]] += 1
                val_lines.append(line)
        val_members = {root + "val/images/" + line.split("\t")[0] for line in val_lines}
        train = {w: sorted((n for n in names if n.startswith(f"{root}train/{w}/images/")),
                           key=lambda n: int(re.findall(r"_(\d+)\.", n)[-1]))[:train_per_class] for w in keep}
        with zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED) as out:  # JPEGs: deflate gains nothing
            out.writestr(root + "wnids.txt", "\n".join(keep) + "\n")
            out.writestr(root + "words.txt", src.read(root + "words.txt"))
            out.writestr(root + "val/val_annotations.txt", "\n".join(val_lines) + "\n")
            for member in sorted(val_members) + [m for w in keep for m in train[w]]:
                out.writestr(member, src.read(member))
    return dest


def real_run(archive: Path | None, device_name: str, quick: bool, seconds: float, images_per_s: float | None) -> dict:
    if archive is None or not archive.is_file():
        raise Skip(f"no Tiny ImageNet archive at {archive} (the real subset lives in ../shared/data; on a GPU "
                   "machine carry the one --prepare makes)")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        zip_path = (reduced_archive(archive, tmp / "tiny-imagenet-200.zip", 10, 40, 10) if quick
                    else shutil.copy(archive, tmp / "tiny-imagenet-200.zip"))
        tree = yaml.safe_load((REPO / "params.yaml").read_text())
        tree["preprocess"]["workers"] = 0
        train = tree["train"]
        if quick:
            tree["data"]["image_size"] = 32
            train.update(model="test_resnet", epochs=1, batch_size=32, warmup_epochs=0, workers=0, crop="pad_crop")
        if device_name == "cpu":
            train.update(aug_backend="workers", compile=False)
        raw = tmp / "raw"
        raw.mkdir()
        shutil.move(str(zip_path), raw / "tiny-imagenet-200.zip")
        params = tmp / "params.yaml"
        params.write_text(yaml.safe_dump(tree))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
        if device_name == "cpu":
            env["CUDA_VISIBLE_DEVICES"] = ""
        _stage(["stages/preprocess.py", "--raw", str(raw), "--out", str(tmp / "prepared")], params, env)
        if not quick:
            count = json.loads((tmp / "prepared" / "stats.json").read_text())["splits"]["train"]["count"]
            rate = images_per_s or 5000.0
            train["epochs"] = max(3, min(150, int(seconds * rate / count)))  # fill the time, compile aside
            train["warmup_epochs"] = min(train["warmup_epochs"], train["epochs"] // 3)
            params.write_text(yaml.safe_dump(tree))
        log = _stage([*TORCHRUN, "stages/train.py", "--data", str(tmp / "prepared"), "--model-out",
                      str(tmp / "model.pt"), "--live", str(tmp / "live"), "--checkpoints", str(tmp / "ck")],
                     params, env)
        run = json.loads((tmp / "live" / "run.json").read_text())
        summary = json.loads((tmp / "live" / "metrics.json").read_text())
        stats = json.loads((tmp / "prepared" / "stats.json").read_text())
    return {"train_images": stats["splits"]["train"]["count"], "val_images": stats["splits"]["val"]["count"],
            "epochs": train["epochs"], "model": train["model"], "val_top1": summary["val"]["top1"],
            "val_top5": summary["val"]["top5"], "run": run, "log_tail": log[-2000:]}


TORCHRUN = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1"]


def _stage(args: list[str], params: Path, env: dict) -> str:
    proc = subprocess.run([sys.executable, *args, "--params", str(params), "--no-progress"], cwd=REPO, env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:3])} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return proc.stdout + proc.stderr


# ------------------------------------------------------------------------------ report
def markdown(results: dict) -> str:
    env = results.get("environment", {})
    lines = ["# gpu_check", "", f"- device: {results['device']}{' (--quick)' if results['quick'] else ''}",
             f"- GPU: {env.get('gpu', 'none')}, driver {env.get('driver')}, CUDA {env.get('cuda_runtime')}, "
             f"torch {env.get('torch')}, timm {env.get('timm')}, Python {env.get('python')}", ""]
    for name in ("cuda_tests", "throughput", "real_run"):
        r = results.get(name, {})
        lines.append(f"## {name}: {r.get('status')} ({r.get('seconds')} s)")
        if r.get("status") == "failed":
            lines += ["", "```", r.get("error", ""), "```"]
        elif r.get("status") == "skipped":
            lines.append(f"\n{r.get('why')}")
        elif name == "cuda_tests":
            lines.append(f"\n{r.get('summary')}")
        elif name == "throughput":
            lines += ["", f"{r['model']} at {r['image_size']}px, global batch {r['global_batch']}, "
                          f"{r['timed_steps']} timed steps", "",
                      "| config | images/s | step (ms) | data share | peak memory (GiB) | MFU |", "|---|--:|--:|--:|--:|--:|"]
            for row in r["rows"]:
                mfu_text = "n/a" if row["mfu"] is None else f"{row['mfu']:.1%}"
                lines.append(f"| {row['config']} | {row['images_per_s']:,.0f} | {row['step_ms']} | "
                             f"{row['data_share']:.1%} | {row['peak_memory_gib']} | {mfu_text} |")
        elif name == "real_run":
            lines.append(f"\n{r['model']}, {r['epochs']} epochs on {r['train_images']:,} real train images: val top-1 "
                         f"{r['val_top1']:.2%}, top-5 {r['val_top5']:.2%}; {r['run'].get('images_per_s')} images/s, "
                         f"MFU {r['run'].get('mfu')}, {r['run'].get('train_seconds')} s of training")
        lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ prepare (here, for a GPU machine)
def prepare(out: Path, archive: Path) -> None:
    """Wheels of what dvclive and albumentations need that the GPU image lacks, and a reduced real archive."""
    import importlib.metadata as md

    from packaging.requirements import Requirement

    def key(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    have = {key(n) for n in GPU_IMAGE_PACKAGES}
    needed, todo = {}, ["dvclive", "albumentations"]
    while todo:
        name = todo.pop()
        if key(name) in needed or key(name) in have:
            continue
        dist = md.distribution(name)
        needed[key(name)] = f"{dist.metadata['Name']}=={dist.version}"
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": "", "python_version": "3.12"}):
                todo.append(req.name)
    wheels = out / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    platforms = [arg for p in MANYLINUX for arg in ("--platform", p)]
    for pin in sorted(needed.values()):
        got = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                              "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(wheels), pin],
                             capture_output=True, text=True)
        if got.returncode != 0:  # a pure-Python sdist: its wheel is the same for every Python
            subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), pin],
                           check=True, capture_output=True, text=True)
    reduced = reduced_archive(archive, out / "tiny-imagenet-reduced.zip", None, 40, 20)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"gpu_check: {len(needed)} wheels and {reduced.name} in {out}: {size / 2**20:.1f} MiB "
          "(the device tool carries at most 64 MiB with the repository)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="directory for gpu_check.json and gpu_check.md")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: the whole script in under a minute")
    parser.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE, help="a Tiny ImageNet zip for the real run")
    parser.add_argument("--real-seconds", type=float, default=150, help="training time of the real-data run")
    parser.add_argument("--prepare", type=Path, metavar="DIR", help="write what a GPU machine lacks into DIR, and stop")
    args = parser.parse_args()
    if args.prepare:
        prepare(args.prepare, args.archive)
        return 0
    if args.out is None:
        parser.error("--out is required")
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device here: use --device cpu (with --quick for the CI check)")
    results: dict = {"device": args.device, "quick": args.quick, "environment": environment()}
    part("cuda_tests", results, cuda_tests)
    part("throughput", results, throughput, args.device, args.quick)
    rows = results["throughput"].get("rows") or [{}]
    part("real_run", results, real_run, args.archive, args.device, args.quick, args.real_seconds,
         rows[-1].get("images_per_s"))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(results, indent=1, default=str))
    (args.out / "gpu_check.md").write_text(markdown(results))
    print((args.out / "gpu_check.md").read_text())
    failed = [name for name in ("cuda_tests", "throughput", "real_run") if results[name]["status"] == "failed"]
    failed += ["cuda_tests"] if results["cuda_tests"].get("counts", {}).get("failed") else []
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
