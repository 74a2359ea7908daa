"""Does fine-tuning beat training from scratch on a few photos per class, and do the fine-tuning
controls (`train.freeze`, `train.layer_decay`) move it? All on this CPU, on real photos.

    .venv/bin/python benchmarks/finetune.py [--source-epochs 12] [--epochs 30] [--seeds 3] [--json out.json]
    # about 25 min on 2 cores

From the real Tiny ImageNet subset (`../shared/data`), ten classes are drawn (seeded) as the target
task and the other 190 are the source, each written as an own photo folder (`data.dataset: folder`,
train/ and val/ class folders of the subset's original JPEGs) and run through the stages themselves
(`stages/download.py`, `preprocess.py`, `train.py`: one process each) at 32 px:
- source: resnet18 from scratch on the 190 classes (100 train photos each, 10 val photos each),
  `--source-epochs` epochs; its weights are then written as a Hugging Face / timm folder
  (config.json + model.safetensors, as `hf download` leaves one) and read back through `train.init`.
- target: the ten classes, all 50 val photos each (500 images), and 30 train photos each (a seeded
  draw) or all 100 the subset has: does what pays on little data still pay on more? Each way with
  `--seeds` seeds, the same recipe and the same `--epochs`: scratch (`train.init: none`); full
  fine-tuning (every layer trains from the first step); linear probe then fine-tune
  (`train.freeze: backbone` for the first third of the epochs); and, on 30 photos, full
  fine-tuning with layer-wise lr decay 0.8, and with a 10x classifier rate, each control alone.

Reported per way: val top-1 of the last epoch (`train.keep: last`: nothing is chosen on val, so val
is an honest test here), mean and spread over the seeds, and the train seconds. Figures:
docs/benchmarks.md, "Fine-tuning on a few photos".
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from stage_runs import params_file, stage

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ZIP = REPO.parent / "shared" / "data" / "tiny-imagenet-200-subset.zip"
TARGET_CLASSES, SOURCE_VAL = 10, 10
TARGET_SIZES = (30, 100)  # train photos per target class: a few, and all the subset has
MODEL = "resnet18"
# One recipe for every run: 32 px, pad-crop and flips, label smoothing, no mixing (too few images
# per batch for it to help), no EMA (short runs), SGD with warmup then cosine.
RECIPE = {"data.image_size": 32, "preprocess.workers": 1, "train.model": MODEL,
          "train.crop": "pad_crop", "train.mixup": 0.0, "train.cutmix": 0.0, "train.ema": False,
          "train.save_weights": "raw", "train.keep": "last", "train.workers": 0, "train.warmup_epochs": 2,
          "train.compile": False, "evaluate.workers": 0}
SOURCE = {"train.batch_size": 128, "train.lr": 0.4}
TARGET = {"train.batch_size": 32, "train.lr": 0.2}
WAYS = {  # name -> (params on top of TARGET, the target sizes it runs on); freeze epochs set from --epochs
    "scratch": ({}, TARGET_SIZES),
    "full fine-tuning": ({"train.init": "SOURCE"}, TARGET_SIZES),
    "linear probe, then fine-tune": ({"train.init": "SOURCE", "train.freeze": "backbone"}, TARGET_SIZES),
    "full fine-tuning, layer decay 0.8": ({"train.init": "SOURCE", "train.layer_decay": 0.8}, (30,)),
    "full fine-tuning, classifier lr x10": ({"train.init": "SOURCE", "train.head_lr_scale": 10.0}, (30,)),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zip", type=Path, default=DEFAULT_ZIP,
                        help="the real Tiny ImageNet subset (default %(default)s)")
    parser.add_argument("--source-epochs", type=int, default=12,
                        help="epochs of the source model (default %(default)s)")
    parser.add_argument("--epochs", type=int, default=30, help="epochs of every target run (default %(default)s)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per way (default %(default)s)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser.parse_args()


# ------------------------------------------------------------------------------ photo folders
def read_subset(zip_path: Path) -> tuple[dict[str, list[bytes]], dict[str, list[bytes]]]:
    """Per class id, the subset's train and val JPEG bytes, in the archive's order."""
    if not zip_path.is_file():
        raise SystemExit(f"finetune: no real Tiny ImageNet subset at {zip_path} (--zip names it)")
    train: dict[str, list[bytes]] = {}
    val: dict[str, list[bytes]] = {}
    with zipfile.ZipFile(zip_path) as zf:
        names = sorted(zf.namelist())
        annotations = next(n for n in names if n.endswith("val/val_annotations.txt"))
        val_class = dict(line.split("\t")[:2] for line in zf.read(annotations).decode().splitlines() if line)
        for name in names:
            parts = name.split("/")
            if name.endswith(".JPEG") and len(parts) >= 4 and parts[-4] == "train" and parts[-2] == "images":
                train.setdefault(parts[-3], []).append(zf.read(name))
            elif name.endswith(".JPEG") and parts[-3:-1] == ["val", "images"]:
                val.setdefault(val_class[parts[-1]], []).append(zf.read(name))
    return train, val


def write_folder(root: Path, train: dict[str, list[bytes]], val: dict[str, list[bytes]]) -> Path:
    for split, photos in (("train", train), ("val", val)):
        for wnid, jpegs in photos.items():
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i, jpeg in enumerate(jpegs):
                (folder / f"{wnid}_{i}.JPEG").write_bytes(jpeg)
    return root


def make_folders(tmp: Path, zip_path: Path) -> tuple[Path, dict[int, Path], list[str]]:
    """(source folder, {train photos per class: target folder}, target class ids): a seeded draw of
    the target classes and of their train photos; the source's val is the first SOURCE_VAL val
    photos of each class."""
    train, val = read_subset(zip_path)
    rng = np.random.default_rng(0)
    wnids = sorted(train)
    target = sorted(rng.choice(wnids, TARGET_CLASSES, replace=False).tolist())
    source = [w for w in wnids if w not in target]
    source_dir = write_folder(tmp / "source_photos", {w: train[w] for w in source},
                              {w: val[w][:SOURCE_VAL] for w in source})
    targets = {}
    for size in TARGET_SIZES:
        picks = {w: [train[w][i] for i in sorted(rng.choice(len(train[w]), size, replace=False))] for w in target}
        targets[size] = write_folder(tmp / f"target{size}_photos", picks, {w: val[w] for w in target})
    return source_dir, targets, target


def prepare(tmp: Path, name: str, photos: Path) -> Path:
    params = params_file(tmp / f"{name}_prepare.yaml", "folder", {**RECIPE, "download.source": str(photos)})
    stage("download", params, "--out", str(tmp / f"{name}_raw"))
    stage("preprocess", params, "--raw", str(tmp / f"{name}_raw"), "--out", str(tmp / name))
    return tmp / name


# ------------------------------------------------------------------------------ training
def train(tmp: Path, name: str, prepared: Path, overrides: dict) -> dict:
    """One train stage run; {"top1": last epoch's val top-1, "seconds": training time}."""
    params = params_file(tmp / f"{name}.yaml", "folder", {**RECIPE, "download.source": "photos", **overrides})
    live = tmp / f"{name}_live"
    stage("train", params, "--data", str(prepared), "--model-out", str(tmp / f"{name}.pt"), "--live", str(live),
          "--checkpoints", str(tmp / f"{name}_ck"), quiet=True)
    metrics = json.loads((live / "metrics.json").read_text())
    record = json.loads((live / "run.json").read_text())
    return {"top1": metrics["val"]["top1"], "seconds": record["train_seconds"]}


def save_as_hub_folder(model_file: Path, folder: Path, num_classes: int) -> Path:
    """The source model's weights as `hf download timm/<name> --local-dir` leaves a timm model."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir()
    state = torch.load(model_file, map_location="cpu", weights_only=True)["state_dict"]
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"architecture": MODEL, "num_classes": num_classes,
                                                    "pretrained_cfg": {"tag": "tinyclf_190"}}))
    return folder


def run_ways(tmp: Path, prepared: Path, size: int, source: Path, epochs: int, seeds: int) -> dict:
    """Every way that runs on `size` photos per class, `seeds` times: its val top-1 per seed, mean, spread."""
    results = {}
    for way, (overrides, sizes) in WAYS.items():
        if size not in sizes:
            continue
        runs = []
        for seed in range(seeds):
            settings = {**TARGET, "train.epochs": epochs, "train.seed": seed, **overrides}
            if settings.get("train.init") == "SOURCE":
                settings["train.init"] = str(source)
            if settings.get("train.freeze") == "backbone":
                settings["train.freeze_epochs"] = max(1, epochs // 3)
            runs.append(train(tmp, f"target{size}_{len(results)}_{seed}", prepared, settings))
            print(f"{size} photos per class, {way}, seed {seed}: val top-1 {runs[-1]['top1']:.1%} "
                  f"({runs[-1]['seconds']:.0f} s)", flush=True)
        tops = [r["top1"] for r in runs]
        results[way] = {"top1": tops, "mean": statistics.mean(tops),
                        "spread": statistics.stdev(tops) if len(tops) > 1 else 0.0,
                        "seconds": statistics.mean(r["seconds"] for r in runs)}
    return results


def main() -> None:
    args = parse_args()
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="finetune-") as name:
        tmp = Path(name)
        source_photos, target_photos, target_classes = make_folders(tmp, args.zip)
        source_prepared = prepare(tmp, "source", source_photos)
        target_prepared = {size: prepare(tmp, f"target{size}", photos) for size, photos in target_photos.items()}
        source = train(tmp, "source", source_prepared, {**SOURCE, "train.epochs": args.source_epochs})
        print(f"source: {MODEL}, 190 classes, {args.source_epochs} epochs: val top-1 {source['top1']:.1%} "
              f"({source['seconds']:.0f} s)", flush=True)
        weights = save_as_hub_folder(tmp / "source.pt", tmp / "source_weights", 200 - TARGET_CLASSES)
        ways = {str(size): run_ways(tmp, prepared, size, weights, args.epochs, args.seeds)
                for size, prepared in target_prepared.items()}
    results = {"source": {**source, "classes": 200 - TARGET_CLASSES, "epochs": args.source_epochs, "model": MODEL},
               "target": {"classes": target_classes, "val_images": 50 * TARGET_CLASSES, "epochs": args.epochs,
                          "seeds": args.seeds},
               "ways": ways, "minutes": (time.monotonic() - start) / 60}
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


def report(results: dict) -> None:
    target, source = results["target"], results["source"]
    print(f"\nsource: {source['model']}, {source['classes']} classes, {source['epochs']} epochs: val top-1 "
          f"{source['top1']:.1%}; target: {len(target['classes'])} classes, {target['val_images']} val photos, "
          f"{target['epochs']} epochs, {target['seeds']} seeds")
    print("| train photos per class | way | val top-1, mean | spread (sd) | per seed | train s |")
    print("|---|---|---|---|---|---|")
    for size, ways in results["ways"].items():
        for way, r in ways.items():
            seeds = ", ".join(f"{t:.1%}" for t in r["top1"])
            print(f"| {size} | {way} | {r['mean']:.1%} | {r['spread']:.1%} | {seeds} | {r['seconds']:.0f} |")
    print(f"({results['minutes']:.1f} min)")


if __name__ == "__main__":
    main()
