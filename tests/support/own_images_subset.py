"""The real Tiny ImageNet subset as the source of users' photo folders: its classes, their words.txt
names and their member lists, and a seeded choice of classes and images from it.

The folder builders (`own_images_folders`, `own_images_bad_inputs`) copy or re-encode the images
chosen here: a few dozen of the subset's real JPEGs, never the subset itself.
"""

from __future__ import annotations

import io
import random
import re
import zipfile
from dataclasses import dataclass

from PIL import Image

SUBSET_TOP = "tiny-imagenet-200"


@dataclass(frozen=True)
class Subset:
    wnids: list[str]
    words: dict[str, str]
    train: dict[str, list[str]]  # wnid -> zip members, sorted
    val: dict[str, list[str]]


def read_subset(zf: zipfile.ZipFile) -> Subset:
    names = zf.namelist()
    wnids = zf.read(f"{SUBSET_TOP}/wnids.txt").decode().split()
    words_text = zf.read(f"{SUBSET_TOP}/words.txt").decode()
    annotations = zf.read(f"{SUBSET_TOP}/val/val_annotations.txt").decode().splitlines()
    words = dict(line.split("\t", 1) for line in words_text.splitlines() if "\t" in line)
    train: dict[str, list[str]] = {wnid: [] for wnid in wnids}
    for name in names:
        parts = name.split("/")
        if len(parts) == 5 and parts[1] == "train" and parts[3] == "images" and parts[4].endswith(".JPEG"):
            train[parts[2]].append(name)
    val: dict[str, list[str]] = {wnid: [] for wnid in wnids}
    for line in annotations:
        file, wnid = line.split("\t")[:2]
        val[wnid].append(f"{SUBSET_TOP}/val/images/{file}")
    return Subset(wnids, words, {w: sorted(m) for w, m in train.items()}, {w: sorted(m) for w, m in val.items()})


def choose_images(subset: Subset, classes: int, train_per_class: int, val_per_class: int, seed: int):
    """Seeded choice of classes and of each class's images: (wnids, {wnid: train}, {wnid: val})."""
    fewest_train = min(len(m) for m in subset.train.values())
    fewest_val = min(len(m) for m in subset.val.values())
    if not (1 <= classes <= len(subset.wnids) and train_per_class <= fewest_train and val_per_class <= fewest_val):
        raise ValueError(f"the subset has {len(subset.wnids)} classes, {fewest_train} train and {fewest_val} "
                         f"val images per class; asked for {classes}, {train_per_class}, {val_per_class}")
    rng = random.Random(seed)
    wnids = sorted(rng.sample(sorted(subset.wnids), classes))
    train = {w: sorted(rng.sample(subset.train[w], train_per_class)) for w in wnids}
    val = {w: sorted(rng.sample(subset.val[w], val_per_class)) for w in wnids}
    return wnids, train, val


def ensure_a_grayscale(zf: zipfile.ZipFile, subset: Subset, train: dict[str, list[str]]) -> None:
    """Swap one real grayscale JPEG into `train` if the draw has none (about 1 in 60 subset images
    is grayscale): the converted one alone would not show that the loader handles real ones."""
    if any(image_mode(zf, m) == "L" for members in train.values() for m in members):
        return
    for wnid, members in train.items():
        gray = [m for m in subset.train[wnid] if m not in members and image_mode(zf, m) == "L"]
        if gray and members:
            members[-1] = gray[0]
            members.sort()
            return


def image_mode(zf: zipfile.ZipFile, member: str) -> str:
    with Image.open(io.BytesIO(zf.read(member))) as img:  # reads the header only
        return img.mode


def readable_name(words: str) -> str:
    return words.split(",")[0].strip()


def class_folder_names(wnids: list[str], words: dict[str, str], style: str) -> dict[str, str]:
    """wnid -> class folder name: the wnid itself, or its readable name made safe for any
    filesystem (spaces kept, as users' folders have them; anything else odd becomes '_')."""
    if style == "wnid":
        return {w: w for w in wnids}
    if style != "readable":
        raise ValueError(f"folder_names must be 'wnid' or 'readable', not {style!r}")
    names: dict[str, str] = {}
    for wnid in wnids:
        name = re.sub(r"[^\w .-]", "_", readable_name(words[wnid])).strip(" .") or wnid
        names[wnid] = f"{name} {wnid}" if name in names.values() else name
    return names
