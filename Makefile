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
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

# Set-up and the pipeline

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

# Tests, linters, benchmarks

test: install ## run all tests, the real pipeline included (the stack's: make test-stack)
	$(BIN)/python -m pytest -n 2 --dist loadgroup -m "not stack"

test-fast: install ## unit tests only
	$(BIN)/python -m pytest -m "not slow and not docker" -n 2

lint: install ## ruff over the code; actionlint and zizmor (offline) over .github/
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	scripts/lint-workflows.sh

bench: install ## run the benchmarks under bench/; they rewrite docs/performance.md
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/sweeps.py
	$(BIN)/python bench/kernels.py

clean: ## remove the venv, the MLflow store and Python caches (DVC outputs stay)
	rm -rf $(VENV) mlflow.db mlruns mlartifacts mlflow-server.db mlartifacts-server outputs multirun \
		.pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# Serving: the ONNX model behind FastAPI, locally and as a container image
.PHONY: serve image smoke

serve: install ## serve models/model.onnx at http://127.0.0.1:8080 (env PORT, MODEL_PATH, ...)
	$(BIN)/python -m mlpipeline.serving

image: install ## build the serving image through the Docker SDK (env BASE_IMAGE, IMAGE_TAG)
	$(BIN)/python -m mlpipeline.ops.image build

smoke: image ## run the image, check it on the test split, report its size and time to ready
	$(BIN)/python -m mlpipeline.ops.image smoke

# Pull-request report. BASE comes from the command line or the environment and reaches the
# program as a shell variable, so a branch name is never parsed as shell code.
.PHONY: report

report: install ## report the working tree against BASE (git ref, default origin/main) in reports/pr/
	$(BIN)/python -m mlpipeline.ops.report --base "$${BASE:-origin/main}" --out reports/pr

# Team services: a shared tracking server, and the stack of docker-compose.yml
.PHONY: mlflow-server stack-smoke test-stack

mlflow-server: install ## MLflow tracking server on 127.0.0.1:$MLFLOW_PORT (default 5000); env MLFLOW_BACKEND_URI, MLFLOW_ARTIFACTS
	scripts/mlflow-server.sh

stack-smoke: install ## build and start docker-compose.yml's stack, check both services, remove it (env BASE_IMAGE)
	$(BIN)/python -m mlpipeline.ops.stack smoke

test-stack: install ## the stack's own test (a tiny model; not in `make test`: the MLflow image builds for minutes)
	$(BIN)/python -m pytest -m stack tests/ops/test_stack.py
