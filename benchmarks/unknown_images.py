"""How well "I don't know" (`tinyclf predict --min-confidence`) sets apart images of no known class.

    .venv/bin/python benchmarks/unknown_images.py [--epochs 30] [--json out.json]   # about 9 min on 2 cores

CIFAR-10 models, shown CIFAR-100-format images of other classes. CIFAR itself cannot be downloaded
here, so the archives are made, in the official python formats, from real photos or generated:
- known, real: 10 classes of the real Tiny ImageNet subset (`../shared/data`), resized to 32x32
  (OpenCV's area filter) and packed as cifar-10-python.tar.gz: the 100 train photos of each class in
  the five data batches, the 50 val photos of each in the test batch;
- known, generated: the CIFAR-10 stand-in `download.source: generated` writes (synthetic shapes),
  100 train and 50 test images per class;
- unknown, real: the 50 val photos of each of 20 other classes of the subset, as the test batch of a
  cifar-100-python.tar.gz;
- unknown, generated: the CIFAR-100 stand-in's test images of its 90 classes that are not the
  CIFAR-10 stand-in's (10 per class).

Each model is trained by the stages themselves (`stages/preprocess.py`, `train.py`, `evaluate.py`,
one process each, on a params.yaml derived from the repository's) with `data.val_from_train: 0.2`:
a fifth of each class's train images is val (choosing the epoch, the temperature and the proposed
threshold), and the 500 test-batch images are a test split nothing chooses on. The unknown archives
go through `stages/preprocess.py` as CIFAR-100, and every image through the model file's calibrated
probabilities (`tinyclf.serve.predictor`, as `tinyclf predict` uses it).

Reported: the test split's top-1; the AUROC of the maximum probability for telling the known test
images from each unknown set (scikit-learn's roc_auc_score; 0.5 = no better than chance); and at
the threshold the evaluate stage proposes (per_class.json `unknown_threshold`, chosen on val to keep
95% of its correct answers) the share of the known test images' correct answers kept, of their wrong
ones rejected, and of each unknown set rejected. Figures: docs/benchmarks.md, "I don't know".
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
from stage_runs import params_file, stage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
DEFAULT_ZIP = REPO.parent / "shared" / "data" / "tiny-imagenet-200-subset.zip"
KNOWN_CLASSES, UNKNOWN_CLASSES = 10, 20
SIDE = 32

def _recipe() -> dict:
    """The quickstart's recipe (tiny_resnet50 at 32 px, pad-crop, no mixing; its train and evaluate
    keys), trained longer: two warm-up epochs, the epochs given per model."""
    from tinyclf.commands.quickstart import OVERRIDES as QUICKSTART

    recipe = {key: value for key, value in QUICKSTART.items() if key.split(".")[0] in ("train", "evaluate")}
    return {**recipe, "data.image_size": 32, "data.val_from_train": 0.2, "train.warmup_epochs": 2,
            "preprocess.workers": 1}


OVERRIDES = _recipe()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zip", type=Path, default=DEFAULT_ZIP, help="the real Tiny ImageNet subset (default %(default)s)")
    parser.add_argument("--epochs", type=int, default=30,
                        help="epochs of the model on real photos (default %(default)s)")
    parser.add_argument("--generated-epochs", type=int, default=8,
                        help="epochs of the model on generated images (default %(default)s)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser.parse_args()


# ------------------------------------------------------------------------------ archives from real photos
def read_subset(zip_path: Path) -> tuple[list[str], dict[str, list[np.ndarray]], dict[str, list[np.ndarray]]]:
    """The subset's class ids (sorted), and per class its train and val photos at 32x32 RGB."""
    if not zip_path.is_file():
        raise SystemExit(f"unknown_images: no real Tiny ImageNet subset at {zip_path} (--zip names it)")
    train: dict[str, list[np.ndarray]] = {}
    val: dict[str, list[np.ndarray]] = {}
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
        annotations = next(n for n in names if n.endswith("val/val_annotations.txt"))
        val_class = dict(line.split("\t")[:2] for line in zf.read(annotations).decode().splitlines() if line)
        for name in sorted(names):
            parts = name.split("/")
            if not name.endswith(".JPEG"):
                continue
            if len(parts) >= 4 and parts[-4] == "train" and parts[-2] == "images":
                bucket, wnid = train, parts[-3]
            elif parts[-3:-1] == ["val", "images"]:
                bucket, wnid = val, val_class[parts[-1]]
            else:
                continue
            bucket.setdefault(wnid, []).append(small_rgb(zf.read(name)))
    return sorted(train), train, val


def small_rgb(jpeg: bytes) -> np.ndarray:
    bgr = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(cv2.resize(bgr, (SIDE, SIDE), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)


def write_cifar10(path: Path, classes: list[str], train: dict, val: dict) -> None:
    from tinyclf.data.formats.cifar_python import pixel_rows, py2_pickle, write_tar_gz

    def batch(label: str, images: list[np.ndarray], labels: list[int]) -> bytes:
        return py2_pickle({"batch_label": label, "labels": labels, "data": pixel_rows(np.stack(images)),
                           "filenames": [f"{classes[y]}_{i}.png" for i, y in enumerate(labels)]})

    train_pairs = [(image, y) for y, wnid in enumerate(classes) for image in train[wnid]]
    order = np.random.default_rng(0).permutation(len(train_pairs))
    members: list[tuple[str, bytes | None]] = [("", None), ("batches.meta", py2_pickle(
        {"num_cases_per_batch": 10000, "label_names": classes, "num_vis": SIDE * SIDE * 3}))]
    for b, chunk in enumerate(np.array_split(order, 5), start=1):
        members.append((f"data_batch_{b}", batch(f"training batch {b} of 5", [train_pairs[i][0] for i in chunk],
                                                   [train_pairs[i][1] for i in chunk])))
    test = [(image, y) for y, wnid in enumerate(classes) for image in val[wnid]]
    members.append(("test_batch", batch("testing batch 1 of 1", [p[0] for p in test], [p[1] for p in test])))
    with open(path, "wb") as fh:
        write_tar_gz(fh, "cifar-10-batches-py", members)


def write_cifar100(path: Path, classes: list[str], train: dict, val: dict) -> None:
    """CIFAR-100's layout with these classes as its fine labels and one superclass: a few train photos
    per class (the format needs a train file), every val photo in the test file."""
    from tinyclf.data.formats.cifar_python import pixel_rows, py2_pickle, write_tar_gz

    def split(label: str, pairs: list) -> bytes:
        return py2_pickle({"filenames": [f"{classes[y]}_{i}.png" for i, (_, y) in enumerate(pairs)],
                           "batch_label": label, "fine_labels": [y for _, y in pairs],
                           "coarse_labels": [0] * len(pairs), "data": pixel_rows(np.stack([p[0] for p in pairs]))})

    members = [("", None),
               ("train", split("training batch 1 of 1", [(im, y) for y, w in enumerate(classes) for im in train[w][:5]])),
               ("test", split("testing batch 1 of 1", [(im, y) for y, w in enumerate(classes) for im in val[w]])),
               ("meta", py2_pickle({"fine_label_names": classes, "coarse_label_names": ["other"]}))]
    with open(path, "wb") as fh:
        write_tar_gz(fh, "cifar-100-python", members)


# ------------------------------------------------------------------------------ the stages
def prepared_images(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    return np.load(root / split / "images.npy"), np.load(root / split / "labels.npy")


# ------------------------------------------------------------------------------ the figures
def figures(known_probs: np.ndarray, known_labels: np.ndarray, unknown: dict[str, np.ndarray], threshold: float) -> dict:
    """Test top-1, and at `threshold` the shares of the known images' correct answers kept and wrong ones
    rejected; per unknown set its AUROC against the known test images and the share rejected."""
    from sklearn.metrics import roc_auc_score

    known_conf = known_probs.max(axis=1)
    right = known_probs.argmax(axis=1) == known_labels
    kept = known_conf >= threshold
    out = {"test_top1": float(right.mean()), "threshold": threshold, "known_test_images": len(known_labels),
           "known_correct_kept": float(kept[right].mean()), "known_wrong_rejected": float((~kept[~right]).mean()),
           "known_mean_max_probability": float(known_conf.mean()), "unknown": {}}
    for name, probs in unknown.items():
        conf = probs.max(axis=1)
        scores = np.concatenate([known_conf, conf])  # the higher, the more "known"
        truth = np.concatenate([np.ones(len(known_conf)), np.zeros(len(conf))])
        out["unknown"][name] = {"images": len(conf), "auroc": float(roc_auc_score(truth, scores)),
                                "rejected": float((conf < threshold).mean()), "mean_max_probability": float(conf.mean())}
    return out


def train_known(tmp: Path, name: str, params: Path) -> tuple[Path, Path, float]:
    """preprocess, train and evaluate on `tmp/<name>_raw`'s archive: (prepared dir, model file, proposed
    threshold)."""
    prepared, model = tmp / name, tmp / f"{name}.pt"
    stage("preprocess", params, "--raw", str(tmp / f"{name}_raw"), "--out", str(prepared))
    stage("train", params, "--data", str(prepared), "--model-out", str(model), "--live", str(tmp / f"{name}_live"),
          "--checkpoints", str(tmp / f"{name}_ck"))
    stage("evaluate", params, "--data", str(prepared), "--model", str(model), "--out", str(tmp / f"{name}_eval"))
    proposal = json.loads((tmp / f"{name}_eval" / "per_class.json").read_text())["unknown_threshold"]
    return prepared, model, proposal["threshold"]


def make_archives(tmp: Path, zip_path: Path, epochs: int, generated_epochs: int) -> dict[str, Path]:
    """Every archive in its raw folder, and the params files: {"real", "generated", "unknown", "unknown_generated"}."""
    classes, train, val = read_subset(zip_path)
    known, others = classes[:KNOWN_CLASSES], classes[KNOWN_CLASSES:KNOWN_CLASSES + UNKNOWN_CLASSES]
    for name in ("real_raw", "generated_raw", "unknown_raw", "unknown_generated_raw"):
        (tmp / name).mkdir()
    write_cifar10(tmp / "real_raw" / "cifar-10-python.tar.gz", known, train, val)
    write_cifar100(tmp / "unknown_raw" / "cifar-100-python.tar.gz", others, train, val)
    generated = {"download.source": "generated", "download.generated.train_per_class": 100,
                 "download.generated.val_per_class": 50}
    params = {"real": params_file(tmp / "real.yaml", "cifar10", {**OVERRIDES, "train.epochs": epochs}),
              "generated": params_file(tmp / "generated.yaml", "cifar10",
                                       {**OVERRIDES, **generated, "train.epochs": generated_epochs}),
              "unknown": params_file(tmp / "unknown.yaml", "cifar100", {"data.image_size": 32, "preprocess.workers": 1}),
              "unknown_generated": params_file(tmp / "unknown_generated.yaml", "cifar100", {
                  "data.image_size": 32, "preprocess.workers": 1, "download.source": "generated",
                  "download.generated.num_classes": 100, "download.generated.train_per_class": 1,
                  "download.generated.val_per_class": 10})}
    for name in ("generated", "unknown_generated"):
        stage("download", params[name], "--out", str(tmp / f"{name}_raw"))
    for name in ("unknown", "unknown_generated"):
        stage("preprocess", params[name], "--raw", str(tmp / f"{name}_raw"), "--out", str(tmp / name))
    return params


def unknown_images(tmp: Path) -> dict[str, np.ndarray]:
    """The two unknown sets. The generated CIFAR-100 stand-in draws its first 10 classes as the CIFAR-10
    stand-in draws its 10 (tinyclf.data.formats.synthetic): those are left out, the other 90 kept."""
    generated, labels = prepared_images(tmp / "unknown_generated", "val")
    return {"real photos of 20 other classes": prepared_images(tmp / "unknown", "val")[0],
            "generated, 90 other classes": generated[labels >= 10]}


def main() -> None:
    args = parse_args()
    from tinyclf.model.file import read_model_file
    from tinyclf.serve.predictor import load_predictor

    start = time.monotonic()
    results = {}
    with tempfile.TemporaryDirectory(prefix="unknown-images-") as tmp:
        tmp = Path(tmp)
        params = make_archives(tmp, args.zip, args.epochs, args.generated_epochs)
        unknown = unknown_images(tmp)
        for name, epochs in (("real", args.epochs), ("generated", args.generated_epochs)):
            prepared, model, threshold = train_known(tmp, name, params[name])
            predictor = load_predictor(model)
            images, labels = prepared_images(prepared, "test")
            results[name] = figures(predictor.probabilities(images), labels,
                                    {k: predictor.probabilities(v) for k, v in unknown.items()}, threshold)
            results[name].update(epochs=epochs, temperature=read_model_file(model)["meta"].get("temperature"))
    results["minutes"] = (time.monotonic() - start) / 60
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


KNOWN_TITLES = {"real": "10 real classes (photos of the subset)", "generated": "10 generated classes (the CIFAR-10 stand-in)"}


def report(results: dict) -> None:
    print("\n| CIFAR-10-format model | test top-1 | threshold (proposed on val) | correct kept | wrong rejected "
          "| unknown images | AUROC of max probability | unknown rejected |")
    print("|---|---|---|---|---|---|---|---|")
    for name, title in KNOWN_TITLES.items():
        r = results[name]
        for i, (unknown, row) in enumerate(r["unknown"].items()):
            head = (f"{title}, {r['epochs']} epochs, T = {r['temperature']:.3g} | {r['test_top1']:.1%} | "
                    f"{r['threshold']:.3f} | {r['known_correct_kept']:.1%} | {r['known_wrong_rejected']:.1%}"
                    if i == 0 else " | | | |")
            print(f"| {head} | {unknown} ({row['images']}) | {row['auroc']:.3f} | {row['rejected']:.1%} |")
    print(f"({results['minutes']:.1f} min)")


if __name__ == "__main__":
    main()
