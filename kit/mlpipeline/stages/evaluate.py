"""Stage `evaluate`: torchmetrics on the test split.

Writes `paths.metrics` (for `dvc metrics`) and, for `dvc plots`, into `paths.eval`. For
classification: confusion.csv (actual, predicted per sample), roc.csv and pr.csv
(micro-averaged curves), per_class.csv (precision, recall, F1, support per class); with a
configured positive class of a binary task also its precision, recall, F1 and PR-AUC. For
regression: MAE, RMSE and R^2, and predictions.csv (actual, predicted, residual per sample).
When the `crossval` stage ran (`cv.folds`), its mean and std join the metrics as `cv_*`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mlpipeline.artifacts import read_json, write_csv, write_json
from mlpipeline.cli import run_stage
from mlpipeline.config import Config
from mlpipeline.config.tasks import task_for
from mlpipeline.data.splits import read_meta, read_split
from mlpipeline.determinism import use_portable_kernels
from mlpipeline.plots import EVAL_COLUMNS, EVAL_PLOTS

PLOTTED_ROWS = 10_000  # test rows in the per-sample plot files at most


def plotted(rows: int, limit: int, seed: int) -> Any:
    """The test rows the per-sample plots show: all of them, or a seeded sample of `limit`
    (a plot file is committed: it must stay small)."""
    if rows <= limit:
        return np.arange(rows)
    return np.sort(np.random.default_rng(seed).choice(rows, limit, replace=False))


def cv_metrics(path: Path) -> dict[str, float]:
    """The figures of the `crossval` stage's file at `path` as metrics (`cv_folds`,
    `cv_<metric>_mean`, `cv_<metric>_std`); none when it was off or has not run."""
    result = read_json(path) if path.is_file() else {"folds": 0}
    if not result["folds"]:
        return {}
    metric = result["metric"]
    return {
        "cv_folds": result["folds"],
        f"cv_{metric}_mean": result["mean"],
        f"cv_{metric}_std": result["std"],
    }


def evaluate(cfg: Config) -> dict[str, Any]:
    """Score the trained model on the test split and write metrics and plot data, as the
    task says. Every plot file dvc.yaml names is written; the other task's hold only their
    header."""
    # it imports torch, seconds that the stage's config check (and --help) should not wait for
    from mlpipeline.models.modelfile import load_model

    use_portable_kernels(cfg.cpu_threads)
    task = task_for(cfg.task)
    network, _ = load_model(cfg.paths.model)
    meta = read_meta(cfg.paths.features)
    x, y = read_split(cfg.paths.features, "test", mmap=True)
    outputs = task.predict(network, x, cfg.evaluate.batch_size)
    shown = plotted(len(y), PLOTTED_ROWS, cfg.seed)
    scalars, filled = task.evaluate(outputs, y, meta["classes"], cfg.evaluate, shown)
    files: dict[str, list[dict[str, Any]]] = {name: [] for name in EVAL_PLOTS} | filled
    scalars |= cv_metrics(cfg.paths.cv)
    write_json(cfg.paths.metrics, scalars)
    for name, rows in files.items():
        write_csv(cfg.paths.eval / EVAL_PLOTS[name], rows, EVAL_COLUMNS[name])
    width = max(map(len, scalars))
    print("test metrics:")
    for key, value in scalars.items():
        print(f"  {key:<{width}}  {value}")
    return {"scalars": scalars, "files": files}


if __name__ == "__main__":
    run_stage(evaluate)
