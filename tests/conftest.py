"""Shared fixtures: one torch thread, the real data subset; a temp folder the run cleans up; and
the order modules go to workers.

Helpers the tests import (shrunk params, repository copies, subprocess runs) live in helpers.py.
"""

from __future__ import annotations

import os
import tempfile

import pytest
from support.helpers import REAL_SUBSET
from support.suite_order import LONGEST_MODULES


def pytest_collection_modifyitems(config, items):
    """The longest modules first, for the workers (tests/support/suite_order.py says why)."""
    first = {module: rank for rank, module in enumerate(LONGEST_MODULES)}
    # A stable sort: the tests of a module keep their order, and so do the unlisted modules.
    items.sort(key=lambda item: first.get(item.nodeid.split("::")[0], len(first)))


@pytest.hookimpl(trylast=True)  # after pytest's tmp_path plugin has set up its base folder
def pytest_configure(config):
    """Everything the suite and its children write to the system temp folder goes under pytest's
    base folder, which the retention policy (pyproject.toml) deletes after a passing run.

    Without this, a run left about 45 files and folders in /tmp: torchrun's empty torchelastic_*
    folders, 155 MB of torch.compile's inductor cache, gradio_client's downloads, and one file per
    dvc command from DVC's usage-analytics daemon. Analytics are off as well: a test should not
    start a process that phones home (offline it only waits and fails). A hook, not a fixture:
    some libraries fix their temp folder when first imported, and collection imports them.
    """
    temp = config._tmp_path_factory.getbasetemp() / "tmp"
    temp.mkdir(exist_ok=True)
    os.environ["TMPDIR"] = str(temp)
    os.environ["DVC_NO_ANALYTICS"] = "1"
    tempfile.tempdir = None  # recomputed from TMPDIR on next use


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
