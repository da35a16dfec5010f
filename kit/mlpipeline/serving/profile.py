"""The reference profile (models/profile.json): the training split and the model's predictions
on it, binned. And the definitions everything else shares: which bin a value falls in, and the
population stability index (PSI) of a distribution of counts against the reference shares.

The `profile` stage writes the profile, the service counts every request against it
(`serving.drift`), `make drift` counts a file against it (`mlpipeline.ops.drift`), and
Prometheus's rules compute the same PSI from the service's counters
(`monitoring/prometheus/rules.yml`). Only numpy and pydantic: the service imports this.

Bins, per kind:
- numeric column: quantile bins of the training split, numbered "0", "1", ...: bin i holds
  edges[i-1] <= x < edges[i]; then "missing" (NaN) for a table's column.
- categorical column: its most frequent training values by name, then "(other)" (every other
  value, seen in training or not) and "(missing)" (null or absent). Values never seen in
  training are also counted apart, as unseen, when the profile remembers them all (`known`).
- image input (a tensor, or image files decoded to uint8): per channel, each example's mean
  and standard deviation, binned as numeric columns (`channel_0_mean`, `channel_0_std`, ...).
- predictions: the predicted class by name (classification), or quantile bins of the predicted
  value (regression).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

FORMAT = 1
OTHER, MISSING = "(other)", "(missing)"  # the features stage's slot names, the same values
MISSING_BIN = "missing"  # a numeric column's missing values
STATISTICS = ("mean", "std")  # per channel of an image input


class ProfileError(Exception):
    """The profile is missing, unreadable or does not fit the model."""


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NumericColumn(_Part):
    """Quantile bins of a numeric column (or of an image statistic)."""

    name: str
    kind: Literal["numeric"] = "numeric"
    edges: list[float]  # ascending and distinct: len(edges) + 1 bins
    missing: bool  # a "missing" slot after the bins (table columns)
    shares: list[float]  # per bin, then the missing slot
    # an image statistic: which one, of which channel (None: a table's column)
    statistic: Literal["mean", "std"] | None = None
    channel: int | None = None

    def bins(self) -> list[str]:
        return [str(i) for i in range(len(self.edges) + 1)] + (
            [MISSING_BIN] if self.missing else []
        )


class CategoricalColumn(_Part):
    """The most frequent values of a categorical column, then "(other)" and "(missing)"."""

    name: str
    kind: Literal["categorical"] = "categorical"
    values: list[str]  # the values with a bin of their own, most frequent first
    shares: list[float]  # per value, then (other), then (missing)
    known: list[str] | None = None  # every training value, when there are few enough

    def bins(self) -> list[str]:
        return [*self.values, OTHER, MISSING]


class ClassPrediction(_Part):
    kind: Literal["class"] = "class"
    classes: list[str]
    shares: list[float]

    def bins(self) -> list[str]:
        return list(self.classes)


class ScorePrediction(_Part):
    """Quantile bins of a regression's predicted values."""

    kind: Literal["score"] = "score"
    edges: list[float]
    shares: list[float]

    def bins(self) -> list[str]:
        return [str(i) for i in range(len(self.edges) + 1)]


Column = Annotated[NumericColumn | CategoricalColumn, Field(discriminator="kind")]
Prediction = Annotated[ClassPrediction | ScorePrediction, Field(discriminator="kind")]


class Profile(_Part):
    """The whole profile: one entry per input column (or image statistic), and the
    predictions."""

    format: Literal[1] = FORMAT
    input: Literal["records", "tensor", "image"]
    rows: int = Field(ge=1)  # training rows profiled
    model_md5: str | None = None  # the model file whose predictions were profiled
    columns: list[Column] = Field(min_length=1)
    prediction: Prediction

    @model_validator(mode="after")
    def _consistent(self) -> Profile:
        """Every share list as long as its bins, and numeric edges ascending."""
        for part in [*self.columns, self.prediction]:
            name = getattr(part, "name", "prediction")
            if len(part.shares) != len(part.bins()):
                raise ValueError(f"{name}: {len(part.shares)} shares for {len(part.bins())} bins")
            edges = getattr(part, "edges", None)
            if edges is not None and bool((np.diff(edges) <= 0).any()):
                raise ValueError(f"{name}: bin edges are not strictly ascending")
        return self


def read_profile(path: Path) -> Profile:
    """The profile at `path`, validated; ProfileError in one line otherwise."""
    if not path.is_file():
        raise ProfileError(f"drift profile not found at {path}")
    try:
        return Profile.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except ValueError as err:  # JSON and pydantic errors alike
        if isinstance(err, ValidationError):
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            err = (
                f"{where}: {first['msg']}" if where else first["msg"].removeprefix("Value error, ")
            )
        raise ProfileError(f"{path} is not a drift profile ({err})") from None


# Binning: the one definition the profile, the service and the offline check use. A binner
# holds what it needs as arrays and dicts, built once: the service bins every request.


class NumericBinner:
    """Counts per quantile bin (and the missing slot) of float values, NaN being missing."""

    def __init__(self, part: NumericColumn | ScorePrediction) -> None:
        self.edges = np.asarray(part.edges, dtype=np.float64)
        self.missing = bool(getattr(part, "missing", False))
        self.size = len(self.edges) + 1 + self.missing

    def codes(self, values: np.ndarray) -> np.ndarray:
        """The bin index of each value: bin i holds edges[i-1] <= x < edges[i]; NaN goes to
        the missing slot, the last index (or, without one, past the last bin)."""
        codes = np.searchsorted(self.edges, values, side="right")
        if self.missing:
            codes[np.isnan(values)] = len(self.edges) + 1
        return codes

    def counts(self, values: np.ndarray) -> np.ndarray:
        return np.bincount(self.codes(values), minlength=self.size)


class CategoricalBinner:
    """Counts per kept value, "(other)" and "(missing)" of category texts ("" is missing),
    and how many were never seen in training."""

    def __init__(self, part: CategoricalColumn) -> None:
        other = len(part.values)
        self.size = other + 2
        self.tracks_unseen = part.known is not None
        # the other known values go to "(other)"; a value absent from the lookup is unseen,
        # and goes to "(other)" too
        self.lookup = dict.fromkeys(part.known or (), other)
        self.lookup.update({value: i for i, value in enumerate(part.values)})
        self.lookup[""] = other + 1

    def counts(self, texts: Sequence[str]) -> tuple[np.ndarray, int]:
        """Counts per bin, and the unseen count (0 when the profile does not know every
        training value)."""
        unseen_code = self.size  # one past the last bin, folded into "(other)" below
        get = self.lookup.get
        codes = np.fromiter((get(v, unseen_code) for v in texts), np.intp, len(texts))
        counts = np.bincount(codes, minlength=self.size + 1)
        unseen = int(counts[self.size])
        counts[self.size - 2] += unseen
        return counts[: self.size], unseen if self.tracks_unseen else 0


class ClassBinner:
    """Counts per predicted class (the argmax of the probabilities)."""

    def __init__(self, part: ClassPrediction) -> None:
        self.size = len(part.classes)

    def counts(self, outputs: np.ndarray) -> np.ndarray:
        return np.bincount(np.asarray(outputs).argmax(axis=1), minlength=self.size)


def prediction_binner(part: ClassPrediction | ScorePrediction) -> ClassBinner | NumericBinner:
    return ClassBinner(part) if isinstance(part, ClassPrediction) else NumericBinner(part)


def image_statistics(x: np.ndarray) -> dict[tuple[str, int], np.ndarray]:
    """Per channel (the first axis after the batch), each example's mean and standard
    deviation, as float64 in the input's units (uint8 pixels: 0..255), whatever its dtype:
    {(statistic, channel): values}."""
    batch = np.asarray(x)
    if batch.ndim == 2:  # a vector per example: one channel
        batch = batch[:, None, :]
    flat = batch.reshape(batch.shape[0], batch.shape[1], -1)
    # np.mean and np.std's own steps, bit for bit, without their per-call overhead (the
    # service computes this at every flush of its drift counts)
    size = flat.shape[2]
    mean = np.add.reduce(flat, axis=2, dtype=np.float64, keepdims=True) / size
    # in place: a flush's batch is large, and a fresh temporary per step costs more than the math
    centred = np.subtract(flat, mean, dtype=np.float64)
    np.multiply(centred, centred, out=centred)
    std = np.sqrt(np.add.reduce(centred, axis=2) / size)
    mean = mean[:, :, 0]
    return {
        (name, c): values[:, c]
        for name, values in (("mean", mean), ("std", std))
        for c in range(flat.shape[1])
    }


def psi(counts: Sequence[float], reference: Sequence[float], epsilon: float) -> float:
    """Population stability index of `counts` (per bin) against the reference shares:
    sum over bins of (a - r) * ln(a / r), a the observed share and r the reference share,
    each at least `epsilon` so that an empty bin scores high rather than infinite. NaN for
    no counts. The recording rules compute exactly this (mlpipeline.ops.rules)."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        return float("nan")
    actual = np.maximum(counts / total, epsilon)
    expected = np.maximum(np.asarray(reference, dtype=np.float64), epsilon)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


# Building a profile from training data (the profile stage; tests build small ones too).


def _shares(counts: np.ndarray) -> list[float]:
    return (counts / max(int(counts.sum()), 1)).tolist()


def numeric_column(
    name: str,
    values: np.ndarray,
    bins: int,
    missing: bool = True,
    statistic: str | None = None,
    channel: int | None = None,
) -> NumericColumn:
    """Quantile bins of `values` (NaN: missing): at most `bins` bins, fewer where quantiles
    coincide (a column of few distinct values)."""
    values = np.asarray(values, dtype=np.float64)
    present = values[~np.isnan(values)]
    probabilities = np.linspace(0, 1, bins + 1)[1:-1]
    edges = np.unique(np.quantile(present, probabilities)) if len(present) else np.array([])
    column = NumericColumn(
        name=name,
        edges=edges.tolist(),
        missing=missing,
        shares=[0.0] * (len(edges) + 1 + missing),
        statistic=statistic,
        channel=channel,
    )
    return column.model_copy(update={"shares": _shares(NumericBinner(column).counts(values))})


def categorical_column(
    name: str, texts: Sequence[str], top_values: int, known_values: int
) -> CategoricalColumn:
    """The `top_values` most frequent values (ties by value), "(other)", "(missing)"; `known`
    lists every value when there are at most `known_values`."""
    texts = np.asarray(texts, dtype=object)
    distinct, counts = np.unique(texts[texts != ""], return_counts=True)
    order = sorted(
        zip(counts.tolist(), distinct.tolist(), strict=True), key=lambda p: (-p[0], p[1])
    )
    kept = [str(v) for _, v in order[:top_values]]
    column = CategoricalColumn(
        name=name,
        values=kept,
        shares=[0.0] * (len(kept) + 2),
        known=sorted(str(v) for v in distinct) if len(distinct) <= known_values else None,
    )
    counts, _ = CategoricalBinner(column).counts(texts.tolist())
    return column.model_copy(update={"shares": _shares(counts)})


def image_columns(x: np.ndarray, bins: int) -> list[NumericColumn]:
    """The per-channel statistics of the training images, binned."""
    return [
        numeric_column(f"channel_{c}_{name}", values, bins, False, name, c)
        for (name, c), values in image_statistics(x).items()
    ]


def class_prediction(classes: list[str], outputs: np.ndarray) -> ClassPrediction:
    """Shares of the predicted classes."""
    part = ClassPrediction(classes=classes, shares=[0.0] * len(classes))
    return part.model_copy(update={"shares": _shares(ClassBinner(part).counts(outputs))})


def score_prediction(values: np.ndarray, bins: int) -> ScorePrediction:
    """Quantile bins of the predicted values."""
    edges = np.unique(
        np.quantile(np.asarray(values, np.float64), np.linspace(0, 1, bins + 1)[1:-1])
    )
    part = ScorePrediction(edges=edges.tolist(), shares=[0.0] * (len(edges) + 1))
    counts = NumericBinner(part).counts(np.asarray(values, np.float64))
    return part.model_copy(update={"shares": _shares(counts)})
