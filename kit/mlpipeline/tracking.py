"""MLflow: where the tracking store is, and logging one pipeline run with its model version."""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import mlflow
from filelock import FileLock
from mlflow.entities import Metric
from mlflow.environment_variables import MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT

from mlpipeline.config.schema import flatten
from mlpipeline.errors import PipelineError, redact

# MLflow's lines on registering a model, which the register stage's own line says again with
# the store and the run; whatever else MLflow prints then is passed on
REGISTRY_NEWS = re.compile(
    r"(Successfully registered model |Registered model .* already exists|Created version )"
)

ATTRIBUTION_PREFIX = "attribution/"  # the explain stage's values, as MLflow metrics
# what MLflow allows in a metric's path part without resolving to another (`..`, `a/`): any
# other character of a column's name becomes "_"
METRIC_NAME_OUTSIDE = re.compile(r"[^\w\- ]")


def attribution_metrics(values: dict[str, float]) -> dict[str, float]:
    """The explain stage's values (per column or region) as MLflow metrics
    `attribution/<name>`, each name spelled as MLflow allows."""
    return {f"{ATTRIBUTION_PREFIX}{METRIC_NAME_OUTSIDE.sub('_', k)}": v for k, v in values.items()}


def repo_root() -> Path:
    """The main repository root, also from inside `dvc exp run --temp/--queue` workspaces
    (DVC points DVC_ROOT at the parent repository there)."""
    if root := os.environ.get("DVC_ROOT"):
        return Path(root).resolve()
    here = Path.cwd().resolve()
    return next((p for p in (here, *here.parents) if (p / ".dvc").is_dir()), here)


def tracking_uri(configured: str | None = None) -> str:
    """MLFLOW_TRACKING_URI, else tracking.uri, else an absolute sqlite:///<root>/mlflow.db."""
    return (
        os.environ.get("MLFLOW_TRACKING_URI")
        or configured
        or f"sqlite:///{repo_root() / 'mlflow.db'}"
    )


def artifact_location(uri: str) -> str | None:
    """For a SQLite store keep artifacts beside the database; servers choose their own."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
    return None


def setup(uri_cfg: str | None, experiment: str) -> str:
    """Point MLflow at the store and experiment; return the experiment id.

    MLflow prints a link to each run it ends, made of the tracking URI as given: for a URI
    that holds credentials those links are turned off for this process, as they would show
    the password (the stages name the store with `redact`)."""
    uri = tracking_uri(uri_cfg)
    if redact(uri) != uri:
        os.environ[MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT.name] = "true"
    mlflow.set_tracking_uri(uri)
    # the registry would otherwise keep the first store this process resolved
    mlflow.set_registry_uri(uri)
    # Opening a new SQLite store creates and migrates its tables; two processes doing it at
    # once (the first `dvc queue start -j 2`, parallel sweep trials) break the migration, and
    # both would create the experiment: one at a time.
    db = uri.removeprefix("sqlite:///") if uri.startswith("sqlite:///") else None
    try:
        with FileLock(f"{db}.lock") if db else contextlib.nullcontext():
            found = mlflow.get_experiment_by_name(experiment)
            if found is not None:
                return found.experiment_id
            return mlflow.create_experiment(experiment, artifact_location=artifact_location(uri))
    except Exception as err:  # MLflow raises many types when the store is unreachable
        # masked before it is cut: a cut could leave half a password unrecognised
        reason = redact(str(err).splitlines()[0])[:200]
        raise PipelineError(
            f"MLflow tracking store {redact(uri)} is not usable ({type(err).__name__}: "
            f"{reason}); fix MLFLOW_TRACKING_URI or tracking.uri"
        ) from None


def log_params(params: dict[str, Any]) -> None:
    """The whole config as flat MLflow params (`optimizer.lr`), each cut to MLflow's limit."""
    mlflow.log_params({k: str(v)[:6000] for k, v in flatten(params).items()})


def log_history(history: Iterable[dict[str, Any]]) -> None:
    """The active run's per-epoch metrics in one batch: one store transaction, not one per
    epoch (concurrent sweep trials share one SQLite file). Empty values (the other task's
    columns of the history file) are left out."""
    now = int(time.time() * 1000)
    metrics = [
        Metric(key, float(value), now, int(row["epoch"]))
        for row in history
        for key, value in row.items()
        if key != "epoch" and value not in ("", None)
    ]
    mlflow.MlflowClient().log_batch(mlflow.active_run().info.run_id, metrics=metrics)


@contextlib.contextmanager
def without_registry_news() -> Iterator[None]:
    """Hold what is printed to stderr meanwhile, then pass it on less MLflow's REGISTRY_NEWS
    (also when the block fails)."""
    printed = io.StringIO()
    try:
        with contextlib.redirect_stderr(printed):
            yield
    finally:
        lines = printed.getvalue().splitlines(keepends=True)
        sys.stderr.writelines(line for line in lines if not REGISTRY_NEWS.match(line))


def log_pipeline_run(
    *,
    uri: str | None,
    experiment: str,
    registered_model: str,
    params: dict[str, Any],
    history: Iterable[dict[str, Any]],
    metrics: dict[str, float],
    tags: dict[str, str],
    onnx_path: Path,
    card: dict[str, Any],
    artifacts: Iterable[Path],
    input_example: Any,
    signature: Any,
    model_files: Iterable[Path] = (),
    attributions: dict[str, float] | None = None,
    folders: Mapping[str, Path] | None = None,
) -> dict[str, str]:
    """One MLflow run: params, per-epoch and test metrics, plots, the ONNX model registered
    as a new version of `registered_model` with its `signature` (an mlflow ModelSignature) and
    `input_example`; `model_files` (the drift profile) beside the card; the explain stage's
    `attributions` as metrics `attribution/<name>`; each of `folders` (the explain stage's and the
    data report's) whole under its name. Returns run id and model version."""
    # only registration needs them, and the sweep's processes import this module too
    import onnx
    import onnxruntime

    experiment_id = setup(uri, experiment)
    with mlflow.start_run(experiment_id=experiment_id) as run:
        log_params(params)
        log_history(history)
        # the test split's scores as test_*; cross-validation's cv_* were not scored on it
        mlflow.log_metrics(
            {k if k.startswith("cv_") else f"test_{k}": float(v) for k, v in metrics.items()}
        )
        mlflow.log_metrics(attribution_metrics(attributions or {}))
        mlflow.set_tags(tags)
        for path in artifacts:
            mlflow.log_artifact(str(path), artifact_path="reports")
        for name, folder in (folders or {}).items():
            mlflow.log_artifacts(str(folder), artifact_path=name)
        mlflow.log_dict(card, "model_card.json")
        for path in model_files:
            mlflow.log_artifact(str(path))
        with without_registry_news():
            info = mlflow.onnx.log_model(
                onnx.load(str(onnx_path)),
                name="model",
                registered_model_name=registered_model,
                signature=signature,
                input_example=input_example,
                pip_requirements=[
                    f"onnxruntime=={onnxruntime.__version__}",
                    f"onnx=={onnx.__version__}",
                ],
                # the providers this onnxruntime has, in MLflow's order: MLflow's default names
                # CUDA's too, and warns on every CPU-only machine that it is missing
                onnx_execution_providers=[
                    p
                    for p in mlflow.onnx.ONNX_EXECUTION_PROVIDERS
                    if p in onnxruntime.get_available_providers()
                ],
            )
    return {"run_id": run.info.run_id, "model_version": str(info.registered_model_version)}
