# Two commands set everything up on a fresh machine with Python and git:
#   make pipeline   create .venv, install the pipeline's part of the lock, run `dvc repro`
#   make test       create .venv, install all of the lock, run the fast tier of the tests (minutes)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
# Stage commands run `python` and `dvc` from the venv.
export PATH := $(abspath $(BIN)):$(PATH)
# uv installs into the venv, with the interpreter PYTHON made it from, never a downloaded one
export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))
export UV_PYTHON_DOWNLOADS := never
# uv from PATH, else the venv's own (make bootstraps it there with pip, at the lock's version)
UV := $(or $(shell command -v uv 2>/dev/null),$(BIN)/uv)
locked = $(shell sed -n '/^name = "$(1)"$$/{n;s/^version = "\(.*\)"$$/\1/p;}' uv.lock)
# TORCH_INDEX: install torch and torchvision from this index URL or wheel folder instead of PyPI,
# at the locked versions; every other package comes from the lock, hash-checked. On Linux without an
# NVIDIA driver (no nvidia-smi) it is PyTorch's CPU index: PyPI's Linux torch carries CUDA's
# libraries, several GB. `TORCH_INDEX=` (empty) installs PyPI's torch.
ifeq ($(shell uname -s)$(shell command -v nvidia-smi 2>/dev/null),Linux)
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
endif
TORCH_INDEX ?=
CUDA_PACKAGES = $(sort $(shell sed -n 's/^name = "\(nvidia-[^"]*\|cuda-[^"]*\|triton\)"$$/\1/p' uv.lock))

.DEFAULT_GOAL := help
.PHONY: help install install-dev lock pipeline exps test test-all test-slow lint audit bench clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

# Set-up and the pipeline

install: $(STAMP) ## create .venv with the pipeline's and the service's locked packages (uv.lock)
	@$(BIN)/python -m mlpipeline.ops.plots_page $(PLOTS_PAGE)

install-dev: $(DEV_STAMP) ## add the tests', linters' and benchmarks' locked packages to .venv
	@$(BIN)/python -m mlpipeline.ops.plots_page $(PLOTS_PAGE)

# the page `dvc plots show` fills (.dvc/config names it), with Vega's JavaScript inside so that
# it draws offline; written when missing or made by another vl-convert-python
PLOTS_PAGE := .dvc/plots/page.html

# the pipeline's environment (with DVC's S3 remotes) holds no test or lint tool; the dev set is
# all of the lock
$(STAMP): SELECTION = --no-default-groups --group serve --extra s3
$(STAMP): SYNC = --inexact
$(DEV_STAMP): SELECTION = --all-extras --all-groups
$(STAMP) $(DEV_STAMP): uv.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python 3.10 or newer is needed: run make PYTHON=python3.11 ...")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@test -x "$(UV)" || $(BIN)/python -m pip install --quiet --disable-pip-version-check "uv==$(call locked,uv)"
	@echo "installing uv.lock into $(VENV) ($(if $(SYNC),the pipeline and the service,everything: tests, linters, benchmarks too); torch from $(or $(TORCH_INDEX),PyPI))"
ifeq ($(TORCH_INDEX),)
	@$(UV) sync --quiet --locked $(SYNC) $(SELECTION) --python $(BIN)/python
else
	@$(UV) export --locked $(SELECTION) --no-emit-project --no-emit-package torch --no-emit-package torchvision \
		$(CUDA_PACKAGES:%=--prune %) --quiet --output-file $(VENV)/requirements.txt
	@$(UV) pip $(if $(SYNC),install --no-deps -r,sync) $(VENV)/requirements.txt --quiet \
		--python $(BIN)/python --require-hashes
	@$(UV) pip install --quiet --python $(BIN)/python --no-deps \
		$(if $(wildcard $(TORCH_INDEX)),--no-index --find-links,--index-url) $(TORCH_INDEX) \
		"torch==$(call locked,torch)" "torchvision==$(call locked,torchvision)"
	@$(UV) pip install --quiet --python $(BIN)/python --no-deps --editable .
endif
	@touch $@

lock: ## resolve pyproject.toml into uv.lock (with hashes); commit both
	$(UV) lock

# a new project's first run composes params.yaml before DVC reads dvc.yaml, whose paths come from it
pipeline: install ## reproduce the pipeline (dvc repro) on the data conf/ names
	@test -f params.yaml || $(BIN)/python -m mlpipeline.stages.compose
	$(BIN)/dvc repro
	@$(BIN)/dvc metrics show

# plain `dvc exp show` has a column per parameter, dependency hash and metric (over a hundred);
# this keeps the parameters that differ between the experiments and the test metrics (the
# attributions, a column per input, are for `dvc metrics diff`)
EXPS_DROP := .*/|conf$$|params\.yaml$$|Created$$|.*\._target_$$|attribution\..*
exps: install ## compare your experiments: the parameters that differ, and the metrics
	@$(BIN)/dvc exp show --only-changed --drop '$(EXPS_DROP)'

# Tests, linters, benchmarks

# pytest-xdist's worker processes: one per CPU core by default
TEST_WORKERS ?= auto
# more arguments for pytest, e.g. PYTEST_ARGS="-k features"
PYTEST_ARGS ?=
# each tier ends with its ten slowest tests, so that every log says where the time goes
PYTEST = $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal --durations=10 $(PYTEST_ARGS)

test: install-dev kfp-install ## the fast tier (minutes): unit tests, refusals, the app in-process, one tiny real `dvc repro`
	$(PYTEST) -m "not slow"

test-all: test test-slow ## everything: the fast tier, then the tests marked slow

test-slow: install-dev airflow-install sfn-emulator-install kfp-install ## the second tier alone: Docker images, Airflow, Prometheus, every pipeline, the benchmarks
	$(PYTEST) -m slow

lint: install-dev audit ## ruff; the locks against their pyproject.toml; actionlint and zizmor over .github/
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(UV) lock --check
	$(UV) lock --check --project $(AIRFLOW_PROJECT)
	$(UV) lock --check --project $(SFN_PROJECT)
	$(UV) lock --check --project $(KFP_PROJECT)
	scripts/lint-workflows.sh

audit: install-dev ## known vulnerabilities in the locked set (pip-audit; exceptions in audit-ignore.txt)
	scripts/audit.sh

# bench/tables.py's sizes for `make bench`, smaller than the issue's 1M and 10M rows, which
# take long on a small machine: make bench TABLE_ROWS="1000000 10000000" runs those
TABLE_ROWS ?= 100000 1000000
# bench/spark.py's sizes for `make bench` (the data stages, local engine against local Spark):
# make bench SPARK_ROWS="1000000 10000000" runs the issue's
SPARK_ROWS ?= 20000 200000

bench: install-dev airflow-install ## run the benchmarks under bench/; they rewrite docs/performance.md
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/sweeps.py
	$(BIN)/python bench/warm_workers.py
	$(BIN)/python bench/kernels.py
	$(BIN)/python bench/throughput.py --table
	$(BIN)/python bench/tables.py --rows $(TABLE_ROWS)
	$(BIN)/python bench/spark.py --rows $(SPARK_ROWS)
	$(BIN)/python bench/images.py
	$(BIN)/python bench/orchestration.py
	$(BIN)/python bench/suite.py
	$(BIN)/python bench/startup.py

clean: ## remove the venv, the MLflow store and Python caches (DVC outputs stay)
	rm -rf $(VENV) $(AIRFLOW_VENV) $(SFN_VENV) $(KFP_VENV) mlflow.db mlruns mlartifacts mlflow-server.db mlartifacts-server outputs multirun \
		.pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# Orchestration: the pipeline as an Airflow DAG (docs/orchestration.md). Airflow has its own
# environment and lock: it caps fastapi below the service's pin.
AIRFLOW_PROJECT := orchestration/airflow
AIRFLOW_VENV ?= .venv-airflow
AIRFLOW_STAMP := $(AIRFLOW_VENV)/.installed
.PHONY: airflow-install airflow-lock train-image

airflow-install: $(AIRFLOW_STAMP) ## create .venv-airflow: Airflow from its own lock, and mlpipeline (no deps) for the DAG

$(AIRFLOW_STAMP): $(AIRFLOW_PROJECT)/uv.lock $(AIRFLOW_PROJECT)/pyproject.toml | $(STAMP)
	@test -x $(AIRFLOW_VENV)/bin/python || $(PYTHON) -m venv $(AIRFLOW_VENV)
	UV_PROJECT_ENVIRONMENT=$(abspath $(AIRFLOW_VENV)) $(UV) sync --locked --project $(AIRFLOW_PROJECT) \
		--python $(AIRFLOW_VENV)/bin/python
	$(UV) pip install --python $(AIRFLOW_VENV)/bin/python --no-deps --editable .
	@touch $@

airflow-lock: ## resolve orchestration/airflow/pyproject.toml into its uv.lock; commit both
	$(UV) lock --project $(AIRFLOW_PROJECT)

# Kubeflow Pipelines: the same graph compiled to a pipeline (docs/orchestration-kfp.md). The
# SDK has its own environment and lock: it caps protobuf below the pipeline's.
KFP_PROJECT := orchestration/kfp
KFP_VENV ?= .venv-kfp
KFP_STAMP := $(KFP_VENV)/.installed
KFP_OUT ?= orchestration/kfp/pipeline.yaml
KFP_PLAN := orchestration/kfp/plan.json
.PHONY: kfp kfp-install kfp-lock

kfp: install kfp-install ## write the Kubeflow pipeline (KFP_OUT, default orchestration/kfp/pipeline.yaml) from the DVC graph
	$(BIN)/python -m mlpipeline.ops.orchestrate.kfp plan --params params.yaml --output $(KFP_PLAN)
	$(KFP_VENV)/bin/python -m mlpipeline.ops.orchestrate.kfp compile $(KFP_PLAN) --output $(KFP_OUT)

kfp-install: $(KFP_STAMP) ## create .venv-kfp: the Kubeflow Pipelines SDK from its own lock, and mlpipeline (no deps)

$(KFP_STAMP): $(KFP_PROJECT)/uv.lock $(KFP_PROJECT)/pyproject.toml | $(STAMP)
	@test -x $(KFP_VENV)/bin/python || $(PYTHON) -m venv $(KFP_VENV)
	UV_PROJECT_ENVIRONMENT=$(abspath $(KFP_VENV)) $(UV) sync --quiet --locked --project $(KFP_PROJECT) \
		--python $(KFP_VENV)/bin/python
	$(UV) pip install --quiet --python $(KFP_VENV)/bin/python --no-deps --editable .
	@touch $@

kfp-lock: ## resolve orchestration/kfp/pyproject.toml into its uv.lock; commit both
	$(UV) lock --project $(KFP_PROJECT)

train-image: install ## build the training image the DAG's docker mode runs (env BASE_IMAGE, TORCH_INDEX, TRAIN_IMAGE_TAG)
	$(BIN)/python -m mlpipeline.ops.train_image build

# AWS Step Functions: the same graph as a state machine, one AWS Batch job per stage
# (docs/orchestration-stepfunctions.md); its local emulator (moto) has its own environment
SFN_PROJECT := orchestration/stepfunctions
SFN_VENV ?= .venv-sfn
SFN_STAMP := $(SFN_VENV)/.installed
.PHONY: stepfunctions sfn-emulator-install sfn-lock

stepfunctions: install ## write orchestration/stepfunctions/pipeline.asl.json, the pipeline as an AWS Step Functions state machine
	$(BIN)/python -m mlpipeline.ops.orchestrate stepfunctions --output $(SFN_PROJECT)/pipeline.asl.json

sfn-emulator-install: $(SFN_STAMP) ## create .venv-sfn: moto's Step Functions and Batch emulator, from its own lock

$(SFN_STAMP): $(SFN_PROJECT)/uv.lock $(SFN_PROJECT)/pyproject.toml | $(STAMP)
	@test -x $(SFN_VENV)/bin/python || $(PYTHON) -m venv $(SFN_VENV)
	UV_PROJECT_ENVIRONMENT=$(abspath $(SFN_VENV)) $(UV) sync --locked --project $(SFN_PROJECT) \
		--python $(SFN_VENV)/bin/python
	@touch $@

sfn-lock: ## resolve orchestration/stepfunctions/pyproject.toml into its uv.lock; commit both
	$(UV) lock --project $(SFN_PROJECT)

# Serving: the ONNX model behind FastAPI, locally and as a container image
.PHONY: serve image smoke check-image

serve: install ## serve models/model.onnx at http://127.0.0.1:8080 (env PORT, MODEL_PATH, ...)
	$(BIN)/python -m mlpipeline.serving

image: install ## build the serving image through the Docker SDK (env BASE_IMAGE, IMAGE_TAG)
	$(BIN)/python -m mlpipeline.ops.image build

smoke: image check-image ## build the image, then check it on the test split (size, time to ready)

check-image: install ## check an image built before (IMAGE_TAG) on the test split
	$(BIN)/python -m mlpipeline.ops.image smoke

# Monitoring: the Prometheus rules from conf/monitoring, and the offline drift check
.PHONY: rules drift

rules: install ## write monitoring/prometheus/rules.yml from params.yaml's monitoring section
	$(BIN)/python -m mlpipeline.ops.rules --params params.yaml --out monitoring/prometheus/rules.yml

# DATA reaches the program as a shell variable, so a file name is never parsed as shell code
drift: install ## score DATA (CSV/Parquet records, .npy images) against models/profile.json; exit 1 above the critical PSI
	@test -n "$${DATA:-}" || { echo "error: give the batch to check: make drift DATA=new.csv" >&2; exit 2; }
	$(BIN)/python -m mlpipeline.ops.drift --params params.yaml "$${DATA}"

# Pull-request report. BASE comes from the command line or the environment and reaches the
# program as a shell variable, so a branch name is never parsed as shell code.
.PHONY: report

report: install ## report the working tree against BASE (git ref, default origin/main) in reports/pr/
	$(BIN)/python -m mlpipeline.ops.report --base "$${BASE:-origin/main}" --out reports/pr

# Team services: a shared tracking server, and the stack of docker-compose.yml
.PHONY: mlflow-server stack-smoke

mlflow-server: install ## MLflow tracking server on 127.0.0.1:$MLFLOW_PORT (default 5000); env MLFLOW_BACKEND_URI, MLFLOW_ARTIFACTS
	scripts/mlflow-server.sh

stack-smoke: install ## build and start docker-compose.yml's stack, check both services, remove it (env BASE_IMAGE)
	$(BIN)/python -m mlpipeline.ops.stack smoke

# the template's maintainers' targets (make template): in the template repository alone, never
# in a project made from it
-include tests/template/template.mk
