"""Stage `evaluate`: torchmetrics on the test split.

Writes `paths.metrics` (for `dvc metrics`) and, for `dvc plots`, into `paths.eval`:
confusion.csv (actual, predicted per sample), roc.csv and pr.csv (micro-averaged curves) and
per_class.csv (precision, recall, F1, support per class).
"""

from __future__ import annotations

from typing import Any

from mlpipeline.artifacts import write_csv, write_json
from mlpipeline.cli import run_stage
from mlpipeline.config import Config
from mlpipeline.data.splits import read_meta, read_split
from mlpipeline.plots import EVAL_PLOTS


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


def evaluate(cfg: Config) -> dict[str, Any]:
    """Score the trained model on the test split and write metrics and plot data."""
    from mlpipeline.determinism import use_portable_kernels
    from mlpipeline.models.modelfile import load_model, predict_proba

    use_portable_kernels(cfg.cpu_threads)
    network, _ = load_model(cfg.paths.model)
    meta = read_meta(cfg.paths.prepared)
    x, y = read_split(cfg.paths.prepared, "test")
    probs = predict_proba(network, x, cfg.evaluate.batch_size)
    result = compute_metrics(
        probs, y, meta["classes"], cfg.evaluate.calibration_bins, cfg.evaluate.curve_thresholds
    )
    classes = meta["classes"]
    write_json(cfg.paths.metrics, result["scalars"])
    confusion = [
        {"actual": classes[a], "predicted": classes[p]}
        for a, p in zip(y, result["predicted"], strict=False)
    ]
    for name, rows in (
        ("confusion", confusion),
        ("roc", result["roc"]),
        ("pr", result["pr"]),
        ("per_class", result["per_class"]),
    ):
        write_csv(cfg.paths.eval / EVAL_PLOTS[name], rows)
    width = max(map(len, result["scalars"]))
    print("test metrics:")
    for key, value in result["scalars"].items():
        print(f"  {key:<{width}}  {value}")
    return result


if __name__ == "__main__":
    run_stage(evaluate)
