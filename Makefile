# The two newcomer commands. Both create .venv from the pinned requirements.txt when needed.
#   make quickstart  - the whole pipeline end to end, offline, on a small generated dataset (CPU, minutes)
#   make test        - the test suite
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: quickstart test browser

# torch's wheel brings its CUDA libraries: a new .venv takes about 6.5 GB. Said up front, rather
# than as pip's "No space left on device" halfway through.
VENV_GB := 7

# requirements.txt is a complete lock (a pip freeze): it is installed as listed, without resolving
# again what the lock already says (--no-deps), and `pip check` then proves the lock complete.
# uv installs it (pinned in the lock; pip puts it in the venv first): it downloads, unpacks and
# byte-compiles in parallel, where pip does one file after another (the figures are in
# docs/benchmarks.md, "The test suite's time"). Compiled files matter: with PYTHONDONTWRITEBYTECODE
# set, every process would otherwise recompile torch on import. uv keeps no cache (--no-cache: 6 GB
# left behind otherwise) and works in a temp folder inside the venv (the same disk, so files are
# linked rather than copied; and it would leave lock files in /tmp). uv reads no pip configuration:
# where pip is set up for another index and uv fails, pip installs the same lock instead, more slowly.
UV := $(shell grep -E '^uv==' requirements.txt)
PIP_INSTALL := $(PY) -m pip install --quiet --disable-pip-version-check --no-deps
$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || { free=$$(df -Pk . | awk 'NR==2 {print int($$4 / 1048576)}'); \
	  if [ "$$free" -lt $(VENV_GB) ]; then \
	    echo "make: a new $(VENV) needs about $(VENV_GB) GB free; $(CURDIR) has $$free GB" >&2; exit 1; fi; \
	  echo "python3 -m venv $(VENV)"; python3 -m venv $(VENV); }
	$(PIP_INSTALL) $(UV)
	rm -rf $(VENV)/tmp && mkdir $(VENV)/tmp
	TMPDIR=$(CURDIR)/$(VENV)/tmp $(VENV)/bin/uv pip install --quiet --python $(PY) --no-cache --no-deps \
	    --compile-bytecode -r requirements.txt \
	  || { echo "make: uv could not install requirements.txt (above); pip installs it instead" >&2; \
	       $(PIP_INSTALL) --no-compile -r requirements.txt \
	       && $(PY) -m compileall -q -j 0 -x '/(tests?|testing)/' $(VENV)/lib > /dev/null; }
	rm -rf $(VENV)/tmp
	@problems=$$($(PY) -m pip check) || { echo "$$problems" >&2; \
	  echo "make: requirements.txt is not a complete lock (above): regenerate it as its header says" >&2; exit 1; }
	touch $(STAMP)

quickstart: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m tinyclf.commands.quickstart

# The browser tests (tests/serve/test_demo.py, tests/serve/test_space.py) drive Debian's Chromium
# through its chromium-driver: installed here when missing, if we may (root); otherwise this says
# how, and those tests skip with the same command. A failed install is not fatal either: the tests skip.
BROWSER_PACKAGES := chromium chromium-driver
browser:
	@test -x /usr/bin/chromedriver || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get > /dev/null; then \
	    echo "installing $(BROWSER_PACKAGES) for the browser tests (apt-get, about a minute)"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	        $(BROWSER_PACKAGES); } > /dev/null || echo "could not install $(BROWSER_PACKAGES): the browser tests will skip"; \
	  else \
	    echo "no /usr/bin/chromedriver: the browser tests will skip (install: sudo apt-get install $(BROWSER_PACKAGES))"; \
	  fi; }

# One pytest worker per core (pytest-xdist); a module's tests stay on one worker, so its shared
# fixture (a whole DVC pipeline run) is built once. Modules are handed out longest first
# (tests/support/suite_order.py), not in xdist's most-tests-first order.
test: $(STAMP) browser
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest -q -n auto --dist loadscope --no-loadscope-reorder --durations=10
