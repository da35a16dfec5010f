"""Render the pipeline's plot data (the epoch history and the evaluation files) as PNG
pictures, for MLflow and the pull-request report."""

from __future__ import annotations

from pathlib import Path

from mlpipeline.artifacts import read_csv

# the evaluate stage's plot files in `paths.eval`, by what they hold
EVAL_PLOTS = {
    "confusion": "confusion.csv",
    "roc": "roc.csv",
    "pr": "pr.csv",
    "per_class": "per_class.csv",
}


def render_plots(history: Path, eval_dir: Path, out_dir: Path) -> list[Path]:
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

    pairs = read_csv(eval_dir / EVAL_PLOTS["confusion"])
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
    roc = read_csv(eval_dir / EVAL_PLOTS["roc"])
    roc_ax.plot([float(r["fpr"]) for r in roc], [float(r["tpr"]) for r in roc])
    roc_ax.plot([0, 1], [0, 1], ls=":", color="grey")
    roc_ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (micro)")
    pr = read_csv(eval_dir / EVAL_PLOTS["pr"])
    pr_ax.plot([float(r["recall"]) for r in pr], [float(r["precision"]) for r in pr])
    pr_ax.set(xlabel="recall", ylabel="precision", title="Precision-recall (micro)")
    save(fig, "roc_pr.png")

    rows = read_csv(history)
    epochs = [int(r["epoch"]) for r in rows]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(9, 4))
    for key in ("train_loss", "val_loss"):
        loss_ax.plot(epochs, [float(r[key]) for r in rows], label=key)
    for key in ("train_acc", "val_acc"):
        acc_ax.plot(epochs, [float(r[key]) for r in rows], label=key)
    loss_ax.set(xlabel="epoch", title="Loss")
    acc_ax.set(xlabel="epoch", title="Accuracy")
    loss_ax.legend()
    acc_ax.legend()
    save(fig, "training_curves.png")
    return written
