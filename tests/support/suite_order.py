"""The order `make test` hands test modules to its workers (tests/conftest.py sorts by it)."""

# The longest modules, longest first (per-module sums of a `make test --junitxml` run on the 2-core
# CI machine). Under `--dist loadscope` a module runs whole on one worker, and xdist hands modules out
# in collection order (`make test` passes --no-loadscope-reorder: xdist's own order puts modules with
# the most tests first, and ours that take longest have the fewest, so one worker used to finish a
# four-minute module alone). Handing the long ones out first keeps both workers busy to the end;
# every other module follows in its usual order.
LONGEST_MODULES = (  # seconds on 2026-12-07 (Intel Xeon, 2 cores), summed from --junitxml
    "tests/pipeline/test_pipeline.py",  # 200: the 2x2 queued grid alone is 112
    "tests/commands/test_quickstart.py",  # 145
    "tests/pipeline/test_own_images_pipeline.py",  # 104
    "tests/train/test_ddp.py",  # 69: DDP + compile alone is 40-49
    "tests/pipeline/test_remote.py",  # 58
    "tests/train/test_train_options.py",  # 57
    "tests/pipeline/test_gpu_check.py",  # 52
    "tests/train/test_slurm.py",  # about 50 in CI (the cancelled job alone 31)
    "tests/serve/test_space.py",  # 41-43 on 2026-12-07 (AMD; its fresh venv, made by uv, about 6)
    "tests/train/test_resume.py",  # 31
    "tests/train/test_multinode.py",  # 30
    "tests/commands/test_cli.py",  # 27
    "tests/train/test_selection.py",  # 12 on 2026-12-07 (AMD): the patience run and its kill -9 replay
)
