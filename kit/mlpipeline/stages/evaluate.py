"""Stage `evaluate`: torchmetrics on the test split.

Writes `paths.metrics` (for `dvc metrics`) and, for `dvc plots`, into `paths.eval`. For
classification: confusion.csv (actual, predicted per sample), roc.csv and pr.csv
(micro-averaged curves), per_class.csv (precision, recall, F1, support per class); with a
configured positive class of a binary task also its precision, recall, F1 and PR-AUC. For
regression: MAE, RMSE and R^2, and predictions.csv (actual, predicted, residual per sample).
"""

from __future__ import annotations

from typing import Any

from mlpipeline.artifacts import write_csv, write_json
from mlpipeline.cli import run_stage
from mlpipeline.config import Config
from mlpipeline.data.splits import read_meta, read_split
from mlpipeline.plots import EVAL_COLUMNS, EVAL_PLOTS

PLOTTED_ROWS = 10_000  # test rows in the per-sample plot files at most


def compute_metrics(
    probs: Any, target: Any, classes: list[str], calibration_bins: int, thresholds: int
) -> dict[str, Any]:
    """Scalar metrics, per-class scores, confusion matrix and curves from test probabilities."""
    import torch
    import torchmetrics.functional.classification as M

    n = len(classes)
    target = torch.as_tensor(target)
    common = {"num_classes": n}
    scalars = {
        "accuracy": M.multiclass_accuracy(probs, target, average="micro", **common),
        "precision_macro": M.multiclass_precision(probs, target, average="macro", **common),
        "recall_macro": M.multiclass_recall(probs, target, average="macro", **common),
        "f1_macro": M.multiclass_f1_score(probs, target, average="macro", **common),
        "auroc_macro": M.multiclass_auroc(probs, target, average="macro", **common),
        "calibration_error": M.multiclass_calibration_error(
            probs, target, n_bins=calibration_bins, **common
        ),
        "log_loss": torch.nn.functional.nll_loss(probs.clamp_min(1e-12).log(), target),
    }
    per_class = {
        "precision": M.multiclass_precision(probs, target, average=None, **common),
        "recall": M.multiclass_recall(probs, target, average=None, **common),
        "f1": M.multiclass_f1_score(probs, target, average=None, **common),
    }
    support = torch.bincount(target, minlength=n)
    fpr, tpr, _ = M.multiclass_roc(probs, target, thresholds=thresholds, average="micro", **common)
    precision, recall, _ = M.multiclass_precision_recall_curve(
        probs, target, thresholds=thresholds, average="micro", **common
    )
    return {
        "scalars": {k: round(float(v), 6) for k, v in scalars.items()}
        | {"test_samples": len(target)},
        "per_class": [
            {
                "class": c,
                **{k: round(float(v[i]), 6) for k, v in per_class.items()},
                "support": int(support[i]),
            }
            for i, c in enumerate(classes)
        ],
        "confusion": M.multiclass_confusion_matrix(probs, target, **common).tolist(),
        "predicted": probs.argmax(dim=1).tolist(),
        "roc": [
            {"fpr": round(float(a), 6), "tpr": round(float(b), 6)}
            for a, b in zip(fpr, tpr, strict=False)
        ],
        "pr": [
            {"recall": round(float(r), 6), "precision": round(float(p), 6)}
            for r, p in zip(recall, precision, strict=False)
        ],
    }


def positive_class_metrics(probs: Any, target: Any, positive: int, thresholds: int) -> dict:
    """Precision, recall, F1 and PR-AUC of one class of a binary task."""
    import torch
    import torchmetrics.functional.classification as M

    score, truth = probs[:, positive], (torch.as_tensor(target) == positive).long()
    return {
        "positive_precision": M.binary_precision(score, truth),
        "positive_recall": M.binary_recall(score, truth),
        "positive_f1": M.binary_f1_score(score, truth),
        "positive_pr_auc": M.binary_average_precision(score, truth, thresholds=thresholds),
    }


def regression_metrics(predicted: Any, target: Any) -> dict[str, float]:
    """MAE, RMSE and R^2 on the test split."""
    import torch
    import torchmetrics.functional as M

    target = torch.as_tensor(target)
    return {
        "mae": round(float(M.mean_absolute_error(predicted, target)), 6),
        "rmse": round(float(M.mean_squared_error(predicted, target, squared=False)), 6),
        "r2": round(float(M.r2_score(predicted, target)), 6),
        "test_samples": len(target),
    }


def plotted(rows: int, limit: int, seed: int) -> Any:
    """The test rows the per-sample plots show: all of them, or a seeded sample of `limit`
    (a plot file is committed: it must stay small)."""
    import numpy as np

    if rows <= limit:
        return np.arange(rows)
    return np.sort(np.random.default_rng(seed).choice(rows, limit, replace=False))


def evaluate(cfg: Config) -> dict[str, Any]:
    """Score the trained model on the test split and write metrics and plot data. Every plot
    file dvc.yaml names is written; the other task's hold only their header."""
    from mlpipeline.determinism import use_portable_kernels
    from mlpipeline.errors import PipelineError
    from mlpipeline.models.modelfile import load_model, predict

    use_portable_kernels(cfg.cpu_threads)
    network, _ = load_model(cfg.paths.model)
    meta = read_meta(cfg.paths.features)
    x, y = read_split(cfg.paths.features, "test", mmap=True)
    outputs = predict(network, x, cfg.task, cfg.evaluate.batch_size)
    shown = plotted(len(y), PLOTTED_ROWS, cfg.seed)
    files: dict[str, list[dict[str, Any]]] = {name: [] for name in EVAL_PLOTS}
    if cfg.task == "regression":
        scalars = regression_metrics(outputs, y)
        files["predictions"] = [
            {
                "actual": round(float(a), 6),
                "predicted": round(float(p), 6),
                "residual": round(float(p - a), 6),
            }
            for a, p in zip(y[shown], outputs.numpy()[shown], strict=True)
        ]
    else:
        classes = meta["classes"]
        result = compute_metrics(
            outputs, y, classes, cfg.evaluate.calibration_bins, cfg.evaluate.curve_thresholds
        )
        scalars = result["scalars"]
        if (positive := cfg.evaluate.positive_class) is not None:
            if positive not in classes or len(classes) != 2:
                raise PipelineError(
                    f"evaluate.positive_class {positive!r} needs a binary task with that class; "
                    f"the classes are {classes}"
                )
            extra = positive_class_metrics(
                outputs, y, classes.index(positive), cfg.evaluate.curve_thresholds
            )
            scalars = scalars | {k: round(float(v), 6) for k, v in extra.items()}
        predicted = result["predicted"]
        files["confusion"] = [
            {"actual": classes[y[i]], "predicted": classes[predicted[i]]} for i in shown
        ]
        files |= {"roc": result["roc"], "pr": result["pr"], "per_class": result["per_class"]}
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
