"""The order `make test` hands test modules to its workers (tests/conftest.py sorts by it)."""

# The longest modules, longest first (per-module sums of a `make test --junitxml` run on the 2-core
# CI machine). Under `--dist loadscope` a module runs whole on one worker, and xdist hands modules out
# in collection order (`make test` passes --no-loadscope-reorder: xdist's own order puts modules with
# the most tests first, and ours that take longest have the fewest, so one worker used to finish a
# four-minute module alone). Handing the long ones out first keeps both workers busy to the end;
# every other module follows in its usual order.
LONGEST_MODULES = (  # seconds on 2026-12-06, summed from --junitxml
    "tests/pipeline/test_pipeline.py",  # 239: the 2x2 queued grid alone is 139
    "tests/commands/test_quickstart.py",  # 218 with the remote-check tests (now commands/test_remote_check.py)
    "tests/pipeline/test_own_images_pipeline.py",  # 132
    "tests/pipeline/test_remote.py",  # 100
    "tests/train/test_slurm.py",  # 55, and about 15 since for the one-node job
    "tests/pipeline/test_reproducibility.py",  # 61
    "tests/serve/test_space.py",  # 43
    "tests/train/test_resume.py",  # 39
    "tests/commands/test_cli.py",  # 34
    "tests/train/test_train_options.py",  # 33
)
