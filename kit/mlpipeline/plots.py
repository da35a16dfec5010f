"""Render the pipeline's plot data (the epoch history and the evaluation files) as PNG
pictures, for MLflow and the pull-request report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mlpipeline.artifacts import read_csv

# the evaluate stage's plot files in `paths.eval`, by what they hold, and their columns
EVAL_PLOTS = {
    "confusion": "confusion.csv",
    "roc": "roc.csv",
    "pr": "pr.csv",
    "per_class": "per_class.csv",
    "predictions": "predictions.csv",
}
EVAL_COLUMNS = {
    "confusion": ["actual", "predicted"],
    "roc": ["fpr", "tpr"],
    "pr": ["recall", "precision"],
    "per_class": ["class", "precision", "recall", "f1", "support"],
    "predictions": ["actual", "predicted", "residual"],
}


def render_plots(history: Path, eval_dir: Path, out_dir: Path) -> list[Path]:
    """The evaluation plots (a classification's confusion matrix, ROC and PR curves; a
    regression's predicted-vs-actual and residuals) and the training curves, as PNGs in
    `out_dir`. The task is the one whose evaluation files hold rows."""
    # a second to import, and the evaluate stage imports this module for its columns alone
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after use("Agg"): pyplot picks its backend on import

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []

    def save(fig: plt.Figure, name: str) -> None:
        path = out_dir / name
        fig.tight_layout()
        fig.savefig(path, dpi=110, metadata={"Software": None})
        plt.close(fig)
        written.append(path)

    predictions = read_csv(eval_dir / EVAL_PLOTS["predictions"])
    if predictions:
        save(_regression_figure(plt, predictions), "predicted_vs_actual.png")
    else:
        save(_confusion_figure(plt, read_csv(eval_dir / EVAL_PLOTS["confusion"])),
             "confusion_matrix.png")  # fmt: skip
        save(_curves_figure(plt, eval_dir), "roc_pr.png")

    rows = read_csv(history)
    epochs = [int(r["epoch"]) for r in rows]
    scores = ("val_mae", "val_rmse") if predictions else ("train_acc", "val_acc")
    fig, (loss_ax, score_ax) = plt.subplots(1, 2, figsize=(9, 4))
    for ax, keys in ((loss_ax, ("train_loss", "val_loss")), (score_ax, scores)):
        for key in keys:
            ax.plot(epochs, [float(r[key]) for r in rows], label=key)
        ax.set(xlabel="epoch")
        ax.legend()
    loss_ax.set(title="Loss")
    score_ax.set(title="Validation error" if predictions else "Accuracy")
    save(fig, "training_curves.png")
    return written


def _regression_figure(plt: Any, rows: list[dict[str, str]]) -> Any:
    actual = [float(r["actual"]) for r in rows]
    predicted = [float(r["predicted"]) for r in rows]
    residual = [float(r["residual"]) for r in rows]
    fig, (fit_ax, res_ax) = plt.subplots(1, 2, figsize=(9, 4))
    fit_ax.scatter(actual, predicted, s=8, alpha=0.6)
    low, high = min(actual + predicted), max(actual + predicted)
    fit_ax.plot([low, high], [low, high], ls=":", color="grey")
    fit_ax.set(xlabel="actual", ylabel="predicted", title="Predicted vs actual (test)")
    res_ax.scatter(predicted, residual, s=8, alpha=0.6)
    res_ax.axhline(0, ls=":", color="grey")
    res_ax.set(xlabel="predicted", ylabel="predicted - actual", title="Residuals (test)")
    return fig


def _confusion_figure(plt: Any, pairs: list[dict[str, str]]) -> Any:
    classes = sorted({r["actual"] for r in pairs} | {r["predicted"] for r in pairs})
    index = {c: i for i, c in enumerate(classes)}
    matrix = np.zeros((len(classes), len(classes)), dtype=int)
    for r in pairs:
        matrix[index[r["actual"]], index[r["predicted"]]] += 1
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), n in np.ndenumerate(matrix):
        if n:
            ax.text(
                j,
                i,
                n,
                ha="center",
                va="center",
                fontsize=8,
                color="white" if n > matrix.max() / 2 else "black",
            )
    ax.set(
        xticks=range(len(classes)),
        yticks=range(len(classes)),
        xticklabels=classes,
        yticklabels=classes,
        xlabel="predicted",
        ylabel="actual",
        title="Confusion matrix (test)",
    )
    return fig


def _curves_figure(plt: Any, eval_dir: Path) -> Any:
    fig, (roc_ax, pr_ax) = plt.subplots(1, 2, figsize=(9, 4))
    roc = read_csv(eval_dir / EVAL_PLOTS["roc"])
    roc_ax.plot([float(r["fpr"]) for r in roc], [float(r["tpr"]) for r in roc])
    roc_ax.plot([0, 1], [0, 1], ls=":", color="grey")
    roc_ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (micro)")
    pr = read_csv(eval_dir / EVAL_PLOTS["pr"])
    pr_ax.plot([float(r["recall"]) for r in pr], [float(r["precision"]) for r in pr])
    pr_ax.set(xlabel="recall", ylabel="precision", title="Precision-recall (micro)")
    return fig
