"""Fixtures of the builder tests: the real subset the photo folders are made from, and the default
photo folder (400 images), built once for the folder and the archive tests."""

from __future__ import annotations

import pytest

from support.helpers import REAL_SUBSET
from support.own_images_folders import build_photo_folder


@pytest.fixture(scope="session")
def subset():
    """The real subset the folders are made from (a session-scoped twin of tests/conftest.py's real_subset)."""
    if not REAL_SUBSET.exists():
        pytest.skip(f"real Tiny ImageNet subset not present at {REAL_SUBSET}")
    return REAL_SUBSET


@pytest.fixture(scope="session")
def spec(tmp_path_factory, subset):
    return build_photo_folder(tmp_path_factory.mktemp("own") / "photos", subset)
