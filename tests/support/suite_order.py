"""The order `make test` hands test modules to its workers (tests/conftest.py sorts by it)."""

# The longest modules, longest first (per-module sums of a `make test --junitxml` run on the 2-core
# CI machine). Under `--dist loadscope` a module runs whole on one worker, and xdist hands modules out
# in collection order (`make test` passes --no-loadscope-reorder: xdist's own order puts modules with
# the most tests first, and ours that take longest have the fewest, so one worker used to finish a
# four-minute module alone). Handing the long ones out first keeps both workers busy to the end;
# every other module follows in its usual order.
LONGEST_MODULES = (  # seconds on 2026-12-07 evening (AMD EPYC, 2 cores), summed from --junitxml
    "tests/pipeline/test_pipeline.py",  # 170: the 2x2 queued grid alone is 75
    "tests/commands/test_quickstart.py",  # 114
    "tests/pipeline/test_own_images_pipeline.py",  # 103
    "tests/train/test_ddp.py",  # 97: DDP + compile alone is 71
    "tests/pipeline/test_remote.py",  # 82
    "tests/pipeline/test_gpu_check.py",  # 74
    "tests/train/test_slurm.py",  # 70 (the cancelled job alone 39)
    "tests/train/test_train_options.py",  # 55
    "tests/train/test_resume.py",  # 54
    "tests/serve/test_demo.py",  # 41
    "tests/serve/test_space.py",  # 39 (its fresh venv, made by uv, about 6)
    "tests/commands/test_cli.py",  # 37
    "tests/audit/test_audit_run.py",  # 26 alone (its trained model and two audits), 2026-12-08
    "tests/train/test_multinode.py",  # 34
    "tests/train/test_selection.py",  # 10: the patience run and its kill -9 replay
)
