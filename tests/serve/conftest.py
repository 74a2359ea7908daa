"""The trained demo model, shared by the demo's test modules."""

from __future__ import annotations

import pytest
from support.demo_model import shared_demo_model


@pytest.fixture(scope="session")
def trained(tmp_path_factory, worker_id):
    """The small model of support/demo_model.py, trained once per test run: under pytest-xdist in
    the base folder every worker shares (test_demo.py and test_demo_load.py may run on different
    workers), else in this run's own."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if worker_id != "master" else base
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        return shared_demo_model(shared / "demo-model")
