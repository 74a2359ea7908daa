"""Shared fixtures: one torch thread, the real data subset; and the order modules go to workers.

Helpers the tests import (shrunk params, repository copies, subprocess runs) live in helpers.py.
"""

from __future__ import annotations

import pytest
from support.helpers import REAL_SUBSET
from support.suite_order import LONGEST_MODULES


def pytest_collection_modifyitems(config, items):
    """The longest modules first, for the workers (tests/support/suite_order.py says why)."""
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
