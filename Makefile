# The two set-up commands of the README. Each creates (or reuses) .venv and installs the project.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.attnviz-installed

.PHONY: demo test test-all lint bench

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

demo: $(STAMP)  ## the before/after attention study on the built-in dataset
	$(PY) -m attnviz demo $(ARGS)

# One worker per core (at most 4; each test uses one thread): about 3.5 minutes on 2 cores.
PYTEST_WORKERS ?= -n auto --maxprocesses=4

test: $(STAMP)  ## the default (fast) test suite
	$(PY) -m pytest $(PYTEST_WORKERS) $(ARGS)

test-all: $(STAMP)  ## every test, the slow ones too
	$(PY) -m pytest $(PYTEST_WORKERS) -m "slow or not slow" $(ARGS)

lint: $(STAMP)
	$(PY) -m ruff check attnviz tests benchmarks scripts train.py
	$(PY) -m ruff format --check attnviz tests benchmarks scripts train.py
	$(VENV)/bin/lint-imports

bench: $(STAMP)  ## every benchmark, ratios measured in one run each
	cd benchmarks && for b in surgery intermediates cam compare train ablate readme; do test -f $$b.py && ../$(PY) $$b.py || true; done
