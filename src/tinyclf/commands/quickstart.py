"""`make quickstart`: the whole pipeline, offline, on a small generated dataset, in a few CPU minutes.

It is an ordinary DVC experiment named `quickstart`, run with the overrides below in a temporary
copy of the repository (`dvc exp run --temp`), so the stages, caching and outputs are exactly those
of a real run, only the data is generated (and says so everywhere), and the workspace stays at the
committed reference setup: `git status` shows nothing new. Afterwards `dvc exp show` lists it, its
report and evaluation are copied to the git-ignored `quickstart/` folder, and `dvc exp apply
quickstart` brings all its outputs (model included) into the workspace. Running it again replaces it.

    python -m tinyclf.commands.quickstart [--dry-run]
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tinyclf.errors import ArgumentParser

EXPERIMENT = "quickstart"
# Where the experiment's report and evaluation are copied (git-ignored), keeping the paths they
# have in the repository so the report's links to the evaluation plots work.
OUT_DIR = Path("quickstart")
COPIED = ("results/summary", "results/evaluate")

# A 10-class generated dataset in the official Tiny ImageNet zip format, resized to 32x32, and
# a few epochs of the reference model: small enough for 2 CPU cores, big enough to learn.
OVERRIDES = {
    "data.dataset": "tiny-imagenet",
    "data.image_size": 32,
    # A fifth of each train class becomes val (which chooses the epoch kept); the generated val set
    # becomes a test split that only the evaluation reads, as a user's held-out photos would be.
    "data.val_from_train": 0.2,
    "download.source": "generated",
    "download.generated.num_classes": 10,
    "download.generated.train_per_class": 60,
    "download.generated.val_per_class": 20,
    "download.generated.test_images": 10,
    "train.model": "tiny_resnet50",
    "train.epochs": 3,
    "train.batch_size": 64,
    "train.lr": 0.4,
    "train.warmup_epochs": 1,
    "train.crop": "pad_crop",
    "train.mixup": 0.0,
    "train.cutmix": 0.0,
    "train.ema": False,
    "train.save_weights": "raw",
    "train.workers": 0,  # one less process on 2 cores: faster, same results
    "evaluate.workers": 0,
}


def dvc_arguments(dry_run: bool = False) -> list[str]:
    """`dvc` arguments of the quickstart experiment."""
    args = ["exp", "run", "--temp", "-n", EXPERIMENT]
    for key, value in OVERRIDES.items():
        args += ["-S", f"{key}={value}"]
    return args + (["--dry"] if dry_run else [])


class _DropMissingHashWarnings(logging.Filter):
    """DVC checks out every output the lock file knows before an experiment; in a fresh clone there
    is no lock file, and it warns "No file hash info found for '…'. It won't be created." for each
    output the run is about to create. Harmless, but a newcomer reads them as failures."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No file hash info found for")


_MISSING_HASH_FILTER = _DropMissingHashWarnings()  # one instance: addFilter skips one already added


def run_dvc(args: list[str]) -> int:
    """`dvc <args>` in this process (the same as the `dvc` command), without those warnings."""
    from dvc.cli import main as dvc_main

    logging.getLogger("dvc_data.index.checkout").addFilter(_MISSING_HASH_FILTER)
    return dvc_main(args)


def experiment_rev(root: Path) -> str | None:
    """The commit of this baseline's `quickstart` experiment (DVC keeps it under refs/exps), or None."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
    refs = subprocess.run(["git", "for-each-ref", "refs/exps", "--format=%(objectname) %(refname)"],
                          cwd=root, capture_output=True, text=True, check=True).stdout.splitlines()
    baseline = head.stdout.strip()
    # refs/exps/<2 chars>/<rest of the baseline sha>/<name>
    suffix = f"/{baseline[:2]}/{baseline[2:]}/{EXPERIMENT}"
    found = [line.split()[0] for line in refs if line.endswith(suffix)]
    return found[0] if found else None


def copy_results(root: Path, rev: str) -> Path:
    """Copy the experiment's report and evaluation into OUT_DIR (replacing an earlier copy)."""
    from dvc.api import DVCFileSystem

    out = root / OUT_DIR
    staging = out.with_name(out.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    fs = DVCFileSystem(str(root), rev=rev)
    for path in COPIED:
        fs.get(path, str(staging / path), recursive=True)
    for leftover in staging.rglob(".gitignore"):  # DVC's own, meaningless in this copy
        leftover.unlink()
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m tinyclf.commands.quickstart",
        description="Run all seven stages on a small generated dataset (offline, CPU) as the DVC experiment "
        f"'{EXPERIMENT}', leaving the workspace untouched, and copy its report to {OUT_DIR}/.",
    )
    parser.add_argument("--dry-run", action="store_true", help="show the dvc command and stages without running them")
    args = parser.parse_args(argv)

    root = Path.cwd()
    if not (root / "dvc.yaml").exists():
        print("quickstart: run it from the repository root (no dvc.yaml here)", file=sys.stderr)
        return 1
    if not (root / ".git").exists() or shutil.which("git") is None:
        print("quickstart: needs a git checkout of tinyclf (dvc exp run records experiments in git)", file=sys.stderr)
        return 1

    start = time.monotonic()
    if not args.dry_run and experiment_rev(root) is not None:
        # Replaced rather than forced (`-f` would re-run every stage): DVC's run cache then restores
        # the stages whose outputs are all cached (download, preprocess, evaluate).
        print(f"quickstart: replacing the earlier '{EXPERIMENT}' experiment", flush=True)
        if run_dvc(["exp", "remove", EXPERIMENT]) != 0:
            return _failed("dvc exp remove", 1)
    dvc_args = dvc_arguments(args.dry_run)
    print("quickstart: dvc " + " ".join(dvc_args), flush=True)
    code = run_dvc(dvc_args)
    if code != 0:
        return _failed("dvc exp run", code)
    if args.dry_run:
        return 0
    rev = experiment_rev(root)
    if rev is None:
        return _failed(f"finding the '{EXPERIMENT}' experiment after dvc exp run", 1)
    out = copy_results(root, rev)
    minutes = (time.monotonic() - start) / 60
    metrics = json.loads((out / "results/evaluate/metrics.json").read_text())
    evaluated = json.loads((out / "results/evaluate/per_class.json").read_text())
    print()
    print(f"quickstart: all seven stages ran in {minutes:.1f} min on GENERATED data (not a Tiny ImageNet result).")
    split = evaluated.get("split", "val")
    print(f"  {split} top-1 {metrics['top1']:.2%}  top-5 {metrics['top5']:.2%}  on {evaluated['num_images']} {split} "
          "images" + (" (val chose the epoch kept)" if split == "test" else ""))
    print(f"  report:      {OUT_DIR}/results/summary/report.md")
    print(f"  model card:  {OUT_DIR}/results/summary/model_card.md")
    print("  compare:     tinyclf compare   (or dvc exp show)   its outputs in the workspace: "
          f"dvc exp apply {EXPERIMENT}")
    print("  The workspace is unchanged: params.yaml is still the reference setup (dvc repro runs it).")
    # Experiments run from HEAD, the reference setup: one from the quickstart's setup would differ
    # from HEAD in every quickstart param, more columns than `dvc exp show --only-changed` can show.
    # A branch of the quickstart is a baseline with its params and results; runs from it differ in
    # what the user changed.
    print(f"  try a change from this setup: dvc exp branch {EXPERIMENT} my-setup && git checkout my-setup "
          "&& dvc checkout, then dvc exp run -S train.lr=0.2 and dvc exp show --only-changed")
    return 0


def _failed(what: str, code: int) -> int:
    print(f"quickstart: {what} failed (exit {code}); the output above says why", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
