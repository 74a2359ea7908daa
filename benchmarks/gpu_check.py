"""One command for whoever has a GPU: does tinyclf's GPU path work, and how fast is it.

    python benchmarks/gpu_check.py --out DIR                        # on a CUDA machine: within --budget (420 s)
    python benchmarks/gpu_check.py --device cpu --quick --out DIR   # the same script end to end on a CPU (CI)
    python benchmarks/gpu_check.py --prepare .gpucheck              # here: what a bare GPU machine lacks

Writes DIR/gpu_check.json (every figure) and DIR/gpu_check.md (the same, to read), with:
  a. `pytest -m cuda` (tests/train/test_cuda.py): bf16 / fp16+GradScaler / compile runs, NCCL, determinism,
     device augmentation and evaluation on CUDA = CPU, a checkpoint CUDA -> CPU -> CUDA, no host
     syncs in a steady-state step (CUDA's sync detector). They skip without CUDA.
  b. Throughput of tiny_resnet50 at 64×64, global batch 512, through the train stage's own loop
     (`engine.train_one_epoch`, default recipe: mixup/cutmix, EMA, label smoothing) under the stage's
     own cuDNN/TF32 settings (`recipe.configure_determinism`): the stage's default (bf16,
     channels_last, compiled, device data on the GPU), then each with one param changed from it:
     train.device_data=host, aug_backend=workers, compile=false, channels_last=false, precision=fp32.
     For each: images/s with the data path, the data path's share of the
     step (1 - step time with one fixed batch / step time with the real data path), step time, peak
     memory, MFU (images/s × train GFLOP per image ÷ the card's dense bf16 peak,
     `tinyclf.train.cost`; the peak used is written down).
  c. A real-data run through the stage scripts dvc.yaml runs (dvc itself is not needed):
     `stages/preprocess.py` on a Tiny ImageNet archive (`--archive`), then `stages/train.py` under
     torchrun twice: a probe of 2 epochs, whose second epoch times one epoch as the stage runs it
     (training, both validations, the checkpoint with its fsync; compilation falls in the first),
     then a fresh run of as many epochs as fit in what is left (at most 150); val top-1, images/s,
     run.json.
  d. The environment: GPU, driver, CUDA, torch, timm, Python.

The time. `--budget SECONDS` (default 420) bounds the whole script, from its start to its last
write. Each part gets a share of what is left of the budget when it starts, less a reserve (5% of
the budget, at most 15 s) kept for the last kill and writes: the CUDA tests 30%, the throughput
matrix 40%, the real-data run all the rest; a part that ends early leaves its time to the next.
With the default 420 s and every part using its whole share: about 2, 2 and 3 minutes. Every
subprocess runs under its part's deadline and is killed at it with all it started (torchrun's
workers too); the part is then recorded as "cut short" with what it reached. The matrix starts a
row only while the longest row so far (plus a minute for the first compiled row) fits in what is
left of its share, and lists the rows it did not measure; the real run sizes its epochs from the
probe.

Both files are rewritten, atomically, when the run starts, after every part, every throughput row,
every test and every epoch of the real run: a run killed at any moment leaves valid files with what
it had measured. Each part's status: "not reached" (the run ended before it began), "running" (under
way when the files were written: in files the run left behind, it was killed during that part), "ok",
"failed" (with the error), "skipped" (with why), "cut short" (its share ran out, or SIGTERM/SIGINT
stopped the run: what it reached is recorded). `"complete": false`, and gpu_check.md opening with
"Partial result", say that the run itself did not finish. One failure does not hide the others.
--quick shrinks everything (a timm test model at 32 px, a few steps, an archive cut to 10 classes,
at most 3 epochs) so that the whole script runs on a 2-core CPU in about a minute at most: CI runs
it so it cannot rot.

On a machine lent through this workplace's `device` tool (Python 3.12, its own torch ≥ 2.11, timm,
OpenCV, pytest; no dvc, dvclive or albumentations, no network; a command may run 10 minutes at most),
prepare here, once:

    .venv/bin/python benchmarks/gpu_check.py --prepare .gpucheck     # .gpucheck/ is git-ignored
      # .gpucheck/wheels: dvclive's and albumentations' closure that the machine lacks (~24 MB,
      #   py3.12 manylinux wheels; pure-Python sdists built into wheels here)
      # .gpucheck/tiny-imagenet-reduced.zip: the real subset cut to fit beside them (200 classes,
      #   40 train and 20 val images each: ~27 MB)

then one `run` (timeout_s 600, carry [".gpucheck"]): the install takes seconds, and --budget 540
ends the script, files written, a minute before the command's limit:

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
        .gpucheck/wheels/*.whl && export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 && \
        python3 benchmarks/gpu_check.py --out $OUT --budget 540 --archive .gpucheck/tiny-imagenet-reduced.zip

and copy the figures of $OUT/gpu_check.md into docs/benchmarks.md with the card's name. Should the
command die anyway, $OUT/gpu_check.json still holds every part finished before.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import zipfile
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import yaml

STARTED = time.monotonic()  # the budget's clock

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
PARTS = ("cuda_tests", "throughput", "real_run")
# Each part's share of what is left of the budget when it starts; the last takes all the rest. The
# real-data run gets the most: its epochs are what a short session on a GPU lacks most.
SHARES = {"cuda_tests": 0.30, "throughput": 0.40, "real_run": 1.0}
RESERVE_SHARE, RESERVE_MAX = 0.05, 15.0  # of the budget, kept back for the last kill and writes
MIN_START = 1.0  # a part left less than this is not started: no subprocess of it would get anywhere
MAX_EPOCHS, QUICK_MAX_EPOCHS, PROBE_EPOCHS = 150, 3, 2
COMPILE_ALLOWANCE = 60.0  # params.yaml's estimate of one compile on CUDA: the matrix's first compiled row pays it
DRAIN_SECONDS = 5.0  # after a kill, how long to wait for the child's pipe to close
ROW_EVENT = "gpu_check-row: "  # how the matrix's child process hands each row to this one
EPOCH_LINE = re.compile(r"epoch (\d+)/(\d+): .*top-1 ([\d.]+) top-5 ([\d.]+)")  # tinyclf.train.run_log's line
TEST_LINE = re.compile(r"^(\S+::\S+) (PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)\b")  # pytest -v
TORCHRUN = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1"]


# ------------------------------------------------------------------------------ budget, parts, subprocesses
class Skip(Exception):
    """A part that cannot run here; the message says why."""


class CutShort(Exception):
    """A part stopped by its share of the budget; the message says where. Its figures so far stand."""


class Terminated(BaseException):
    """SIGTERM or SIGINT (a scheduler's time limit, Ctrl-C): stop the part, say so, write what was measured."""


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _terminate(signum, frame) -> None:
    raise Terminated(signal.Signals(signum).name)


@contextmanager
def stop_held():
    """A SIGTERM or SIGINT that lands inside the block is held and delivered when it ends. Around a
    child's start: raised inside Popen after the fork, the stop left the child running with no handle
    to kill it by (a test caught one outliving the run)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread receives signals
        return
    held: list[int] = []
    previous = {signum: signal.signal(signum, lambda signum, frame: held.append(signum)) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if held:
        signal.raise_signal(held[0])  # to the handler the block found: ours raises Terminated


@dataclass
class Check:
    """One run of this script: its arguments, its results so far and the clock of its budget."""

    args: argparse.Namespace
    results: dict

    def left(self) -> float:
        """Seconds the parts may still use: the budget less the time spent and the reserve."""
        reserve = min(RESERVE_MAX, RESERVE_SHARE * self.args.budget)
        return self.args.budget - reserve - (time.monotonic() - STARTED)

    def save(self) -> None:
        """Both files, each atomically: a run killed at any moment leaves valid ones. The markdown goes
        first, so that it holds at least what the JSON holds (a kill between the two leaves the JSON
        one write behind, never the report)."""
        from tinyclf import atomic

        self.results["elapsed_seconds"] = round(time.monotonic() - STARTED, 1)
        try:
            report = markdown(self.results)
        except Exception as exc:  # noqa: BLE001 - a record the report did not foresee must not stop the run
            report = f"# gpu_check\n\nNo report ({type(exc).__name__}: {exc}): gpu_check.json has every figure.\n"
        atomic.write_text(self.args.out / "gpu_check.md", report)
        # default=str: a figure of an unexpected type is written as text rather than losing the file.
        atomic.write_text(self.args.out / "gpu_check.json", json.dumps(self.results, indent=1, default=str) + "\n")


def part(check: Check, name: str, fn) -> None:
    """Run one part within its share of what is left; record its result, or why it stopped, without
    stopping the others. `fn(check, record, seconds)` writes its figures into `record` as it goes."""
    seconds = SHARES[name] * check.left()
    record = check.results[name] = {"status": "running", "share_seconds": round(seconds, 1)}
    print(f"gpu_check: {name} (at most {seconds:.0f} s) …", flush=True)
    check.save()
    start = time.monotonic()
    try:
        if seconds < MIN_START:
            raise CutShort("not started: the budget was spent")
        fn(check, record, seconds)
        record["status"] = "ok"
    except Skip as exc:
        record.update(status="skipped", why=str(exc))
    except CutShort as exc:
        record.update(status="cut short", why=str(exc))
    except Terminated as exc:
        record.update(status="cut short", why=f"the run was stopped by {exc}")
        raise
    except Exception as exc:  # noqa: BLE001 - recorded; the other parts still run
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc()[-3000:])
    finally:
        record["seconds"] = round(time.monotonic() - start, 1)
        check.save()
        print(f"gpu_check: {name}: {record['status']} ({record['seconds']} s)", flush=True)


@dataclass
class Finished:
    """What a bounded subprocess left: its exit code (None: killed at its deadline) and its output."""

    returncode: int | None
    output: str
    seconds: float


def run_bounded(cmd: list[str], seconds: float, env: dict, on_line=None) -> Finished:
    """Run `cmd` in the repository (stdout and stderr together) for at most `seconds`, then kill it and
    all it started. `on_line(line)` sees each line as it comes, in this thread."""
    start = time.monotonic()
    deadline = start + seconds
    lines: queue.Queue = queue.Queue()
    proc, output, killed = None, [], False
    try:
        with stop_held():  # a stop delivered here, once `proc` can be killed
            proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, errors="replace")
        threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
        while True:
            if not killed and time.monotonic() >= deadline:
                kill_tree(proc.pid)
                killed = True
            wait = DRAIN_SECONDS if killed else min(0.5, max(0.01, deadline - time.monotonic()))
            try:
                line = lines.get(timeout=wait)
            except queue.Empty:
                if killed:
                    break  # something out of the kill's reach still holds the pipe: stop reading
                continue
            if line is None:
                break
            output.append(line)
            if on_line is not None:
                on_line(line)
        try:  # the pipe closed; the process may still be finishing
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            killed = True
    finally:
        if proc is not None and proc.poll() is None:
            kill_tree(proc.pid)
        if proc is not None:
            proc.wait()
    return Finished(None if killed else proc.returncode, "".join(output), round(time.monotonic() - start, 1))


def _pump(stream, lines: queue.Queue) -> None:
    for line in iter(stream.readline, ""):
        lines.put(line)
    lines.put(None)


def kill_tree(pid: int) -> None:
    """SIGKILL `pid` and everything it started. torchrun starts its workers in sessions of their own,
    out of a process-group kill's reach, so the tree is read from /proc; all are stopped before they
    are killed, so that none starts another meanwhile (and none is orphaned out of the tree)."""
    tree = _descendants(pid) | {pid}
    for member in tree:
        _signal(member, signal.SIGSTOP)
    tree |= _descendants(pid)
    for member in tree:
        _signal(member, signal.SIGKILL)
    # A killed process runs on until the kernel has torn it down (its memory, a GPU context), which
    # on a busy machine takes a while: wait, so that "stopped" means nothing of it still runs.
    deadline = time.monotonic() + 10
    while any(_running(member) for member in tree) and time.monotonic() < deadline:
        time.sleep(0.02)


def _running(pid: int) -> bool:
    """Not yet dead: a zombie (dead, waiting to be reaped by its parent) has let go of everything."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])  # the name, in parentheses, may hold spaces
        except (OSError, IndexError, ValueError):
            continue  # it ended meanwhile
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass  # already gone


def child_env(hide_cuda: bool = False) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
           "PYTHONUNBUFFERED": "1"}  # lines as they happen: they mark the progress this script records
    if hide_cuda:
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def _installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment() -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda_runtime": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "cpu_count": os.cpu_count()}
    # Read from the installed metadata, not by importing: timm, albumentations and dvclive would take
    # seconds of the budget to import (ten on a loaded 2-core machine), only to report a version.
    for key, distributions in (("timm", ("timm",)), ("numpy", ("numpy",)),
                               ("cv2", ("opencv-python-headless", "opencv-python")),
                               ("dvclive", ("dvclive",)), ("albumentations", ("albumentations",))):
        info[key] = next((found for found in map(_installed_version, distributions) if found), None)
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=torch.cuda.get_device_name(0), gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    multiprocessors=props.multi_processor_count)
        smi = shutil.which("nvidia-smi")
        if smi:
            try:
                out = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"],
                                     check=False, capture_output=True, text=True, timeout=30)
                info["driver"] = out.stdout.strip() or None
            except subprocess.TimeoutExpired:
                info["driver"] = None  # a hung driver query must not take the budget
    return info


def cuda_tests(check: Check, record: dict, seconds: float) -> None:
    """`pytest -m cuda`; each test's outcome is saved as it ends, so a cut run says which ran."""
    outcomes = record["outcomes"] = {}

    def on_line(line: str) -> None:
        found = TEST_LINE.match(line)
        if found:
            outcomes[found[1].split("::", 1)[1]] = found[2].lower()
            check.save()

    # A temporary folder of its own: pytest clears its --basetemp first, and one inherited through
    # PYTEST_ADDOPTS (a test run that started this script) would be wiped under that run.
    with tempfile.TemporaryDirectory(prefix="gpu_check-tests-") as tmp:
        done = run_bounded([sys.executable, "-m", "pytest", "-m", "cuda", "-v", "-p", "no:cacheprovider",
                            "--basetemp", str(Path(tmp) / "basetemp"), str(REPO / "tests" / "train" / "test_cuda.py")],
                           seconds, child_env(), on_line)
    summary = [line.strip(" =") for line in done.output.splitlines()
               if re.search(r"\d+ (passed|failed|skipped|error)", line)]
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|skipped|errors?)", summary[-1])} \
        if summary else dict(Counter(outcomes.values()))
    record.update(summary=summary[-1] if summary else "", counts=counts, exit_code=done.returncode,
                  output_tail=done.output[-4000:])
    if done.returncode is None:
        last = done.output.splitlines()[-1] if done.output and not done.output.endswith("\n") else ""
        running = f", during {last.split()[0]}" if "::" in last else ""
        raise CutShort(f"its share ran out after {len(outcomes)} tests{running}")
    if done.returncode not in (0, 5) and not counts.get("failed") and not counts.get("error"):
        raise RuntimeError(f"pytest exited {done.returncode}: {done.output[-3000:]}")


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


def matrix_sizes(quick: bool) -> dict:
    model, size, batch, classes = ("test_resnet", 32, 32, 10) if quick else ("tiny_resnet50", 64, 512, 200)
    warmup, steps = (2, 3) if quick else (15, 30)
    return {"model": model, "image_size": size, "global_batch": batch, "classes": classes, "warmup_steps": warmup,
            "timed_steps": steps}


# What the train stage runs on CUDA by default: bf16 (auto, from compute capability 8.0), compiled,
# channels_last, the device data backend with the splits on the GPU when they fit.
STAGE_DEFAULT = dict(precision="auto", channels_last=True, compile=True, aug_backend="device", device_data="auto")


def matrix_configs(quick: bool, on_cuda: bool) -> list[tuple[str, dict]]:
    """The rows in order: the stage's default first (a short share measures it before anything else),
    then each with one param changed from it, named as `-S` sets it: what that choice costs or buys."""
    changes = [("train.device_data=host", dict(device_data="host")),
               ("train.aug_backend=workers", dict(aug_backend="workers")), ("train.compile=false", dict(compile=False)),
               ("train.channels_last=false", dict(channels_last=False)),
               ("train.precision=fp32", dict(precision="fp32"))]
    rows = [("default", STAGE_DEFAULT)] + [(name, {**STAGE_DEFAULT, **change}) for name, change in changes]
    if quick and not on_cuda:  # inductor alone would outlast the quick run on a small CPU
        rows = [(f"{name} (compile skipped: --quick on CPU)", {**config, "compile": False}) if config["compile"]
                else (name, config) for name, config in rows]
    return rows


def throughput(check: Check, record: dict, seconds: float) -> None:
    """The matrix, in a child process held to this part's share; each row is saved as the child reports it."""
    quick, device_name = check.args.quick, check.args.device
    sizes = matrix_sizes(quick)
    record.update(model=sizes["model"], image_size=sizes["image_size"], global_batch=sizes["global_batch"],
                  timed_steps=sizes["timed_steps"], rows=[], not_measured=[])

    def on_line(line: str) -> None:
        if line.startswith(ROW_EVENT):
            event = json.loads(line[len(ROW_EVENT):])
            kind = event.pop("event")
            if kind == "measuring":  # in a file left by a killed run: the row under way
                record["measuring"] = event["config"]
            else:
                record.pop("measuring", None)
                record[kind].append(event)
            check.save()

    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:  # removed here even when the child is killed
        cmd = [sys.executable, str(Path(__file__).resolve()), "--throughput-child", tmp, "--device", device_name,
               "--budget", f"{seconds:.1f}", *(["--quick"] if quick else [])]
        done = run_bounded(cmd, seconds, child_env(), on_line)
    seen = {row["config"] for row in record["rows"] + record["not_measured"]}
    missing = [name for name, _ in matrix_configs(quick, device_name == "cuda") if name not in seen]
    if done.returncode is None and missing:  # killed with every row reported: only its exit was cut
        measuring = record.pop("measuring", None)
        record["not_measured"] += [{"config": name, "why": "not finished: the share ran out while it was measured"
                                    if name == measuring else "not started: the share ran out"} for name in missing]
        raise CutShort(f"its share ran out during row '{measuring}'" if measuring else
                       "its share ran out before the first row (start-up, synthetic data)" if not record["rows"]
                       else "its share ran out between rows")
    if done.returncode not in (0, None):
        raise RuntimeError(f"the matrix exited {done.returncode}: {done.output[-3000:]}")
    if record["not_measured"]:
        raise CutShort(f"its share ran out before row '{record['not_measured'][0]['config']}'")


def throughput_child(workdir: Path, device_name: str, quick: bool, seconds: float) -> None:
    """The matrix, in the process `throughput` holds to `seconds`: one line per row on stdout as soon as
    it is measured. A row starts only while the longest so far (and a compile, if it is the first to
    compile) fits in what is left; it and the rows after it are reported as not measured otherwise."""
    import torch

    from tinyclf.train.cost import train_flops_per_image

    start = time.monotonic()
    device, sizes = torch.device(device_name), matrix_sizes(quick)
    flops = train_flops_per_image(sizes["model"], sizes["classes"], sizes["image_size"])  # on the meta device
    images = sizes["global_batch"] * (sizes["warmup_steps"] + sizes["timed_steps"] + 1)
    prepared = synthetic_prepared(workdir / "prepared", images, sizes["image_size"], sizes["classes"])
    configs = matrix_configs(quick, device.type == "cuda")
    longest, compiled = 0.0, False
    for index, (name, config) in enumerate(configs):
        need = longest + (COMPILE_ALLOWANCE if config["compile"] and not compiled else 0.0)
        left = seconds - (time.monotonic() - start)
        if left < need:
            why = f"not started: {left:.0f} s of the share left, about {need:.0f} s needed"
            for skipped, _ in configs[index:]:
                _emit("not_measured", config=skipped, why=why)
            return
        _emit("measuring", config=name)
        row_start = time.monotonic()
        row = measure(prepared, device, sizes, config, flops)
        compiled = compiled or config["compile"]
        longest = max(longest, time.monotonic() - row_start)
        _emit("rows", config=name, **row, seconds=round(time.monotonic() - row_start, 1))


def _emit(event: str, **fields) -> None:
    print(ROW_EVENT + json.dumps({"event": event, **fields}), flush=True)


def measure(prepared: Path, device, sizes: dict, config: dict, flops: float | None) -> dict:
    """Images/s through the stage's loop with the real data path, and with one fixed batch (no data path)."""
    import torch

    from tinyclf.params import params_from_dict
    from tinyclf.train.cost import mfu
    from tinyclf.train.distributed import DistInfo
    from tinyclf.train.setup import stage_loop

    batch, warmup, steps = sizes["global_batch"], sizes["warmup_steps"], sizes["timed_steps"]
    tree = yaml.safe_load((REPO / "params.yaml").read_text())  # the default recipe, as committed
    tree["train"].update(model=sizes["model"], batch_size=batch, workers=min(8, os.cpu_count() or 1), **config)
    train_params = params_from_dict(tree).train
    info = DistInfo(rank=0, world_size=1, local_rank=0, local_world_size=1, device=device)
    # As a run builds it, the stage's cuDNN autotuning and TF32 (`configure_determinism`) included.
    loop = stage_loop(prepared, train_params, info)
    batches = loop.data.train_batches
    loop.steps(batches.epoch(0), warmup)  # compile, cuDNN autotuning, lazy optimizer state
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with_data = loop.steps(batches.epoch(1), steps)["seconds"]
    fixed = next(iter(batches.epoch(2)))
    without_data = loop.steps(iter([fixed] * steps), steps)["seconds"]
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


def real_run(check: Check, record: dict, seconds: float) -> None:
    """Preprocess a real archive, time a probe of PROBE_EPOCHS epochs, then train as many as fit in what is left."""
    args = check.args
    if args.archive is None or not args.archive.is_file():
        raise Skip(f"no Tiny ImageNet archive at {args.archive} (the real subset lives in ../shared/data; on a GPU "
                   "machine carry the one --prepare makes)")
    deadline = time.monotonic() + seconds
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        tmp = Path(tmp)
        tree = real_params(tmp, args.archive, args.device, args.quick)
        env = child_env(hide_cuda=args.device == "cpu")
        record["reached"] = {"run": "preprocess"}
        check.save()
        done = run_bounded([sys.executable, "stages/preprocess.py", "--raw", str(tmp / "raw"), "--out",
                            str(tmp / "prepared"), "--params", str(write_params(tmp / "params.yaml", tree)),
                            "--no-progress"], deadline - time.monotonic(), env)
        _finished(done, "stages/preprocess.py")
        stats = json.loads((tmp / "prepared" / "stats.json").read_text())
        record.update(model=tree["train"]["model"], train_images=stats["splits"]["train"]["count"],
                      val_images=stats["splits"]["val"]["count"])
        run = TrainStage(check, record, tmp, env, deadline)
        probe = record["probe"] = run("probe", with_epochs(tree, PROBE_EPOCHS))
        epochs = record["epochs_planned"] = fit_epochs(probe, deadline - time.monotonic(),
                                                       QUICK_MAX_EPOCHS if args.quick else MAX_EPOCHS)
        if epochs <= PROBE_EPOCHS:
            record["sized"] = f"no more than the probe's {PROBE_EPOCHS} epochs fit in what was left: its figures stand"
            record.update({key: probe[key] for key in ("epochs", "val_top1", "val_top5", "run")})
            return
        record.update(run("run", with_epochs(tree, epochs)))


def real_params(tmp: Path, archive: Path, device_name: str, quick: bool) -> dict:
    """tmp/raw/ holding the archive (cut down with --quick), and the params the stages run with."""
    raw = tmp / "raw"
    raw.mkdir()
    if quick:
        reduced_archive(archive, raw / "tiny-imagenet-200.zip", 10, 40, 10)
    else:
        shutil.copy(archive, raw / "tiny-imagenet-200.zip")
    tree = yaml.safe_load((REPO / "params.yaml").read_text())
    tree["preprocess"]["workers"] = 0
    if quick:
        tree["data"]["image_size"] = 32
        tree["train"].update(model="test_resnet", batch_size=32, warmup_epochs=0, workers=0, crop="pad_crop")
    if device_name == "cpu":
        tree["train"].update(aug_backend="workers", compile=False)
    return tree


def with_epochs(tree: dict, epochs: int) -> dict:
    train = {**tree["train"], "epochs": epochs, "warmup_epochs": min(tree["train"]["warmup_epochs"], epochs // 3)}
    return {**tree, "train": train}


def write_params(path: Path, tree: dict) -> Path:
    path.write_text(yaml.safe_dump(tree))
    return path


def fit_epochs(probe: dict, left: float, cap: int) -> int:
    """Epochs of a fresh run that fit in `left` seconds: the probe's fixed cost once (start, data, compile,
    outputs; a warm compile cache only makes it shorter), then its measured epoch each, less a margin
    of one epoch or a twentieth of the time, whichever is more: epoch times vary, and a run cut short
    loses its final evaluation and outputs."""
    epoch = max(probe["epoch_seconds"], 1e-3)
    margin = max(epoch, left / 20)
    return max(0, min(cap, int((left - probe["fixed_seconds"] - margin) / epoch)))


@dataclass
class TrainStage:
    """stages/train.py under torchrun, in a folder of its own under `tmp`, until `deadline`."""

    check: Check
    record: dict
    tmp: Path
    env: dict
    deadline: float

    def __call__(self, name: str, tree: dict) -> dict:
        """Train for tree's epochs; each epoch's line is saved as it comes (a killed run still says how far
        it got). Returns the run's figures and its timing: one epoch (the time between the last two
        epochs' lines: training, validation, checkpoint) and the rest (start, data, compile, outputs)."""
        out = self.tmp / name
        out.mkdir()
        marks: list[float] = []
        self.record["reached"] = {"run": name}
        self.check.save()
        start = time.monotonic()

        def on_line(line: str) -> None:
            found = EPOCH_LINE.search(line)
            if found:
                marks.append(time.monotonic() - start)
                self.record["reached"] = {"run": name, "epoch": int(found[1]), "of": int(found[2]),
                                          "val_top1": float(found[3]), "val_top5": float(found[4])}
                self.check.save()

        done = run_bounded([sys.executable, *TORCHRUN, "stages/train.py", "--data", str(self.tmp / "prepared"),
                            "--model-out", str(out / "model.pt"), "--live", str(out / "live"), "--checkpoints",
                            str(out / "ck"), "--params", str(write_params(out / "params.yaml", tree)),
                            "--no-progress"], self.deadline - start, self.env, on_line)
        _finished(done, f"the {name} run, after {len(marks)} of {tree['train']['epochs']} epochs")
        epoch = marks[-1] - marks[-2] if len(marks) > 1 else done.seconds  # no second epoch: all of it, to be safe
        summary = json.loads((out / "live" / "metrics.json").read_text())
        return {"epochs": len(marks) or tree["train"]["epochs"], "val_top1": summary["val"]["top1"],
                "val_top5": summary["val"]["top5"], "wall_seconds": done.seconds, "epoch_seconds": round(epoch, 2),
                "fixed_seconds": round(max(0.0, done.seconds - len(marks) * epoch), 1),
                "run": json.loads((out / "live" / "run.json").read_text()), "log_tail": done.output[-2000:]}


def _finished(done: Finished, what: str) -> None:
    if done.returncode is None:
        raise CutShort(f"its share ran out during {what}")
    if done.returncode != 0:
        raise RuntimeError(f"{what} exited {done.returncode}: {done.output[-2000:]}")


# ------------------------------------------------------------------------------ report
def markdown(results: dict) -> str:
    env = results.get("environment", {})
    lines = ["# gpu_check", "", *_banner(results),
             (f"- device: {results['device']}{' (--quick)' if results['quick'] else ''}; budget "
              f"{results['budget_seconds']:g} s (`--budget`), {results.get('elapsed_seconds')} s spent"),
             (f"- GPU: {env.get('gpu', 'none')}, driver {env.get('driver')}, CUDA {env.get('cuda_runtime')}, "
              f"torch {env.get('torch')}, timm {env.get('timm')}, Python {env.get('python')}"), ""]
    for name in PARTS:
        r = results.get(name, {})
        spent = f" ({r['seconds']} s of its {r['share_seconds']} s)" if "seconds" in r else ""
        lines += [f"## {name}: {r.get('status')}{spent}", ""]
        if r.get("status") == "not reached":
            lines += ["Not reached: the run ended before this part began.", ""]
        elif r.get("why"):
            lines += [f"{'Skipped' if r['status'] == 'skipped' else 'Stopped'}: {r['why']}.", ""]
        if r.get("status") == "failed":
            lines += ["```", r.get("error", ""), "```", ""]
        lines += [*{"cuda_tests": _cuda_lines, "throughput": _throughput_lines, "real_run": _real_lines}[name](r), ""]
    return "\n".join(lines)


def _banner(results: dict) -> list[str]:
    """How to read the file, when it holds less than a whole run: said first."""
    if not results.get("complete"):
        how = f"it was stopped by {results['stopped_by']}" if results.get("stopped_by") else \
            "it was killed (a time limit, the machine taken back), or it is still running"
        return [(f"**Partial result**: written {results.get('elapsed_seconds')} s into a run that did not finish: "
                 f"{how}. Every figure below was measured; what is missing was not. A part *not reached* never "
                 "began; the part *running* was under way when this was written, and what it had measured by then "
                 "is shown."), ""]
    cut = [name for name in PARTS if results.get(name, {}).get("status") == "cut short"]
    if cut:
        return [(f"**Cut short**: {', '.join(cut)} ran out of {'its' if len(cut) == 1 else 'their'} share of "
                 f"the {results['budget_seconds']:g} s budget; the figures are what was reached, and each says where "
                 "it stopped."), ""]
    return []


def _cuda_lines(r: dict) -> list[str]:
    if r.get("summary"):
        return [r["summary"]]
    done = r.get("outcomes") or {}
    return [f"Finished before the stop: {', '.join(f'{t} {o}' for t, o in done.items()) or 'none'}."] if done else []


def _throughput_lines(r: dict) -> list[str]:
    if "rows" not in r:
        return []
    lines = [f"{r['model']} at {r['image_size']}px, global batch {r['global_batch']}, {r['timed_steps']} timed steps",
             "", "| config | images/s | step (ms) | data share | peak memory (GiB) | MFU |",
             "|---|--:|--:|--:|--:|--:|"]
    for row in r["rows"]:
        mfu_text = "n/a" if row["mfu"] is None else f"{row['mfu']:.1%}"
        lines.append(f"| {row['config']} | {row['images_per_s']:,.0f} | {row['step_ms']} | {row['data_share']:.1%} | "
                     f"{row['peak_memory_gib']} | {mfu_text} |")
    lines += [f"| {row['config']} | not measured: {row['why']} | | | | |" for row in r.get("not_measured", [])]
    return lines


def _real_lines(r: dict) -> list[str]:
    lines = []
    if "probe" in r:
        p = r["probe"]
        lines.append(f"Probe: {p['epochs']} epochs in {p['wall_seconds']} s: one epoch (training, validation, "
                     f"checkpoint) {p['epoch_seconds']} s, the rest (start, data, compile, outputs) "
                     f"{p['fixed_seconds']} s; val top-1 {p['val_top1']:.2%}. Sized from it: "
                     f"{r.get('epochs_planned')} epochs.")
    if r.get("sized"):
        lines.append(f"Not run again: {r['sized']}.")
    if "run" in r and "epochs" in r:
        run = r["run"]
        mfu_text = "n/a" if run.get("mfu") is None else f"{run['mfu']:.1%} ({run.get('mfu_basis')})"
        lines.append(f"{r['model']}, {r['epochs']} epochs on {r['train_images']:,} real train images: val top-1 "
                     f"{r['val_top1']:.2%}, top-5 {r['val_top5']:.2%}; {run.get('images_per_s')} images/s, MFU "
                     f"{mfu_text}, {run.get('train_seconds')} s of training")
    elif isinstance(r.get("reached"), dict) and r.get("status") != "skipped":
        reached = r["reached"]
        top = f": val top-1 {reached['val_top1']:.2%}, top-5 {reached['val_top5']:.2%}" if "epoch" in reached else ""
        where = f" epoch {reached['epoch']} of {reached['of']}" if "epoch" in reached else ""
        lines.append(f"Reached: the {reached['run']}{' run' if 'epoch' in reached else ''}{where}{top}.")
    return [text for line in lines for text in ("", line)][1:]  # one paragraph each


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="directory for gpu_check.json and gpu_check.md")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: the whole script on a CPU in about a minute")
    parser.add_argument("--budget", type=float, default=420.0, metavar="SECONDS",
                        help="wall-clock seconds for the whole script, files written (default 420); the parts' "
                             "shares are in the docstring")
    parser.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE, help="a Tiny ImageNet zip for the real run")
    parser.add_argument("--prepare", type=Path, metavar="DIR", help="write what a GPU machine lacks into DIR, and stop")
    parser.add_argument("--throughput-child", type=Path, help=argparse.SUPPRESS)  # the matrix's own process
    return parser


def main() -> int:
    parser = build_parser()
    args = parser.parse_args()
    if args.budget <= 0:
        parser.error(f"--budget must be a positive number of seconds, not {args.budget:g}")
    if args.prepare:
        prepare(args.prepare, args.archive)
        return 0
    if args.throughput_child:
        throughput_child(args.throughput_child, args.device, args.quick, args.budget)
        return 0
    if args.out is None:
        parser.error("--out is required")
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device here: use --device cpu (with --quick for the CI check)")
    args.out.mkdir(parents=True, exist_ok=True)
    return run_check(args)


def run_check(args: argparse.Namespace) -> int:
    """The parts in order, the files rewritten as they go; SIGTERM or SIGINT ends the run, said in the files."""
    results = {"complete": False, "device": args.device, "quick": args.quick, "budget_seconds": args.budget,
               "shares": SHARES, "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "elapsed_seconds": 0.0, "environment": {}, **{name: {"status": "not reached"} for name in PARTS}}
    check = Check(args, results)
    for signum in STOP_SIGNALS:
        signal.signal(signum, _terminate)
    stopped = None
    try:
        check.save()  # from the start, a file that says what is missing
        results["environment"] = environment()
        for name, fn in zip(PARTS, (cuda_tests, throughput, real_run), strict=True):
            part(check, name, fn)
        results["complete"] = True
    except Terminated as exc:
        stopped = results["stopped_by"] = str(exc)
    check.save()
    print((args.out / "gpu_check.md").read_text())
    if stopped:
        return 128 + signal.Signals[stopped].value
    failed = [name for name in PARTS if results[name]["status"] == "failed"]
    failed += ["cuda_tests"] if results["cuda_tests"].get("counts", {}).get("failed") else []
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
