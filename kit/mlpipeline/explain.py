"""Attributions: how much each input column of a table, or each region of an image, moves the
model's explained output (the task's: a classification's predicted-class probability, a
regression's value) on a seeded sample of test rows, measured by perturbation with Captum.

Tables: feature ablation over source columns. Every network input carries the index of the
column it came from (features/meta.json's `feature_columns`: a numeric column's value and its
missing indicator, a categorical column's one-hot slots), so a column is replaced by the
baseline whole, at once: one forward pass per column, no gradients, and the figure is the
column's own, not a sum of per-slot figures. Images: occlusion with a square window (stride =
window = ceil(side / 8) pixels, all channels at once): an 8x8 heatmap for any image size.
Baselines: the training split's mean input (a table's mean feature vector: "each column at its
average"; an image's per-channel mean pixel: a flat image).

The data source says which explainer fits its kind (`Source.explainer`); the task says what is
explained (`Task.explained_output`, `Task.explained_target`). Torch and Captum are imported
inside the functions that compute: importing this module costs nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mlpipeline.errors import PipelineError
from mlpipeline.plots import HEATMAPS, heatmap_grid

# the 3x3 named regions of an image, row by row (attributions.json's keys for images)
REGIONS = (
    "top_left", "top", "top_right",
    "left", "center", "right",
    "bottom_left", "bottom", "bottom_right",
)  # fmt: skip
WINDOWS_PER_SIDE = 8  # occlusion windows along each side of an image: an 8x8 heatmap
MEAN_CHUNK_BYTES = 64 << 20  # training rows read at a time for the baseline


def rounded(value: float) -> float:
    """`value` to 6 significant digits: small attributions keep their precision, and the
    file's bytes do not follow the last bits of float arithmetic."""
    return float(f"{value:.6g}")


def training_mean(x: Any, axes: tuple[int, ...]) -> np.ndarray:
    """The mean of `x` (an array or memory map, rows first) over the rows and `axes`, kept as
    size-1 axes, in float64 sums over chunks of rows: the whole split is never in memory."""
    if len(x) == 0:
        raise PipelineError("the training split has no rows to take the baseline from")
    row_bytes = max(1, int(np.prod(x.shape[1:])) * x.itemsize)
    chunk = max(1, MEAN_CHUNK_BYTES // row_bytes)
    total = None
    for start in range(0, len(x), chunk):
        part = np.asarray(x[start : start + chunk], dtype=np.float64)
        summed = part.sum(axis=(0, *axes), keepdims=True)
        total = summed if total is None else total + summed
    count = len(x) * int(np.prod([x.shape[a] for a in axes]))
    return (total / count).astype(np.float32)


class Explainer:
    """How one data kind is perturbed and summarised: its baseline, its Captum method, the
    named values of attributions.json and the kind's own figures."""

    method: ClassVar[str]  # as explain.json names it
    baseline_text: ClassVar[str]  # what the baseline is, in words

    def baseline(self, train: Any) -> np.ndarray:
        """The baseline input (1, *input shape) from the training split's inputs `train`."""
        raise NotImplementedError

    def attribute(
        self, forward: Callable, x: Any, baseline: Any, target: Any, per_eval: int
    ) -> Any:
        """Captum's attributions (torch.Tensor shaped as `x`) of `forward` on the rows `x`."""
        raise NotImplementedError

    def summary(self, attributions: np.ndarray) -> dict[str, float]:
        """Mean |attribution| per column or region, by name, in the kind's own order."""
        raise NotImplementedError

    def describe(self) -> str:
        """The method and its granularity, for the stage's line."""
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """What explain.json records of the method beyond its name and baseline."""
        return {}

    def draw(
        self, x: Any, attributions: np.ndarray, picked: Sequence[tuple[str, list]], out: Path
    ) -> list[Path]:
        """The kind's own PNGs in `out`: `picked` holds (title, [(row, true, predicted)])
        per outcome (well predicted, then not). A table: none."""
        return []


@dataclass(frozen=True)
class ColumnAblation(Explainer):
    """A table: each source column (all its network inputs at once) set to the baseline."""

    columns: list[str]  # the source columns, features/meta.json's order
    feature_columns: list[str]  # the source column of each network input

    method = "feature ablation (captum.attr.FeatureAblation) per source column"
    baseline_text = "the training split's mean feature vector (each column at its average)"

    def mask(self) -> np.ndarray:
        """(1, inputs): each input's column index."""
        index = {c: i for i, c in enumerate(self.columns)}
        return np.array([[index[c] for c in self.feature_columns]], dtype=np.int64)

    def baseline(self, train: Any) -> np.ndarray:
        return training_mean(train, ())

    def attribute(
        self, forward: Callable, x: Any, baseline: Any, target: Any, per_eval: int
    ) -> Any:
        # torch and Captum (matplotlib with it) take seconds; importing this module is free
        import torch
        from captum.attr import FeatureAblation

        return FeatureAblation(forward).attribute(
            x,
            baselines=baseline,
            target=target,
            feature_mask=torch.as_tensor(self.mask()),
            perturbations_per_eval=per_eval,
        )

    def summary(self, attributions: np.ndarray) -> dict[str, float]:
        """Every input of a column holds the column's attribution: its first one is read."""
        first = [self.feature_columns.index(c) for c in self.columns]
        values = np.abs(attributions[:, first]).mean(axis=0)
        return {c: rounded(v) for c, v in zip(self.columns, values, strict=True)}

    def describe(self) -> str:
        return f"feature ablation of {len(self.columns)} columns"

    def settings(self) -> dict[str, Any]:
        return {"columns": len(self.columns), "inputs": len(self.feature_columns)}


@dataclass(frozen=True)
class RegionOcclusion(Explainer):
    """Images: square windows of every channel set to the baseline, one at a time."""

    shape: tuple[int, int, int]  # (C, H, W)

    method = "occlusion (captum.attr.Occlusion), stride = window"
    baseline_text = "the training split's per-channel mean pixel (a flat image)"

    def window(self) -> tuple[int, int, int]:
        """(C, h, w): every channel, ceil(side / 8) pixels along each side."""
        channels, height, width = self.shape
        return (
            channels,
            math.ceil(height / WINDOWS_PER_SIDE),
            math.ceil(width / WINDOWS_PER_SIDE),
        )

    def baseline(self, train: Any) -> np.ndarray:
        mean = training_mean(train, (2, 3))  # (1, C, 1, 1)
        return np.ascontiguousarray(np.broadcast_to(mean, (1, *self.shape)))

    def attribute(
        self, forward: Callable, x: Any, baseline: Any, target: Any, per_eval: int
    ) -> Any:
        # Captum takes a second to import (matplotlib with it); importing this module is free
        from captum.attr import Occlusion

        window = self.window()
        return Occlusion(forward).attribute(
            x,
            sliding_window_shapes=window,
            strides=window,
            baselines=baseline,
            target=target,
            perturbations_per_eval=per_eval,
        )

    def heatmaps(self, attributions: np.ndarray) -> np.ndarray:
        """(N, H, W): each pixel's attribution, the mean over its channels."""
        return attributions.mean(axis=1)

    def summary(self, attributions: np.ndarray) -> dict[str, float]:
        """Per region, the mean over images of its pixels' summed |attribution| divided by
        the image's pixel count (the nine values sum to the mean |heatmap|)."""
        heat = np.abs(self.heatmaps(attributions))
        _, height, width = self.shape
        rows = np.array_split(np.arange(height), 3)
        cols = np.array_split(np.arange(width), 3)
        values = [
            heat[:, r[0] : r[-1] + 1, c[0] : c[-1] + 1].sum(axis=(1, 2)).mean() / (height * width)
            for r in rows
            for c in cols
        ]
        return {n: rounded(v) for n, v in zip(REGIONS, values, strict=True)}

    def describe(self) -> str:
        _, h, w = self.window()
        _, height, width = self.shape
        return f"occlusion of {math.ceil(height / h)}x{math.ceil(width / w)} windows of {h}x{w} px"

    def settings(self) -> dict[str, Any]:
        return {"window": list(self.window()), "regions": list(REGIONS)}

    def draw(
        self, x: Any, attributions: np.ndarray, picked: Sequence[tuple[str, list]], out: Path
    ) -> list[Path]:
        """heatmaps_correct.png and heatmaps_wrong.png: images beside their heatmaps."""
        heat = self.heatmaps(attributions)
        return [
            heatmap_grid(x, heat, rows, title, out / f"{name}.png")
            for name, (title, rows) in zip(HEATMAPS, picked, strict=True)
        ]


@dataclass(frozen=True)
class Explanation:
    """The attributions of the sampled rows and what they were computed from."""

    attributions: np.ndarray  # shaped as the inputs
    outputs: Any  # the task's `predict` outputs on the unperturbed rows (torch.Tensor)
    values: dict[str, float]  # mean |attribution| per column or region


def explain_rows(
    network: Any, task: Any, explainer: Explainer, train: Any, x: np.ndarray, batch_size: int
) -> Explanation:
    """Attribute `task`'s explained output of `network` on the rows `x`, against the baseline
    from `train`, `batch_size` inputs per forward pass at most (the rows are taken a batch at
    a time, each batch perturbed `batch_size // rows` ways per pass)."""
    # torch takes seconds to import; the sources import this module, and most stages never run it
    import torch

    sample = torch.as_tensor(np.asarray(x, dtype=np.float32))
    outputs = task.predict(network, sample, batch_size)
    target = task.explained_target(outputs)
    forward = task.explained_output(network)
    baseline = torch.as_tensor(explainer.baseline(train))
    parts = []
    with torch.no_grad():
        for start in range(0, len(sample), batch_size):
            rows = sample[start : start + batch_size]
            part = None if target is None else target[start : start + batch_size]
            per_eval = max(1, batch_size // len(rows))
            parts.append(explainer.attribute(forward, rows, baseline, part, per_eval))
    attributions = torch.cat(parts).numpy().astype(np.float64)
    return Explanation(attributions, outputs, explainer.summary(attributions))


def picked_rows(
    task: Any, outputs: Any, y: np.ndarray, classes: list[str] | None, shown: int
) -> list[tuple[str, list[tuple[int, str, str]]]]:
    """The first `shown` well predicted rows and the first `shown` others, in sample order,
    labelled as the task labels them; each with its grid's title (saying so when it has
    none)."""
    well = task.well_predicted(outputs, y)
    picked = []
    for title, chosen in zip(task.outcomes, (well, ~well), strict=True):
        rows = [int(i) for i in np.flatnonzero(chosen)[:shown]]
        labelled = [(i, *task.labels(outputs, y, classes, i)) for i in rows]
        text = f"{title} (test sample): image and attribution"
        if not rows:
            text = f"{title}: none among the {len(y)} explained test rows"
        picked.append((text, labelled))
    return picked


def importance_rows(values: dict[str, float]) -> list[dict[str, Any]]:
    """importance.csv's rows: largest first, ties in the explainer's order."""
    order = sorted(values, key=lambda n: -values[n])  # sorted() is stable
    return [{"name": n, "importance": values[n]} for n in order]
