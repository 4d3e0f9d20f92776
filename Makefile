# Two entry points for a fresh machine; each builds the virtual environment it needs.
#   make run          - the main job: a memory-constrained search on the embedded default (12 trials,
#                       no new trial after 12 minutes: run it again to finish them),
#                       then rung 1: the best quarter and the baseline again on 512 examples
#   make test         - the test suite (what .ci/run runs)
#   make test-floors  - the objectives and engine tests on the declared floors: Python's and every
#                       dependency's (not the slow ones: they train the embedded model, which tiny
#                       models cover API-wise)
VENV := .venv
PYTHON := $(VENV)/bin/python
FLOORS := .venv-floors
# requires-python's floor, found on PATH's Debian place or among pyenv's versions (whose shim
# refuses a version that is not the selected one); `make test-floors FLOORS_PYTHON=...` names another
PYTHON_FLOOR := $(shell python3 .ci/floors.py --python)
FLOORS_PYTHON ?= $(firstword $(wildcard /usr/bin/python$(PYTHON_FLOOR) $(or $(PYENV_ROOT),$(HOME)/.pyenv)/versions/$(PYTHON_FLOOR).*/bin/python$(PYTHON_FLOOR)))

# torch first, pinned: 2.13.0 is a CPU build on this disk; unpinned, pip downloads CUDA wheels.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet torch==2.13.0
	$(PYTHON) -m pip install --quiet -e '.[test,track,quantize]'
	touch $@

# The same install on Python's floor, constrained to the floors of pyproject.toml's ranges
# (.ci/floors.py). torch's floor is not on this disk: PyPI's build is a CUDA one (about 2.5 GB
# with its libraries, 2 minutes here), which runs on the CPU.
$(FLOORS)/.installed: pyproject.toml .ci/floors.py
	@test -n "$(FLOORS_PYTHON)" || { echo "make test-floors: Python $(PYTHON_FLOOR) (requires-python's floor) is not installed;" \
		"install it (pyenv install $(PYTHON_FLOOR)) or name it: make test-floors FLOORS_PYTHON=/path/to/python$(PYTHON_FLOOR)" >&2; exit 1; }
	rm -rf $(FLOORS)
	$(FLOORS_PYTHON) -m venv $(FLOORS)
	python3 .ci/floors.py > $(FLOORS)/floors.txt
	$(FLOORS)/bin/python -m pip install --quiet torch -c $(FLOORS)/floors.txt
	$(FLOORS)/bin/python -m pip install --quiet -e '.[test,track,quantize]' -c $(FLOORS)/floors.txt
	touch $@

.PHONY: run test test-floors
# The demo must end within 30 minutes on 2 CPU cores. Timed 2026-11-29 on an idle machine (rung
# rules 5): 14:34 in all, and 14:09 again with --timeout 20m. 12 trials took 4.6 min (8 complete at 0.3-0.7 min each, 4 pruned at
# ~0.1 min), then rung 1 = ceil(11/4) = 3 best + the baseline = 4 configs in 10.5 min (2:37-3:02
# each, the baseline 2:10). --timeout 20m only guards a slower machine: no trial or rung config
# starts after 20 min, so the last ends by about 20 + 3 = 23 min. 20 trials took 30:24 under
# rung rules 4 (6 configs at rung 1, each patient for two epochs where now one).
run: $(VENV)/.installed
	$(VENV)/bin/lora-search run --space memory-constrained --trials 12 --rungs 2 --timeout 20m

test: $(VENV)/.installed
	$(PYTHON) -m pytest --durations=15  # the slowest, for keeping .ci/run under 30 minutes

test-floors: $(FLOORS)/.installed
	$(FLOORS)/bin/python --version
	$(FLOORS)/bin/pip list --format=freeze | grep -iE '^(torch|transformers|peft|accelerate|datasets|optuna|optuna-dashboard|mlflow-skinny|tensorboard|wandb|bitsandbytes)=='
	$(FLOORS)/bin/python -m pytest --durations=15 -m 'not slow' tests/objectives tests/search
