# Two commands set everything up on a fresh machine with Python and git:
#   make pipeline   create .venv, install the lock, run `dvc repro`
#   make test       create .venv, install the lock, run the tests
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Stage commands run `python` and `dvc` from the venv.
export PATH := $(abspath $(BIN)):$(PATH)

.DEFAULT_GOAL := help
.PHONY: help install pipeline test test-fast lint bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv and install the pinned dependencies

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python 3.10 or newer is needed: run make PYTHON=python3.11 ...")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $@

pipeline: install ## reproduce the pipeline (dvc repro) on the built-in dataset
	$(BIN)/dvc repro
	@$(BIN)/dvc metrics show

test: install ## run all tests, the real pipeline included
	$(BIN)/python -m pytest -n 2 --dist loadgroup

test-fast: install ## unit tests only
	$(BIN)/python -m pytest -m "not slow and not docker" -n 2

lint: install ## ruff over the code
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install ## run the benchmarks under bench/ and record their results
	$(BIN)/python bench/pipeline.py

clean: ## remove the venv, the MLflow store and Python caches (DVC outputs stay)
	rm -rf $(VENV) mlflow.db mlruns mlartifacts outputs multirun .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
