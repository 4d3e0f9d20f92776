# Two entry points for a fresh machine; each builds the virtual environment it needs.
#   make run   - the main job: a 30-trial memory-constrained search on the embedded default
#   make test  - the test suite (what .ci/run runs)
VENV := .venv
PYTHON := $(VENV)/bin/python

# torch first, pinned: 2.13.0 is a CPU build on this disk; unpinned, pip downloads CUDA wheels.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet torch==2.13.0
	$(PYTHON) -m pip install --quiet -e '.[test]'
	touch $@

.PHONY: run test
run: $(VENV)/.installed
	$(VENV)/bin/lora-search run --space memory-constrained --trials 30

test: $(VENV)/.installed
	$(PYTHON) -m pytest
