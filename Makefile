# The two newcomer commands. Both create .venv from the pinned requirements.txt when needed.
#   make quickstart  - the whole pipeline end to end, offline, on a small generated dataset (CPU, minutes)
#   make test        - the test suite
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: quickstart test

# --no-compile: byte-compiling every installed file (torch has thousands) costs ~1 minute;
# Python compiles what it imports on first use instead.
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-compile -r requirements.txt
	touch $(STAMP)

quickstart: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m tinyclf.quickstart

test: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest -q --durations=10
