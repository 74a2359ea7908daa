"""Does the audit stage (`stages/audit.py`) find what is wrong with the data, and what does it cost?
Faults are planted in real photos (and, for the mechanism, in generated images), the stages
themselves run on them (download, preprocess, train, evaluate, audit: one process each, on a
params.yaml derived from the repository's), and results/audit/issues.csv is scored against what was
planted (issue 28, "Measured, not claimed").

    .venv/bin/python benchmarks/audit.py [--parts 1,2,3,4,5,6] [--json out.json]
    # about 7-9 min on 2 cores, longer while other jobs run; --label-size 64 adds about 3 min

Every folder is an own photo folder (`data.dataset: folder`, train/ and val/ class folders) written
from the real Tiny ImageNet subset (`../shared/data`, original JPEGs, 64x64) with seeded draws:

1. label flips, real photos: 10 classes x 80 train photos (their 50 val photos each); 5% of the
   train photos moved into another class's folder; resnet18 from scratch (`--label-epochs`,
   `--label-size` px: 32 by default, for time; 64 takes 2.6 min for this part alone, 11 under load); the
   audit with `audit.train_probs` model, logistic and knn. Scored: precision at k (k = the flips)
   and recall at 2k of the train images ranked by label quality (label_scores.csv, every image);
   also how many train images cleanlab flags (issues.csv's label rows) and how many of those are flips.
2. label flips, the mechanism: the same on generated images (`download.source: generated`, 10
   classes, decoded from the prepared arrays and written as PNG class folders, 5% flipped), a model
   that reaches >= 90% val top-1 (`--generated-epochs`). Targets: precision@k >= 0.8, recall@2k >= 0.9.
3. near-duplicates, real photos: 20 classes x (100 train + 50 val) at 64 px; 50 copies each of
   three kinds (`--copies`) placed into train or val (the original's class): resized (0.5-0.9x,
   JPEG q 90), recompressed (JPEG q 40-70), cropped (5% of width and height off at a random
   offset, JPEG q 90). Scored: recall of the planted pairs (a duplicate row naming both files) and
   the share of reported pairs that were not planted (`--keep-sheets DIR` writes a montage of them
   and the contact sheets, to check by eye). Audited with two models of different accuracy
   (`--dup-model`, timm's small test_resnet by default so that 64 px fits the time;
   `--dup-epochs`), and the clean folder (no copies) with the second.
4. outliers: 2 blank, 2 noise and 2 text images in random train class folders of part 3's folder;
   the rank of each among issues.csv's outlier rows, and (a run with `audit.outlier_fence: 0`, which
   lists the top quarter of all outlier scores in order) among all images.
5. time against evaluate, on part 3's data and (unless `--skip-large`) the whole subset as the
   official tiny-imagenet format (30,000 images, `audit.enabled: true`, a 1-epoch model:
   `--large-model`, `--large-size`; every pair it reports is on a contact sheet): the audit stage's seconds per image (speed.json) against the evaluate stage's (its
   predict pass; evaluate runs over val only, the audit over every split: compared per image), and
   the processes' wall time per image; the exact neighbour search (which grows with the square of
   the images) timed on 10,000 and 30,000 random vectors and extrapolated to 100,000.
6. the loop, as a user runs it: `tinyclf audit accept issues.csv --kind label --split train --top N`
   (part 1's audit, train_probs logistic; `--accept-top`, 20 by default as in the README) written
   to a corrections file, preprocess run again with `data.corrections` naming it, retrained the same
   way; val top-1 before and after (val untouched: it measures), and what the accepted lines did.
7. a stronger model for part 1 (not in the default parts: about 8 more minutes): a resnet18 trained
   on the subset's other 190 classes (`--source-epochs`), then fine-tuned on part 1's folder
   (`train.init`, the same recipe); the same audit and scores. `--parts 1,7`.

Figures: docs/benchmarks.md, "The data audit".
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from finetune import DEFAULT_ZIP, RECIPE as FINETUNE_RECIPE, read_subset, write_folder
from PIL import Image, ImageDraw
from stage_runs import params_file, stage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
# finetune.py's recipe (resnet18, pad-crop and flips, label smoothing, no mixing, no EMA, the last
# epoch kept), every stage in one process: on 2 cores, loader processes only compete with the model.
RECIPE = {**FINETUNE_RECIPE, "train.batch_size": 32, "train.lr": 0.2, "audit.workers": 0}
FLIP_SHARE = 0.05
TRAIN_PROBS = ("model", "logistic", "knn")
COPY_KINDS = ("resized", "recompressed", "cropped")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zip", type=Path, default=DEFAULT_ZIP, help="the real Tiny ImageNet subset (default %(default)s)")
    parser.add_argument("--parts", default="1,2,3,4,5,6", help="which parts to run (default %(default)s)")
    parser.add_argument("--label-epochs", type=int, default=20, help="part 1's epochs (default %(default)s)")
    parser.add_argument("--source-epochs", type=int, default=6,
                        help="part 7: epochs of the source model on the subset's other 190 classes (default %(default)s)")
    parser.add_argument("--accept-top", type=int, default=20,
                        help="part 6: the label findings accepted, most suspect first (default %(default)s)")
    parser.add_argument("--label-size", type=int, default=32, help="part 1's image size (default %(default)s)")
    parser.add_argument("--generated-epochs", type=int, default=8, help="part 2's epochs (default %(default)s)")
    parser.add_argument("--dup-epochs", default="2,20", help="part 3's two models' epochs (default %(default)s)")
    parser.add_argument("--dup-size", type=int, default=64, help="part 3's image size (default %(default)s)")
    parser.add_argument("--dup-model", default="test_resnet", help="part 3's model (default %(default)s)")
    parser.add_argument("--copies", type=int, default=50, help="part 3's copies of each kind (default %(default)s)")
    parser.add_argument("--large-model", default="test_resnet", help="part 5's model on the whole subset (default %(default)s)")
    parser.add_argument("--large-size", type=int, default=64, help="part 5's image size on the whole subset (default %(default)s)")
    parser.add_argument("--skip-large", action="store_true", help="part 5 without the whole subset (3 min less)")
    parser.add_argument("--keep-sheets", type=Path, help="copy the contact sheets and montages here")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser.parse_args()


# ------------------------------------------------------------------------------ the stages
class Stages:
    """The stages on one scratch folder: each run gets its own params file, named after the run."""

    def __init__(self, tmp: Path):
        self.tmp = tmp

    def params(self, name: str, dataset: str, settings: dict) -> Path:
        # Only download reads download.source; the other stages check that a folder has one.
        source = {"download.source": "photos"} if dataset == "folder" else {}
        return params_file(self.tmp / f"{name}.yaml", dataset, {**RECIPE, **source, **settings})

    def prepare(self, name: str, source: Path | str, settings: dict, dataset: str = "folder") -> Path:
        params = self.params(f"{name}_prepare", dataset, {**settings, "download.source": str(source)})
        stage("download", params, "--out", str(self.tmp / f"{name}_raw"), quiet=True)
        stage("preprocess", params, "--raw", str(self.tmp / f"{name}_raw"), "--out", str(self.tmp / name), quiet=True)
        return self.tmp / name

    def train(self, name: str, prepared: Path, settings: dict, dataset: str = "folder") -> dict:
        """{"top1": the last epoch's val top-1, "seconds": training time, "model": the model file}."""
        params = self.params(name, dataset, settings)
        live, model = self.tmp / f"{name}_live", self.tmp / f"{name}.pt"
        stage("train", params, "--data", str(prepared), "--model-out", str(model), "--live", str(live),
              "--checkpoints", str(self.tmp / f"{name}_ck"), quiet=True)
        metrics = json.loads((live / "metrics.json").read_text())
        record = json.loads((live / "run.json").read_text())
        return {"top1": metrics["val"]["top1"], "seconds": record["train_seconds"], "model": model}

    def audit(self, name: str, prepared: Path, model: Path, settings: dict, dataset: str = "folder") -> dict:
        """{"rows": issues.csv's rows, "summary", "speed": speed.json, "wall": the process's seconds, "out"}."""
        params, out = self.params(name, dataset, settings), self.tmp / name
        started = time.perf_counter()
        stage("audit", params, "--data", str(prepared), "--model", str(model), "--out", str(out), quiet=True)
        wall = time.perf_counter() - started
        rows = list(csv.DictReader(io.StringIO((out / "issues.csv").read_text())))
        ranked = list(csv.DictReader(io.StringIO((out / "label_scores.csv").read_text())))
        return {"rows": rows, "ranked": ranked, "summary": json.loads((out / "summary.json").read_text()),
                "speed": json.loads((out / "speed.json").read_text()), "wall": wall, "out": out}

    def evaluate(self, name: str, prepared: Path, model: Path, settings: dict, dataset: str = "folder") -> dict:
        """{"speed": speed.json, "wall": the process's seconds, "images": how many it evaluated}."""
        params, out = self.params(name, dataset, settings), self.tmp / name
        started = time.perf_counter()
        stage("evaluate", params, "--data", str(prepared), "--model", str(model), "--out", str(out), quiet=True)
        wall = time.perf_counter() - started
        per_class = json.loads((out / "per_class.json").read_text())
        return {"speed": json.loads((out / "speed.json").read_text()), "wall": wall, "images": per_class["num_images"]}


def source_name(root: Path, path: Path) -> str:
    """A photo's name as the prepared data's sources.json (and so issues.csv) gives it."""
    return path.relative_to(root).as_posix()


# ------------------------------------------------------------------------------ label flips
def flip_labels(root: Path, share: float, rng: np.random.Generator) -> dict[str, str]:
    """Move `share` of the train photos into another class's folder, each to a random other class;
    returns {the moved photo's source name: its true class}."""
    classes = sorted(p.name for p in (root / "train").iterdir())
    photos = sorted((root / "train").glob("*/*"))
    flipped = {}
    for index in sorted(rng.choice(len(photos), round(share * len(photos)), replace=False)):
        photo = photos[index]
        target = rng.choice([c for c in classes if c != photo.parent.name])
        moved = photo.rename(root / "train" / target / photo.name)
        flipped[source_name(root, moved)] = photo.parent.name
    return flipped


def label_scores(audit: dict, flipped: dict[str, str]) -> dict:
    """Precision at k and recall at 2k of the train images ranked by label quality (label_scores.csv,
    every image, lowest quality first) against the flips; and what cleanlab flagged (issues.csv)."""
    k, rows = len(flipped), audit["rows"]
    ranking = [r["source"] for r in audit["ranked"] if r["split"] == "train"]
    hits = [source in flipped for source in ranking]
    flagged = [r["source"] for r in rows if r["kind"] == "label" and r["split"] == "train"]
    correct = sum(1 for r in rows if r["kind"] == "label" and r["source"] in flipped
                  and r["suggested_label"] == flipped[r["source"]])
    return {"k": k, "flagged_train": len(flagged), "flagged_hits": sum(s in flipped for s in flagged),
            "precision_at_k": sum(hits[:k]) / k, "recall_at_2k": sum(hits[:2 * k]) / k,
            "suggested_true_class": correct}


def part_label_flips(stages: Stages, subset: tuple[dict, dict], args: argparse.Namespace) -> dict:
    """Part 1: 5% of 10 real classes' train photos filed under another class; the audit's three
    ways of getting train probabilities scored against the flips."""
    train, val = subset
    rng = np.random.default_rng(1)
    wnids = sorted(rng.choice(sorted(train), 10, replace=False).tolist())
    root = write_folder(stages.tmp / "flips_photos", {w: train[w][:80] for w in wnids}, {w: val[w] for w in wnids})
    flipped = flip_labels(root, FLIP_SHARE, rng)
    settings = {"data.image_size": args.label_size, "train.epochs": args.label_epochs}
    model = stages.train("flips_model", stages.prepare("flips", root, settings), settings)
    print(f"part 1: resnet18 from scratch, {len(wnids)} real classes x 80 photos, {len(flipped)} flipped, "
          f"{args.label_size} px, {args.label_epochs} epochs: val top-1 {model['top1']:.1%} ({model['seconds']:.0f} s)",
          flush=True)
    scores, rows = {}, {}
    for probs in TRAIN_PROBS:
        audit = stages.audit(f"flips_audit_{probs}", stages.tmp / "flips", model["model"],
                             {**settings, "audit.train_probs": probs})
        scores[probs], rows[probs] = label_scores(audit, flipped), audit["out"]
        print(f"  train_probs {probs}: {describe_labels(scores[probs])}", flush=True)
    result = {"classes": len(wnids), "train_photos": 80 * len(wnids), "flipped": len(flipped),
              "image_size": args.label_size, "epochs": args.label_epochs, "top1": model["top1"],
              "train_seconds": model["seconds"], "scores": scores}
    return {"result": result, "root": root, "audit_out": rows["logistic"], "flipped": flipped, "settings": settings}


def part_finetuned_flips(stages: Stages, subset: tuple[dict, dict], flips: dict, args: argparse.Namespace) -> dict:
    """Part 7: part 1's folder and flips, the model fine-tuned (`train.init`) from a resnet18 trained on
    the subset's other 190 classes (100 train, 10 val photos each): a stronger model, the same audit."""
    train, val = subset
    chosen = {p.name for p in (flips["root"] / "train").iterdir()}
    others = [w for w in sorted(train) if w not in chosen]
    photos = write_folder(stages.tmp / "source_photos", {w: train[w] for w in others}, {w: val[w][:10] for w in others})
    size = {"data.image_size": args.label_size}
    source = stages.train("source_model", stages.prepare("source", photos, size),
                          {**size, "train.epochs": args.source_epochs, "train.batch_size": 128, "train.lr": 0.4})
    settings = {**flips["settings"], "train.init": str(source["model"])}
    model = stages.train("flips_ft_model", stages.tmp / "flips", settings)
    print(f"part 7: source resnet18 on {len(others)} other classes, {args.source_epochs} epochs: val top-1 "
          f"{source['top1']:.1%} ({source['seconds']:.0f} s); fine-tuned on part 1's folder: val top-1 "
          f"{model['top1']:.1%} ({model['seconds']:.0f} s)", flush=True)
    scores = {}
    for probs in TRAIN_PROBS:
        audit = stages.audit(f"flips_ft_audit_{probs}", stages.tmp / "flips", model["model"],
                             {**settings, "audit.train_probs": probs})
        scores[probs] = label_scores(audit, flips["flipped"])
        print(f"  train_probs {probs}: {describe_labels(scores[probs])}", flush=True)
    return {"source_top1": source["top1"], "source_epochs": args.source_epochs, "top1": model["top1"], "scores": scores}


def describe_labels(s: dict) -> str:
    return (f"precision@{s['k']} {s['precision_at_k']:.2f}, recall@{2 * s['k']} {s['recall_at_2k']:.2f} "
            f"({s['flagged_train']} train images flagged, {s['flagged_hits']} of them flips; "
            f"{s['suggested_true_class']} flips given their true class)")


def generated_folder(stages: Stages, root: Path) -> Path:
    """The generated tiny-imagenet stand-in (10 classes, 100 train and 50 val images each), decoded
    from its prepared arrays and written as PNG class folders: files that can be moved."""
    from tinyclf.data import arrays

    settings = {"download.generated.num_classes": 10, "download.generated.train_per_class": 100,
                "download.generated.val_per_class": 50}
    prepared = stages.prepare("generated", "generated", settings, dataset="tiny-imagenet")
    ids = [c["id"] for c in arrays.load_classes(prepared)["classes"]]
    for split in ("train", "val"):
        images, labels = arrays.load_split(prepared, split)
        for row, (image, label) in enumerate(zip(images, labels)):
            folder = root / split / ids[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.asarray(image)).save(folder / f"{split}_{row}.png")
    return root


def part_generated_flips(stages: Stages, args: argparse.Namespace) -> dict:
    """Part 2: the mechanism, on classes a model learns well: 5% of generated train images flipped."""
    root = generated_folder(stages, stages.tmp / "generated_photos")
    flipped = flip_labels(root, FLIP_SHARE, np.random.default_rng(2))
    settings = {"data.image_size": 32, "train.epochs": args.generated_epochs}
    model = stages.train("generated_model", stages.prepare("generated_flips", root, settings), settings)
    print(f"part 2: resnet18, 10 generated classes x 100 images, {len(flipped)} flipped, 32 px, "
          f"{args.generated_epochs} epochs: val top-1 {model['top1']:.1%} ({model['seconds']:.0f} s)", flush=True)
    scores = {}
    for probs in TRAIN_PROBS:
        audit = stages.audit(f"generated_audit_{probs}", stages.tmp / "generated_flips", model["model"],
                             {**settings, "audit.train_probs": probs})
        scores[probs] = label_scores(audit, flipped)
        print(f"  train_probs {probs}: {describe_labels(scores[probs])}", flush=True)
    return {"flipped": len(flipped), "epochs": args.generated_epochs, "top1": model["top1"],
            "train_seconds": model["seconds"], "scores": scores}


# ------------------------------------------------------------------------------ near-duplicates, outliers
def copy_photo(original: Path, copy: Path, kind: str, rng: np.random.Generator) -> None:
    """A near-copy of `original` as one of COPY_KINDS makes it, saved as a JPEG."""
    image, quality = Image.open(original).convert("RGB"), 90
    if kind == "resized":
        scale = rng.uniform(0.5, 0.9)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)
    elif kind == "recompressed":
        quality = int(rng.integers(40, 71))
    else:  # cropped: 5% of the width and of the height off, at a random offset
        cut_w, cut_h = round(0.05 * image.width), round(0.05 * image.height)
        left, top = int(rng.integers(0, cut_w + 1)), int(rng.integers(0, cut_h + 1))
        image = image.crop((left, top, left + image.width - cut_w, top + image.height - cut_h))
    image.save(copy, "JPEG", quality=quality)


def plant_copies(root: Path, count: int, rng: np.random.Generator) -> dict[frozenset, str]:
    """`count` copies of each kind, of distinct photos of train and val, each into train or val at
    random (the original's class); returns {the pair of source names: the copy's kind}."""
    photos = sorted(root.glob("*/*/*"))
    planted = {}
    for n, index in enumerate(rng.choice(len(photos), count * len(COPY_KINDS), replace=False)):
        original, kind = photos[index], COPY_KINDS[n % len(COPY_KINDS)]
        copy = root / str(rng.choice(["train", "val"])) / original.parent.name / f"copy_{kind}_{n}.JPEG"
        copy_photo(original, copy, kind, rng)
        planted[frozenset({source_name(root, original), source_name(root, copy)})] = kind
    return planted


def plant_outliers(root: Path, rng: np.random.Generator) -> list[str]:
    """2 blank, 2 noise and 2 text images (64x64 PNG) in random train class folders; their source names."""
    classes, names = sorted(p.name for p in (root / "train").iterdir()), []
    for n in range(6):
        kind = ("blank", "noise", "text")[n // 2]
        if kind == "blank":
            image = Image.new("RGB", (64, 64), tuple(int(v) for v in rng.integers(0, 256, 3)))
        elif kind == "noise":
            image = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
        else:
            image = Image.new("RGB", (64, 64), "white")
            ImageDraw.Draw(image).multiline_text((2, 8), ("Invoice\nno. 4417\ntotal 12.50", "Slide 3:\nresults\nQ&A")[n % 2],
                                                 fill="black")
        path = root / "train" / str(rng.choice(classes)) / f"outlier_{kind}_{n}.png"
        image.save(path)
        names.append(source_name(root, path))
    return names


def duplicate_scores(rows: list[dict], planted: dict[frozenset, str]) -> dict:
    """Recall of the planted pairs (overall and per kind) and the reported pairs that were not planted."""
    reported = {frozenset({r["source"], r["duplicate_of"]}) for r in rows if r["kind"] == "duplicate"}
    found = {pair for pair in planted if pair in reported}
    others = sorted(sorted(pair) for pair in reported - set(planted))
    return {"planted": len(planted), "found": len(found), "recall": len(found) / max(len(planted), 1),
            "recall_by_kind": {kind: sum(1 for p in found if planted[p] == kind) / max(list(planted.values()).count(kind), 1)
                               for kind in COPY_KINDS},
            "missed": sorted(sorted(p) + [planted[p]] for p in planted if p not in found),
            "reported": len(reported), "not_planted": len(others),
            "not_planted_share": len(others) / max(len(reported), 1), "not_planted_pairs": others}


def outlier_ranks(rows: list[dict], planted: list[str]) -> dict:
    """Each planted outlier's rank (1 = most distant) among issues.csv's outlier rows, None when not flagged."""
    ranked = [r["source"] for r in rows if r["kind"] == "outlier"]
    return {"flagged": len(ranked), "ranks": {name: ranked.index(name) + 1 if name in ranked else None for name in planted}}


def montage(root: Path, pairs: list[list[str]], path: Path) -> None:
    """The pairs side by side, one pair a row, at 2x: to look at the reported pairs nobody planted."""
    tiles = [[Image.open(root / name).convert("RGB").resize((128, 128)) for name in pair] for pair in pairs[:40]]
    sheet = Image.new("RGB", (2 * 132, max(1, len(tiles)) * 132), "white")
    for row, pair in enumerate(tiles):
        for column, tile in enumerate(pair):
            sheet.paste(tile, (column * 132, row * 132))
    sheet.save(path)


def duplicate_folders(stages: Stages, subset: tuple[dict, dict], count: int) -> tuple[Path, Path, dict, list[str]]:
    """(the clean folder, the planted one, the planted pairs, the planted outliers): 20 real classes,
    all their train and val photos; the planted folder is the clean one with copies and outliers added."""
    train, val = subset
    rng = np.random.default_rng(3)
    wnids = sorted(rng.choice(sorted(train), 20, replace=False).tolist())
    clean = write_folder(stages.tmp / "clean_photos", {w: train[w] for w in wnids}, {w: val[w] for w in wnids})
    planted_root = stages.tmp / "planted_photos"
    shutil.copytree(clean, planted_root)
    return clean, planted_root, plant_copies(planted_root, count, rng), plant_outliers(planted_root, rng)


def part_duplicates(stages: Stages, subset: tuple[dict, dict], args: argparse.Namespace) -> dict:
    """Parts 3 and 4: the planted folder audited with two models of different accuracy, the clean
    folder with the second."""
    clean, root, planted, outliers = duplicate_folders(stages, subset, args.copies)
    settings = {"data.image_size": args.dup_size, "train.model": args.dup_model}
    prepared, clean_prepared = stages.prepare("planted", root, settings), stages.prepare("clean", clean, settings)
    runs = {}
    for epochs in (int(e) for e in args.dup_epochs.split(",")):
        model = stages.train(f"planted_model_{epochs}", prepared, {**settings, "train.epochs": epochs})
        audit = stages.audit(f"planted_audit_{epochs}", prepared, model["model"], settings)
        runs[epochs] = {"top1": model["top1"], "train_seconds": model["seconds"], "model": model["model"],
                        "duplicates": duplicate_scores(audit["rows"], planted),
                        "outliers": outlier_ranks(audit["rows"], outliers), "out": audit["out"]}
        d, o = runs[epochs]["duplicates"], runs[epochs]["outliers"]
        print(f"parts 3-4: {args.dup_model}, {epochs} epochs, val top-1 {model['top1']:.1%}: planted pairs found "
              f"{d['found']}/{d['planted']} ({d['recall']:.1%}); reported {d['reported']}, not planted "
              f"{d['not_planted']} ({d['not_planted_share']:.1%}); outliers flagged {o['flagged']}, planted ranks "
              f"{list(o['ranks'].values())}", flush=True)
    # issues.csv lists the images beyond the fence only; with the fence at Q3 it lists the top quarter
    # of all outlier scores in order, which ranks the planted ones even where the default fence misses them.
    quarter = stages.audit("planted_audit_quarter", prepared, model["model"], {**settings, "audit.outlier_fence": 0.0})
    ranks = outlier_ranks(quarter["rows"], outliers)
    print(f"part 4: planted outliers' ranks among the top quarter of {quarter['summary']['images']['total']} "
          f"outlier scores: {list(ranks['ranks'].values())}", flush=True)
    clean_audit = stages.audit("clean_audit", clean_prepared, model["model"], settings)
    clean_pairs = [sorted([r["source"], r["duplicate_of"]]) for r in clean_audit["rows"] if r["kind"] == "duplicate"]
    print(f"part 3: the clean folder: {len(clean_pairs)} pairs reported", flush=True)
    if args.keep_sheets:
        keep_sheets(args.keep_sheets, root, runs[epochs], clean, clean_pairs)
    return {"classes": 20, "images": clean_audit["summary"]["images"]["total"] + len(planted) + len(outliers),
            "image_size": args.dup_size, "model": args.dup_model, "copies_per_kind": args.copies,
            "runs": {e: {k: v for k, v in r.items() if k not in ("model", "out")} for e, r in runs.items()},
            "clean_pairs": clean_pairs, "outlier_ranks_top_quarter": ranks, "context": {"prepared": prepared, "model": model["model"], "settings": settings}}


def keep_sheets(folder: Path, root: Path, run: dict, clean: Path, clean_pairs: list) -> None:
    """The planted folder's contact sheets and a montage of the pairs nobody planted (and the clean
    folder's pairs), to look at by eye."""
    folder.mkdir(parents=True, exist_ok=True)
    for sheet in (run["out"] / "sheets").glob("*.png"):
        shutil.copy(sheet, folder / f"planted_{sheet.name}")
    montage(root, run["duplicates"]["not_planted_pairs"], folder / "not_planted_pairs.png")
    montage(clean, clean_pairs, folder / "clean_pairs.png")


# ------------------------------------------------------------------------------ time, the loop
def time_pair(stages: Stages, name: str, context: dict, dataset: str = "folder") -> dict:
    """The evaluate stage, then the audit stage, on the same prepared data and model, back to back."""
    evaluate = stages.evaluate(f"{name}_evaluate", context["prepared"], context["model"], context["settings"], dataset)
    audit = stages.audit(f"{name}_audit", context["prepared"], context["model"], context["settings"], dataset)
    images = audit["speed"]["images"]
    result = {"evaluate_images": evaluate["images"], "evaluate_seconds": evaluate["speed"]["seconds"],
              "evaluate_wall": evaluate["wall"], "audit_images": images, "audit_seconds": audit["speed"]["seconds"],
              "audit_forward_seconds": audit["speed"]["forward_seconds"], "audit_wall": audit["wall"]}
    per_image = {"evaluate_ms": 1000 * evaluate["speed"]["seconds"] / evaluate["images"],
                 "evaluate_wall_ms": 1000 * evaluate["wall"] / evaluate["images"],
                 "audit_ms": 1000 * audit["speed"]["seconds"] / images,
                 "audit_forward_ms": 1000 * audit["speed"]["forward_seconds"] / images,
                 "audit_wall_ms": 1000 * audit["wall"] / images}
    per_image["ratio"] = per_image["audit_ms"] / per_image["evaluate_ms"]
    result["audit_counts"] = audit["summary"]["counts"]
    per_image["wall_ratio"] = per_image["audit_wall_ms"] / per_image["evaluate_wall_ms"]
    print(f"part 5 ({name}): evaluate {evaluate['images']} images in {evaluate['speed']['seconds']:.1f} s "
          f"({per_image['evaluate_ms']:.2f} ms each; process {evaluate['wall']:.1f} s), audit {images} images in "
          f"{audit['speed']['seconds']:.1f} s ({per_image['audit_ms']:.2f} ms each, forward "
          f"{per_image['audit_forward_ms']:.2f}; process {audit['wall']:.1f} s): {per_image['ratio']:.1f}x per image "
          f"({per_image['wall_ratio']:.1f}x by process time)", flush=True)
    return {**result, "per_image": per_image, "out": audit["out"]}


def neighbour_search_seconds(sizes: tuple[int, ...] = (10_000, 30_000)) -> dict:
    """Seconds of the audit's exact all-pairs neighbour search (`tinyclf.audit.neighbours.nearest`) on
    random unit vectors of the projected features' width (256) and the thumbnails' (432): the part of
    the audit that grows with the square of the images, timed to extrapolate to 100,000."""
    from tinyclf.audit.neighbours import nearest, unit_rows

    rng, out = np.random.default_rng(0), {}
    for dims in (256, 432):
        for n in sizes:
            vectors = unit_rows(rng.standard_normal((n, dims), dtype=np.float32))
            started = time.perf_counter()
            nearest(vectors, 5)
            out[f"{dims}x{n}"] = time.perf_counter() - started
        out[f"{dims}x100000 (extrapolated)"] = out[f"{dims}x{sizes[-1]}"] * (100_000 / sizes[-1]) ** 2
    print("part 5: neighbour search seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in out.items()), flush=True)
    return out


def large_context(stages: Stages, args: argparse.Namespace) -> dict:
    """The whole subset as the official tiny-imagenet format and a 1-epoch model on it. The contact
    sheet shows up to 200 pairs: every reported pair of the subset can be looked at."""
    settings = {"data.image_size": args.large_size, "train.model": args.large_model, "train.epochs": 1,
                "train.warmup_epochs": 0, "train.batch_size": 256, "audit.enabled": True, "audit.sheet_images": 200,
                "download.md5": "ae26e0a9e328f431f5ea014adfc1170b"}
    prepared = stages.prepare("large", args.zip, settings, dataset="tiny-imagenet")
    model = stages.train("large_model", prepared, settings, dataset="tiny-imagenet")
    print(f"part 5: the whole subset (tiny-imagenet format, {args.large_size} px), {args.large_model}, 1 epoch: "
          f"val top-1 {model['top1']:.1%} ({model['seconds']:.0f} s)", flush=True)
    return {"prepared": prepared, "model": model["model"], "settings": settings, "top1": model["top1"]}


def subset_duplicates(out: Path, prepared: Path) -> dict:
    """The pairs the audit reports in the whole subset (to be judged by eye on the contact sheet), and
    whether it reports each pixel-identical pair across splits that preprocess found (stats.json)."""
    rows = list(csv.DictReader(io.StringIO((out / "issues.csv").read_text())))
    reported = [[r["duplicate_of"], r["source"], float(r["score"])] for r in rows if r["kind"] == "duplicate"]
    identical = json.loads((prepared / "stats.json").read_text()).get("duplicates_across_splits", {})
    pairs = {frozenset(pair[:2]) for pair in reported}
    found = [frozenset(pair) in pairs for pair in identical.get("first", [])]
    print(f"part 3 at scale: the audit reports {len(reported)} pairs in the whole subset; preprocess found "
          f"{identical.get('count', 0)} pixel-identical across splits, the audit reports {sum(found)} of those listed",
          flush=True)
    return {"reported": reported, "identical_across_splits": identical, "identical_found": sum(found)}


def part_loop(stages: Stages, flips: dict, top: int) -> dict:
    """Part 6: `tinyclf audit accept … --kind label --split train --top N` into a corrections file,
    preprocess again with data.corrections naming it, retrain the same way (val untouched: it measures)."""
    flipped, moves = flips["flipped"], {"fixed": 0, "moved_elsewhere": 0, "broken": 0}
    fixes = stages.tmp / "corrections.csv"
    accepted = subprocess.run([sys.executable, "-m", "tinyclf.commands.cli", "audit", "accept",
                               str(flips["audit_out"] / "issues.csv"), "--kind", "label", "--split", "train",
                               "--top", str(top), "--corrections", str(fixes)], capture_output=True, text=True, check=True)
    fixes.write_text("source,action,class\n" + accepted.stdout)
    for source, _, suggested in csv.reader(io.StringIO(accepted.stdout)):
        key = "broken" if source not in flipped else "fixed" if flipped[source] == suggested else "moved_elsewhere"
        moves[key] += 1
    settings = {**flips["settings"], "data.corrections": str(fixes)}
    model = stages.train("loop_model", stages.prepare("loop", flips["root"], settings), settings)
    before = flips["result"]["top1"]
    print(f"part 6: {sum(moves.values())} train photos relabelled to the suggested class ({moves['fixed']} flips "
          f"put right, {moves['moved_elsewhere']} flips to a third class, {moves['broken']} clean photos "
          f"mislabelled); val top-1 {before:.1%} before, {model['top1']:.1%} after", flush=True)
    return {"accepted": top, "moves": moves, "top1_before": before, "top1_after": model["top1"],
            "train_seconds": model["seconds"]}


# ------------------------------------------------------------------------------ the run
def run_parts(stages: Stages, parts: set[int], args: argparse.Namespace) -> dict:
    results: dict = {}
    subset = read_subset(args.zip) if parts & {1, 3, 4, 5, 6} else None
    if parts & {1, 6, 7}:
        flips = part_label_flips(stages, subset, args)
        results["label_flips"] = flips["result"]
    if 7 in parts:
        results["label_flips_finetuned"] = part_finetuned_flips(stages, subset, flips, args)
    if 2 in parts:
        results["generated_flips"] = part_generated_flips(stages, args)
    if parts & {3, 4, 5}:
        duplicates = part_duplicates(stages, subset, args)
        results["duplicates"] = {k: v for k, v in duplicates.items() if k != "context"}
    if 5 in parts:
        results["timing"] = {"20 classes, own photos": time_pair(stages, "small", duplicates["context"])}
        if not args.skip_large:
            large = large_context(stages, args)
            timing = time_pair(stages, "large", large, "tiny-imagenet")
            results["timing"]["the whole subset, tiny-imagenet format"] = {**timing, "top1": large["top1"]}
            results["whole_subset_duplicates"] = subset_duplicates(timing["out"], large["prepared"])
            results["neighbour_search_seconds"] = neighbour_search_seconds()
        for name, timing in results["timing"].items():
            out = timing.pop("out")
            if args.keep_sheets and name != "20 classes, own photos":
                shutil.copy(out / "sheets" / "duplicate.png", args.keep_sheets / "whole_subset_duplicate.png")
    if 6 in parts:
        results["loop"] = part_loop(stages, flips, args.accept_top)
    return results


def main() -> None:
    args = parse_args()
    parts = {int(p) for p in args.parts.split(",")}
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="audit-bench-") as name:
        results = run_parts(Stages(Path(name)), parts, args)
    results["minutes"] = (time.monotonic() - start) / 60
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")


def report(results: dict) -> None:
    """The figures as markdown tables (docs/benchmarks.md's)."""
    for key, title in (("label_flips", "real photos"), ("generated_flips", "generated images")):
        if key in results:
            r = results[key]
            print(f"\nlabel flips, {title}: {r['flipped']} flips, val top-1 {r['top1']:.1%}")
            print("| audit.train_probs | precision@k | recall@2k | train images flagged | flips among them |")
            print("|---|---|---|---|---|")
            for probs, s in r["scores"].items():
                print(f"| {probs} | {s['precision_at_k']:.2f} | {s['recall_at_2k']:.2f} | {s['flagged_train']} | "
                      f"{s['flagged_hits']} |")
    if "duplicates" in results:
        print("\nnear-duplicates and outliers, real photos:")
        print("| model epochs | val top-1 | recall (resized, recompressed, cropped) | reported | not planted | "
              "outliers flagged | planted outliers' ranks |")
        print("|---|---|---|---|---|---|---|")
        for epochs, r in results["duplicates"]["runs"].items():
            d, o = r["duplicates"], r["outliers"]
            kinds = ", ".join(f"{v:.0%}" for v in d["recall_by_kind"].values())
            print(f"| {epochs} | {r['top1']:.1%} | {d['recall']:.1%} ({kinds}) | {d['reported']} | {d['not_planted']} "
                  f"({d['not_planted_share']:.1%}) | {o['flagged']} | {list(o['ranks'].values())} |")
        print(f"clean folder: {len(results['duplicates']['clean_pairs'])} pairs reported; planted outliers' ranks "
              f"among the top quarter of all scores: {list(results['duplicates']['outlier_ranks_top_quarter']['ranks'].values())}")
    for name, t in results.get("timing", {}).items():
        p = t["per_image"]
        print(f"\ntime, {name}: evaluate {p['evaluate_ms']:.2f} ms/image ({t['evaluate_images']} images), audit "
              f"{p['audit_ms']:.2f} ms/image ({t['audit_images']} images): {p['ratio']:.2f}x; by process wall time "
              f"{p['evaluate_wall_ms']:.2f} vs {p['audit_wall_ms']:.2f} ms/image, {p['wall_ratio']:.2f}x; the audit "
              f"found {t['audit_counts']}")
    if "neighbour_search_seconds" in results:
        print("neighbour search, seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in results["neighbour_search_seconds"].items()))
    if "loop" in results:
        loop = results["loop"]
        print(f"\nthe loop: {loop['moves']}; val top-1 {loop['top1_before']:.1%} -> {loop['top1_after']:.1%}")
    for line in target_lines(results):
        print(line)
    print(f"({results['minutes']:.1f} min)")


def target_lines(results: dict) -> list[str]:
    """Each of the issue's targets that this run measured, PASS or FAIL."""
    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    lines = ["\ntargets:"]
    if "generated_flips" in results:
        g = results["generated_flips"]
        lines += [f"  generated flips, {probs}: precision@k {s['precision_at_k']:.2f} >= 0.8, recall@2k "
                  f"{s['recall_at_2k']:.2f} >= 0.9: {verdict(s['precision_at_k'] >= 0.8 and s['recall_at_2k'] >= 0.9)}"
                  f"{'' if g['top1'] >= 0.9 else ' (but the model is under 90%)'}" for probs, s in g["scores"].items()]
    for epochs, r in results.get("duplicates", {}).get("runs", {}).items():
        d, o = r["duplicates"], r["outliers"]
        lines += [f"  duplicates, {epochs}-epoch model: recall {d['recall']:.3f} >= 0.95: {verdict(d['recall'] >= 0.95)}; "
                  f"not planted {d['not_planted_share']:.3f} <= 0.01: {verdict(d['not_planted_share'] <= 0.01)}",
                  f"  outliers, {epochs}-epoch model: all 6 planted flagged: "
                  f"{verdict(all(rank is not None for rank in o['ranks'].values()))}"]
    for name, t in results.get("timing", {}).items():
        lines.append(f"  time, {name}: audit per image <= evaluate per image: {t['per_image']['ratio']:.2f}x: "
                     f"{verdict(t['per_image']['ratio'] <= 1)}")
    return lines


if __name__ == "__main__":
    main()
