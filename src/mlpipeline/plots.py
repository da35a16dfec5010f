"""Render the pipeline's plot data (reports/) as PNG pictures, for MLflow and PR reports."""

from __future__ import annotations

import csv
from pathlib import Path


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def render_plots(reports: Path, out_dir: Path) -> list[Path]:
    """Confusion matrix, ROC and PR curves and training curves as PNGs in `out_dir`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []

    def save(fig: plt.Figure, name: str) -> None:
        path = out_dir / name
        fig.tight_layout()
        fig.savefig(path, dpi=110, metadata={"Software": None})
        plt.close(fig)
        written.append(path)

    pairs = _rows(reports / "eval" / "confusion.csv")
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
    save(fig, "confusion_matrix.png")

    fig, (roc_ax, pr_ax) = plt.subplots(1, 2, figsize=(9, 4))
    roc = _rows(reports / "eval" / "roc.csv")
    roc_ax.plot([float(r["fpr"]) for r in roc], [float(r["tpr"]) for r in roc])
    roc_ax.plot([0, 1], [0, 1], ls=":", color="grey")
    roc_ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (micro)")
    pr = _rows(reports / "eval" / "pr.csv")
    pr_ax.plot([float(r["recall"]) for r in pr], [float(r["precision"]) for r in pr])
    pr_ax.set(xlabel="recall", ylabel="precision", title="Precision-recall (micro)")
    save(fig, "roc_pr.png")

    history = _rows(reports / "train" / "history.csv")
    epochs = [int(r["epoch"]) for r in history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(9, 4))
    for key in ("train_loss", "val_loss"):
        loss_ax.plot(epochs, [float(r[key]) for r in history], label=key)
    for key in ("train_acc", "val_acc"):
        acc_ax.plot(epochs, [float(r[key]) for r in history], label=key)
    loss_ax.set(xlabel="epoch", title="Loss")
    acc_ax.set(xlabel="epoch", title="Accuracy")
    loss_ax.legend()
    acc_ax.legend()
    save(fig, "training_curves.png")
    return written
