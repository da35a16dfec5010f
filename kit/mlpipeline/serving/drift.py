"""Drift counters: every accepted request counted against the reference profile, per input
column and bin, and per predicted class or score bin, plus the reference shares themselves as
gauges, so that Prometheus's recording rules can score the counts (population stability
index) without knowing the model (monitoring/prometheus/rules.yml).

Label values are fixed by the profile (column names times bins, the classes): whatever the
requests hold, the number of series stays what it was at start. Each series is created at start
with the value 0, so a bin that traffic never reaches is still there for the rules to score.
A request only queues its inputs and outputs: each worker counts its queue at once, a few
numpy calls per column for all of it and one counter increment per bin that received rows, when
/metrics is read, every `drift_flush_seconds` and when the queue holds `FLUSH_ROWS` rows, so
that the numpy calls' fixed cost is paid once per flush rather than once per request.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge

from mlpipeline.serving.model import Model, ModelError
from mlpipeline.serving.profile import (
    CategoricalBinner,
    CategoricalColumn,
    ClassPrediction,
    NumericBinner,
    NumericColumn,
    Profile,
    ProfileError,
    image_statistics,
    prediction_binner,
    read_profile,
)
from mlpipeline.serving.settings import Settings

# a queue this long is counted at once, whatever the time: it bounds the memory the queue and
# the flush's temporaries hold
FLUSH_ROWS = 1024


def load_profile(settings: Settings, model: Model) -> Profile:
    """The drift profile for `model`; ModelError in one line when it is missing, unreadable
    or made for another model."""
    path = settings.profile_file
    try:
        profile = read_profile(path)
    except ProfileError as err:
        raise ModelError(
            f"{err}: run `dvc repro` (its profile stage writes it), set PROFILE_PATH, or "
            "DRIFT_METRICS=false to serve without drift metrics"
        ) from None
    if problem := mismatch(profile, model):
        raise ModelError(
            f"{path} does not fit {settings.model_path}: {problem}; run `dvc repro` to profile "
            "this model"
        )
    return profile


def mismatch(profile: Profile, model: Model) -> str | None:
    """What makes `profile` the wrong one for `model`, or None."""
    kind = model.card.input.kind
    if profile.input != kind:
        return f"the profile is of {profile.input} inputs, the model takes {kind}"
    if model.records:
        names, expected = {c.name for c in profile.columns}, {c.name for c in model.columns}
        if names != expected:
            return f"profiled columns {sorted(names)}, model columns {sorted(expected)}"
    else:
        shape = model.example_shape
        channels = shape[0] if len(shape) > 1 else 1
        if any((c.channel or 0) >= channels for c in profile.columns):
            return f"the profile has channels the model's input {list(shape)} does not"
    prediction = profile.prediction
    if model.regression != (not isinstance(prediction, ClassPrediction)):
        return f"the profile's predictions are {prediction.kind}s, the model's a {model.card.task}"
    if isinstance(prediction, ClassPrediction) and prediction.classes != model.classes:
        return f"profiled classes {prediction.classes}, model classes {model.classes}"
    model_md5 = (model.card_json.get("hashes") or {}).get("model")
    if profile.model_md5 and model_md5 and profile.model_md5 != model_md5:
        return f"profiled model md5 {profile.model_md5}, the card's {model_md5}"
    return None


class DriftCounters:
    """The drift metrics of one app, for one model and its profile."""

    def __init__(self, profile: Profile, registry: CollectorRegistry) -> None:
        self.profile = profile
        bins = Counter(
            "model_input_bin",
            "Input values by column and reference bin (numeric: quantile bin number or "
            "'missing'; categorical: the value, '(other)' or '(missing)'; images: per channel "
            "statistics)",
            ["column", "bin"],
            registry=registry,
        )
        unseen = Counter(
            "model_input_unseen",
            "Categorical values never seen in the training split, by column",
            ["column"],
            registry=registry,
        )
        predictions = Counter(
            "model_prediction",
            "Predictions by class (classification) or reference score bin (regression)",
            ["bin"],
            registry=registry,
        )
        # every worker sets the same values: the largest is the value
        input_share = Gauge(
            "model_input_reference_share",
            "Share of the training split in each input bin (the drift reference)",
            ["column", "bin"],
            registry=registry,
            multiprocess_mode="max",
        )
        prediction_share = Gauge(
            "model_prediction_reference_share",
            "Share of the model's predictions on the training split in each bin",
            ["bin"],
            registry=registry,
            multiprocess_mode="max",
        )
        # per column: its name, its binner, one counter child per bin (and the unseen one)
        self.numeric: list[tuple[str, NumericBinner, list[Any]]] = []
        self.categorical: list[tuple[str, CategoricalBinner, list[Any], Any]] = []
        for column in profile.columns:
            labels = column.bins()
            for label, share in zip(labels, column.shares, strict=True):
                input_share.labels(column.name, label).set(share)
            children = [bins.labels(column.name, label) for label in labels]
            if isinstance(column, CategoricalColumn):
                binner = CategoricalBinner(column)
                unseen_child = unseen.labels(column.name) if binner.tracks_unseen else None
                self.categorical.append((column.name, binner, children, unseen_child))
            else:
                self.numeric.append((column.name, NumericBinner(column), children))
        # an image model's columns are statistics of its input tensor
        self.statistics = {
            c.name: (c.statistic, c.channel or 0)
            for c in profile.columns
            if isinstance(c, NumericColumn) and c.statistic is not None
        }
        self.prediction_binner = prediction_binner(profile.prediction)
        self.prediction_children = [predictions.labels(b) for b in profile.prediction.bins()]
        for label, share in zip(profile.prediction.bins(), profile.prediction.shares, strict=True):
            prediction_share.labels(label).set(share)
        self.queue: list[tuple[dict[str, np.ndarray], np.ndarray]] = []
        self.queued_rows = 0

    def count(self, feeds: dict[str, np.ndarray], outputs: np.ndarray) -> None:
        """Queue one accepted batch, its inputs (the model's feeds: one vector per column of
        a table, or the image tensor) and the model's outputs on it, for the next flush()."""
        self.queue.append((feeds, outputs))
        self.queued_rows += len(outputs)
        if self.queued_rows >= FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        """Count every queued batch into the counters, as one batch."""
        if not self.queue:
            return
        queue, self.queue, self.queued_rows = self.queue, [], 0
        feeds, outputs = queue[0]
        if len(queue) > 1:
            feeds = {name: np.concatenate([f[name] for f, _ in queue]) for name in feeds}
            outputs = np.concatenate([out for _, out in queue])
        self._count(feeds, outputs)

    def _count(self, feeds: dict[str, np.ndarray], outputs: np.ndarray) -> None:
        """Count one batch into the counters."""
        if self.statistics:
            (tensor,) = feeds.values()
            stats = image_statistics(tensor)
            values = {name: stats[key] for name, key in self.statistics.items()}
        else:
            values = feeds
        for name, binner, children in self.numeric:
            _add(children, binner.counts(values[name]))
        for name, binner, children, unseen_child in self.categorical:
            counts, unseen = binner.counts(values[name])
            _add(children, counts)
            if unseen:  # never when the column's values are not all known
                unseen_child.inc(unseen)
        _add(self.prediction_children, self.prediction_binner.counts(outputs))


def _add(children: list[Any], counts: np.ndarray) -> None:
    """Increment each bin's counter by its count, skipping empty bins."""
    for i in np.flatnonzero(counts).tolist():  # a small batch fills few bins
        children[i].inc(int(counts[i]))
