"""CIFAR-100: the official python archive (cifar-100-python.tar.gz), read without extracting it, and
its generated stand-in.

Layout (as published, and as `write_stand_in` writes it):

    cifar-100-python/file.txt~   an editor's backup file the authors shipped (read by no one)
    cifar-100-python/train       50,000 images: pickled dict "filenames", "batch_label",
                                 "fine_labels", "coarse_labels", "data" (N×3072 uint8)
    cifar-100-python/test        10,000 images, the same keys: used as the val split
    cifar-100-python/meta        "fine_label_names" (100, the class order) and
                                 "coarse_label_names" (20 superclasses)

The classes are the 100 fine labels. Each belongs to one of 20 superclasses ("coarse" labels, five
classes each); the reader takes that mapping from the images' labels, checks it is one superclass
per class, and records it as the class groups of classes.json, which the report turns into
per-superclass accuracy. The stand-in's meta is the official one byte for byte (md5
7973b15100ade9c7d40fb424638fde48), so a stand-in has exactly 100 classes, labelled with the real
superclass of each.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinyclf.data.formats.cifar_python import (batch, label_names, pixel_rows, py2_pickle, read_members,
                                               tar_has_member, write_tar_gz)
from tinyclf.data.formats.contract import ArraySplit, FormatData, PrepareOptions, StandInSpec
from tinyclf.data.formats.synthetic import MARKER, render_images
from tinyclf.errors import PrepareError

TITLE = "CIFAR-100"
ROOT = "cifar-100-python"
META, TRAIN, TEST = "meta", "train", "test"

# The official superclasses and their classes (https://www.cs.toronto.edu/~kriz/cifar.html), in
# the label order of meta's names: the stand-in writes these names and labels.
SUPERCLASSES = {
    "aquatic_mammals": ("beaver", "dolphin", "otter", "seal", "whale"),
    "fish": ("aquarium_fish", "flatfish", "ray", "shark", "trout"),
    "flowers": ("orchid", "poppy", "rose", "sunflower", "tulip"),
    "food_containers": ("bottle", "bowl", "can", "cup", "plate"),
    "fruit_and_vegetables": ("apple", "mushroom", "orange", "pear", "sweet_pepper"),
    "household_electrical_devices": ("clock", "keyboard", "lamp", "telephone", "television"),
    "household_furniture": ("bed", "chair", "couch", "table", "wardrobe"),
    "insects": ("bee", "beetle", "butterfly", "caterpillar", "cockroach"),
    "large_carnivores": ("bear", "leopard", "lion", "tiger", "wolf"),
    "large_man-made_outdoor_things": ("bridge", "castle", "house", "road", "skyscraper"),
    "large_natural_outdoor_scenes": ("cloud", "forest", "mountain", "plain", "sea"),
    "large_omnivores_and_herbivores": ("camel", "cattle", "chimpanzee", "elephant", "kangaroo"),
    "medium_mammals": ("fox", "porcupine", "possum", "raccoon", "skunk"),
    "non-insect_invertebrates": ("crab", "lobster", "snail", "spider", "worm"),
    "people": ("baby", "boy", "girl", "man", "woman"),
    "reptiles": ("crocodile", "dinosaur", "lizard", "snake", "turtle"),
    "small_mammals": ("hamster", "mouse", "rabbit", "shrew", "squirrel"),
    "trees": ("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"),
    "vehicles_1": ("bicycle", "bus", "motorcycle", "pickup_truck", "train"),
    "vehicles_2": ("lawn_mower", "rocket", "streetcar", "tank", "tractor"),
}
COARSE_NAMES = tuple(SUPERCLASSES)
FINE_NAMES = tuple(sorted(name for names in SUPERCLASSES.values() for name in names))  # meta's order
COARSE_OF = tuple(next(i for i, names in enumerate(SUPERCLASSES.values()) if fine in names) for fine in FINE_NAMES)


def decode_rule(options: PrepareOptions) -> None:
    return None  # the batches are pixels already: nothing to decode


def read(archive: Path, options: PrepareOptions) -> FormatData:
    """The 100 classes with their superclasses, and the train and test (val) images. Raises PrepareError."""
    found = read_members(archive, (META, TRAIN, TEST), TITLE)
    meta_member, meta = found[META]
    fine = label_names(meta, "fine_label_names", meta_member, archive)
    coarse = label_names(meta, "coarse_label_names", meta_member, archive)
    splits, pairs = {}, []
    for split, base in (("train", TRAIN), ("val", TEST)):
        member, obj = found[base]
        images, labels = batch(obj, member, archive, "fine_labels", len(fine))
        _, coarse_labels = batch(obj, member, archive, "coarse_labels", len(coarse))
        splits[split] = ArraySplit([(images, labels)], [f"{base}#{row}" for row in range(len(labels))])
        pairs.append((member, labels, coarse_labels))
    return FormatData(classes=[(n, n) for n in fine], splits=splits, groups=coarse,
                      class_groups=_superclass_of_each_class(archive, fine, pairs))


def _superclass_of_each_class(archive: Path, fine: list[str], pairs) -> list[int]:
    """Each class's superclass, as the images' labels give it: one per class, or PrepareError."""
    group = np.full(len(fine), -1, dtype=np.int64)
    for member, labels, coarse_labels in pairs:
        for f, c in sorted(set(zip(labels.tolist(), coarse_labels.tolist()))):
            if group[f] not in (-1, c):
                raise PrepareError(f"{archive}: member {member}: class {fine[f]} has images of superclasses "
                                   f"{group[f]} and {c}; each class belongs to one")
            group[f] = c
    missing = [fine[i] for i in np.flatnonzero(group < 0)]
    if missing:
        raise PrepareError(f"{archive}: class {missing[0]} has no images, so its superclass is unknown")
    return group.tolist()


# ------------------------------------------------------------------------------ generated stand-in


def meta_bytes() -> bytes:
    """The official `meta` (md5 7973b15100ade9c7d40fb424638fde48), byte for byte."""
    return py2_pickle({"fine_label_names": list(FINE_NAMES), "coarse_label_names": list(COARSE_NAMES)})


def _split_bytes(batch_label: str, labels: np.ndarray, images: np.ndarray) -> bytes:
    filenames = [f"generated_{FINE_NAMES[int(y)]}_s_{i:06d}.png" for i, y in enumerate(labels)]
    # Key order of the real files (as Python 2 iterated the dict).
    return py2_pickle({"filenames": filenames, "batch_label": batch_label, "fine_labels": [int(y) for y in labels],
                       "coarse_labels": [COARSE_OF[int(y)] for y in labels], "data": pixel_rows(images)})


def write_stand_in(fh, spec: StandInSpec) -> None:
    """32×32 synthetic images of the 100 classes as cifar-100-python.tar.gz, each labelled with its
    real superclass (the test images count is ignored: CIFAR-100 has no unlabeled split)."""
    train_labels = spec.rng_train.permutation(np.repeat(np.arange(100), spec.train_per_class))
    train_images, _ = render_images(train_labels, 32, spec.rng_train)
    test_labels = spec.rng_val.permutation(np.repeat(np.arange(100), spec.val_per_class))
    test_images, _ = render_images(test_labels, 32, spec.rng_val)
    write_tar_gz(fh, ROOT, [
        ("", None),
        # The marker comes first so is_stand_in() can answer without reading the data.
        (MARKER, b"Synthetic images written by tinyclf in the CIFAR-100 python format; not CIFAR-100.\n"),
        ("file.txt~", b"tinyclf-generated: the real archive ships an editor backup under this name\n"),
        (TRAIN, _split_bytes("training batch 1 of 1", train_labels, train_images)),
        (TEST, _split_bytes("testing batch 1 of 1", test_labels, test_images)),
        (META, meta_bytes()),
    ])


def is_stand_in(archive: Path) -> bool:
    return tar_has_member(archive, MARKER)
