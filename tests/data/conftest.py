"""Archives and prepared folders that tests in several data modules read: each is built once per
run (session scope), however many modules use it. Tests only read them; one that changes a file
copies it first."""

from __future__ import annotations

import pytest
from support.data_archives import GENERATED_SMALL, build_tiny_zip, odd_members
from support.helpers import REAL_SUBSET
from support.own_images_folders import FolderOptions, build_photo_folder
from support.own_images_run import download_and_prepare

from tinyclf.data.formats.generated import write_archive


@pytest.fixture
def tiny_zip(tmp_path):
    """The hand-built Tiny ImageNet zip with its grayscale, CMYK, RGBA and palette members."""
    return build_tiny_zip(tmp_path / "tiny-imagenet-200.zip", special=odd_members())


@pytest.fixture(scope="session")
def generated_tiny_zip(tmp_path_factory):
    """The generated Tiny ImageNet stand-in (GENERATED_SMALL): its layout and its pixels are checked."""
    return write_archive("tiny-imagenet", tmp_path_factory.mktemp("tiny") / "tiny-imagenet-200.zip",
                         **GENERATED_SMALL)


@pytest.fixture(scope="session")
def generated_cifar10_tgz(tmp_path_factory):
    """The generated CIFAR-10 stand-in (GENERATED_SMALL): its members and pickles are checked."""
    return write_archive("cifar10", tmp_path_factory.mktemp("cifar") / "cifar-10-python.tar.gz", **GENERATED_SMALL)


@pytest.fixture(scope="session")
def cifar10_archive(tmp_path_factory):
    """A generated CIFAR-10 archive of 150 train and 60 val images, for the reader and the stage script."""
    path = tmp_path_factory.mktemp("cifar") / "cifar-10-python.tar.gz"
    return write_archive("cifar10", path, num_classes=10, train_per_class=15, val_per_class=6, test_images=0, seed=3)


@pytest.fixture(scope="session")
def photos(tmp_path_factory):
    """A user's photo folder of 6 classes (12 train and 4 val photos each) with every kind of variety."""
    if not REAL_SUBSET.exists():
        pytest.skip(f"real Tiny ImageNet subset not present at {REAL_SUBSET}")
    root = tmp_path_factory.mktemp("own") / "photos"
    return build_photo_folder(root, REAL_SUBSET, FolderOptions(classes=6, train_per_class=12, val_per_class=4))


@pytest.fixture(scope="session")
def photos_prepared(photos, tmp_path_factory):
    """(archive, PrepareSummary) of `photos` downloaded and prepared at the default options."""
    return download_and_prepare(photos.root, tmp_path_factory.mktemp("prepared"))
