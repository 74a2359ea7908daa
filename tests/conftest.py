"""Shared fixtures: one torch thread, the real data subset; and the order modules go to workers.

Helpers the tests import (shrunk params, repository copies, subprocess runs) live in helpers.py.
"""

from __future__ import annotations

import pytest
from support.helpers import REAL_SUBSET

# The longest modules, longest first (per-module sums of a `make test --junitxml` run on the 2-core
# CI machine). Under `--dist loadscope` a module runs whole on one worker, and xdist hands modules out
# in collection order (`make test` passes --no-loadscope-reorder: xdist's own order puts modules with
# the most tests first, and ours that take longest have the fewest, so one worker used to finish a
# four-minute module alone). Handing the long ones out first keeps both workers busy to the end;
# every other module follows in its usual order.
LONGEST_MODULES = (  # seconds on 2026-12-06, summed from --junitxml
    "tests/pipeline/test_pipeline.py",  # 239: the 2x2 queued grid alone is 139
    "tests/test_quickstart_and_remote_check.py",  # 218
    "tests/pipeline/test_own_images_pipeline.py",  # 132
    "tests/pipeline/test_remote.py",  # 100
    "tests/pipeline/test_reproducibility.py",  # 61
    "tests/train/test_slurm.py",  # 55
    "tests/serve/test_space.py",  # 43
    "tests/train/test_resume.py",  # 39
    "tests/test_cli.py",  # 34
    "tests/train/test_train_options.py",  # 33
)


def pytest_collection_modifyitems(config, items):
    first = {module: rank for rank, module in enumerate(LONGEST_MODULES)}
    # A stable sort: the tests of a module keep their order, and so do the unlisted modules.
    items.sort(key=lambda item: first.get(item.nodeid.split("::")[0], len(first)))


@pytest.fixture
def one_torch_thread(monkeypatch):
    """One thread for torch in this process and its children (the 2 cores are shared), and torch's
    global flags restored after each test so one test's deterministic mode does not leak."""
    import torch

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(False)


@pytest.fixture
def real_subset():
    if not REAL_SUBSET.exists():
        pytest.skip(f"real Tiny ImageNet subset not present at {REAL_SUBSET}")
    return REAL_SUBSET
