# Two entry points on a fresh machine: `make run` starts the app, `make test` runs every test.
# Both run from the checkout (the app and pytest put the repository on sys.path), so neither installs the
# project into .venv: `pip install .` is for using the library elsewhere, and tests/test_package.py checks it
# in a virtual environment of its own.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt requirements-scale.txt $(VENV)/.installed
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

run: $(VENV)/.installed
	$(BIN)/streamlit run app.py

test: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .

bench: $(VENV)/.installed-dev
	PYTHONPATH=. $(BIN)/python benchmarks/bench_certify.py
	PYTHONPATH=. $(BIN)/python benchmarks/bench_spare_cores.py
	PYTHONPATH=. $(BIN)/python benchmarks/bench_threat.py
	OMP_NUM_THREADS=1 PYTHONPATH=. $(BIN)/python benchmarks/bench_scale.py
	PYTHONPATH=. $(BIN)/python benchmarks/bench_app.py
