"""The pipeline's plots, declared once: each task object (mlpipeline.config.tasks) lists its
`Plot`s; from them the compose stage writes the definitions `dvc plots` reads (`paths.plots`,
a dvc.yaml of plots alone) and the evaluate stage renders the same panels as PNGs into
`paths.figures`, which MLflow and the pull-request report take as they are."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mlpipeline.artifacts import read_csv, write_text

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
# the explain stage's plot file in `paths.explain`, and its columns
EXPLAIN_PLOTS = {"importance": "importance.csv"}
EXPLAIN_COLUMNS = {"importance": ["name", "importance"]}
HEATMAPS = ("heatmaps_correct", "heatmaps_wrong")  # the PNGs of images and their attributions
HISTORY = "history"  # a Plot's source when it reads the training history (`paths.history`)
LARGEST_LOSS = "largest_loss"  # the PNG of the test images with the largest loss
LARGEST_LOSS_IMAGES = 16  # how many it shows at most
DEFINITIONS_HEADER = (
    "# Written by the compose stage from the task's plots (mlpipeline.config.tasks): `dvc plots\n"
    "# show` reads it beside dvc.yaml. Do not edit; add plots of your own to dvc.yaml.\n"
)


@dataclass(frozen=True)
class Plot:
    """One panel: DVC draws it from a CSV file with one of its templates, and the evaluate
    stage renders it as `<name>.png`."""

    name: str  # its id in dvc.yaml and its PNG's file name
    title: str
    source: str  # HISTORY, or the evaluate file (a key of EVAL_PLOTS) it reads
    x: str
    y: tuple[str, ...]
    template: str = "linear"  # DVC's: linear, simple, scatter, confusion or bar_horizontal

    def path(self, history: Path, eval_dir: Path, explain_dir: Path | None = None) -> Path:
        """The CSV file it reads."""
        if self.source in EXPLAIN_PLOTS:
            return (explain_dir or eval_dir) / EXPLAIN_PLOTS[self.source]
        return history if self.source == HISTORY else eval_dir / EVAL_PLOTS[self.source]


# the explain stage's bar plot, drawn for every task and data kind
IMPORTANCE = Plot(
    "importance",
    "Mean |attribution| (test sample)",
    "importance",
    "importance",
    ("name",),
    "bar_horizontal",
)


def definitions(
    plots: Sequence[Plot], history: Path, eval_dir: Path, at: Path, explain_dir: Path | None = None
) -> str:
    """The text of a dvc.yaml at `at` that declares `plots` (paths relative to it, as DVC
    reads them; the explain stage's in `explain_dir`)."""
    entries = [
        {
            p.name: {
                "title": p.title,
                "template": p.template,
                "x": p.x,
                "y": {
                    os.path.relpath(p.path(history, eval_dir, explain_dir), at.parent): list(p.y)
                },
            }
        }
        for p in plots
    ]
    return DEFINITIONS_HEADER + yaml.safe_dump({"plots": entries}, sort_keys=False)


def write_definitions(
    plots: Sequence[Plot], history: Path, eval_dir: Path, at: Path, explain_dir: Path | None = None
) -> None:
    """Write the plot definitions for `dvc plots` to `at` (a dvc.yaml), atomically; an
    unchanged file is left as it is (the compose stage runs on every `dvc repro`)."""
    write_text(at, definitions(plots, history, eval_dir, at, explain_dir))


def render_plots(plots: Sequence[Plot], history: Path, eval_dir: Path, out_dir: Path) -> list[Path]:
    """Each plot as `<name>.png` in `out_dir`, drawn from its file as DVC's template draws
    it; returns the files in the order of `plots`."""
    # a second to import: compose imports this module for the definitions alone
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after use("Agg"): pyplot picks its backend on import

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for plot in plots:
        fig, ax = plt.subplots(figsize=(5.5, 4.5))
        rows = read_csv(plot.path(history, eval_dir))
        DRAW[plot.template](ax, plot, rows)
        ax.set(title=plot.title)
        fig.tight_layout()
        path = out_dir / f"{plot.name}.png"
        # no Software entry: the bytes follow from the data alone
        fig.savefig(path, dpi=110, metadata={"Software": None})
        plt.close(fig)
        written.append(path)
    return written


def largest_loss_grid(x: Any, worst: Sequence[tuple[int, str, str]], out_dir: Path) -> Path:
    """Draw `LARGEST_LOSS`.png in `out_dir`: the test images `x[i]` of `worst` ((row, true
    label, predicted label), largest loss first; the task's `largest_losses`) in a grid, the
    labels under each. `x` is (N, C, H, W), 1 or 3 channels: uint8 pixels shown as they are,
    other values (digits' floats) scaled from the shown images' range."""
    # a second to import: compose imports this module for the definitions alone
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after use("Agg"): pyplot picks its backend on import

    images = np.asarray(x[[row for row, _, _ in worst]], dtype=np.float64)
    if np.asarray(x[:0]).dtype == np.uint8:
        images /= 255.0
    elif images.size:
        low, high = images.min(), images.max()
        images = (images - low) / ((high - low) or 1.0)
    columns = min(4, max(len(worst), 1))
    rows = max(-(-len(worst) // columns), 1)
    fig, axes = plt.subplots(
        rows, columns, figsize=(2.2 * columns, 2.5 * rows + 0.4), squeeze=False
    )
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, image, (_, actual, predicted) in zip(axes.flat, images, worst, strict=False):
        # (C, H, W) to what imshow draws: (H, W) grey levels or (H, W, 3) colours
        pixels = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
        ax.imshow(pixels, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_axis_on()
        ax.set(xticks=[], yticks=[])
        ax.set_xlabel(f"true {actual}\npredicted {predicted}", fontsize=8)
    fig.suptitle("Test images with the largest loss")
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{LARGEST_LOSS}.png"
    # no Software entry: the bytes follow from the data alone
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path


def heatmap_grid(
    x: Any, heatmaps: Any, picked: Sequence[tuple[int, str, str]], title: str, path: Path
) -> Path:
    """Draw `path` (a PNG): for each of `picked` ((row, true label, predicted label)) the image
    `x[row]` beside its heatmap `heatmaps[row]` (H, W; red for what raised the explained
    output, blue for what lowered it, on one scale for the grid); with nothing picked, the
    title alone says so. Images drawn as `largest_loss_grid` draws them."""
    # a second to import: compose imports this module for the definitions alone
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after use("Agg"): pyplot picks its backend on import

    rows = [row for row, _, _ in picked]
    images = np.asarray(x[rows], dtype=np.float64)
    if np.asarray(x[:0]).dtype == np.uint8:
        images /= 255.0
    elif images.size:
        low, high = images.min(), images.max()
        images = (images - low) / ((high - low) or 1.0)
    maps = np.asarray(heatmaps[rows], dtype=np.float64)
    scale = float(np.abs(maps).max()) if maps.size else 1.0
    pairs = min(2, max(len(picked), 1))  # image-heatmap pairs side by side
    lines = max(-(-len(picked) // pairs), 1)
    fig, axes = plt.subplots(
        lines, 2 * pairs, figsize=(2.0 * 2 * pairs, 2.3 * lines + 0.5), squeeze=False
    )
    for ax in axes.flat:
        ax.set_axis_off()
    for i, (image, heat, (_, actual, predicted)) in enumerate(
        zip(images, maps, picked, strict=True)
    ):
        shown, heated = axes.flat[2 * i], axes.flat[2 * i + 1]
        pixels = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
        shown.imshow(pixels, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        heated.imshow(heat, cmap="bwr", vmin=-(scale or 1.0), vmax=scale or 1.0,
                      interpolation="nearest")  # fmt: skip
        for ax in (shown, heated):
            ax.set_axis_on()
            ax.set(xticks=[], yticks=[])
        shown.set_xlabel(f"true {actual}\npredicted {predicted}", fontsize=8)
        heated.set_xlabel("attribution", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    # no Software entry: the bytes follow from the data alone
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path


def _values(rows: list[dict[str, str]], column: str) -> list[float]:
    return [float(r[column]) for r in rows]


def _lines(ax: Any, plot: Plot, rows: list[dict[str, str]]) -> None:
    for column in plot.y:
        ax.plot(_values(rows, plot.x), _values(rows, column), label=column)
    ax.set(xlabel=plot.x, ylabel=plot.y[0] if len(plot.y) == 1 else None)
    if len(plot.y) > 1:
        ax.legend()


def _scatter(ax: Any, plot: Plot, rows: list[dict[str, str]]) -> None:
    ax.scatter(_values(rows, plot.x), _values(rows, plot.y[0]), s=8, alpha=0.6)
    ax.set(xlabel=plot.x, ylabel=plot.y[0])


def _confusion(ax: Any, plot: Plot, rows: list[dict[str, str]]) -> None:
    """Counts of (y, x) pairs: y the actual class, x the predicted one."""
    actual, predicted = plot.y[0], plot.x
    classes = sorted({r[actual] for r in rows} | {r[predicted] for r in rows})
    index = {c: i for i, c in enumerate(classes)}
    matrix = np.zeros((len(classes), len(classes)), dtype=int)
    for r in rows:
        matrix[index[r[actual]], index[r[predicted]]] += 1
    ax.imshow(matrix, cmap="Blues")
    for (i, j), n in np.ndenumerate(matrix):
        if n:
            color = "white" if n > matrix.max() / 2 else "black"
            ax.text(j, i, n, ha="center", va="center", fontsize=8, color=color)
    ticks = range(len(classes))
    ax.set(xticks=ticks, yticks=ticks, xticklabels=classes, yticklabels=classes)
    ax.set(xlabel=predicted, ylabel=actual)


def _bars(ax: Any, plot: Plot, rows: list[dict[str, str]]) -> None:
    ax.barh([r[plot.y[0]] for r in rows], _values(rows, plot.x))
    ax.invert_yaxis()  # the file's first row on top, as DVC draws it
    ax.set(xlabel=plot.x, ylabel=plot.y[0])


# how each DVC template a Plot may name is drawn as a PNG
DRAW = {
    "linear": _lines,
    "simple": _lines,
    "scatter": _scatter,
    "confusion": _confusion,
    "bar_horizontal": _bars,
}
