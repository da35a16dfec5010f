"""Stage `evaluate`: torchmetrics on the test split.

Writes `paths.metrics` (for `dvc metrics`), the task's plot files into `paths.eval` (for
`dvc plots`) and its plots as PNGs into `paths.figures`. For classification: confusion.csv
(actual, predicted per sample), roc.csv and pr.csv (micro-averaged curves), per_class.csv
(precision, recall, F1, support per class); with a configured positive class of a binary task
also its precision, recall, F1 and PR-AUC. For regression: MAE, RMSE and R^2, and
predictions.csv (actual, predicted, residual per sample). The data kind adds its own PNGs
(images: the test images with the largest loss, labelled); a table none.
When the `crossval` stage ran (`cv.folds`), its mean and std join the metrics as `cv_*`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlpipeline.artifacts import atomic_path, read_json, write_csv, write_json
from mlpipeline.cli import run_stage
from mlpipeline.config import Config
from mlpipeline.config.tasks import task_for
from mlpipeline.data.sources import source_for
from mlpipeline.data.splits import read_meta, read_split
from mlpipeline.determinism import sample_rows, use_portable_kernels
from mlpipeline.plots import EVAL_COLUMNS, EVAL_PLOTS, LARGEST_LOSS_IMAGES, render_plots

PLOTTED_ROWS = 10_000  # test rows in the per-sample plot files at most


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
    """Score the trained model on the test split and write metrics, plot data and PNGs, as the
    task says: its own plot files alone (the folders are replaced whole, so another task's
    files from an earlier run go)."""
    # it imports torch, seconds that the stage's config check (and --help) should not wait for
    from mlpipeline.models.modelfile import load_model

    use_portable_kernels(cfg.cpu_threads)
    task, source = task_for(cfg.task), source_for(cfg)
    network, _ = load_model(cfg.paths.model)
    meta = read_meta(cfg.paths.features)
    x, y = read_split(cfg.paths.features, "test", mmap=True)
    outputs = task.predict(network, x, cfg.evaluate.batch_size)
    # a plot file is committed: it must stay small
    shown = sample_rows(len(y), PLOTTED_ROWS, cfg.seed)
    scalars, filled = task.evaluate(outputs, y, meta["classes"], cfg.evaluate, shown)
    files = {name: filled[name] for name in task.files}
    scalars |= cv_metrics(cfg.paths.cv)
    write_json(cfg.paths.metrics, scalars)
    with atomic_path(cfg.paths.eval, is_dir=True) as eval_dir:
        for name, rows in files.items():
            write_csv(eval_dir / EVAL_PLOTS[name], rows, EVAL_COLUMNS[name])
        with atomic_path(cfg.paths.figures, is_dir=True) as figures:
            render_plots(task.plots, cfg.paths.history, eval_dir, figures)
            worst = task.largest_losses(outputs, y, meta["classes"], LARGEST_LOSS_IMAGES)
            source.draw_figures(x, worst, figures)
    shown = "  ".join(f"{k} {v if isinstance(v, int) else f'{v:.4g}'}" for k, v in scalars.items())
    print(f"evaluated: {shown} -> {cfg.paths.metrics}")
    return {"scalars": scalars, "files": files}


if __name__ == "__main__":
    run_stage(evaluate)
