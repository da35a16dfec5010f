"""The task objects (mlpipeline.config.tasks): what differs by task, chosen once by name."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from mlpipeline.config import Split, task_for
from mlpipeline.config.schema import SWEEP_METRICS
from mlpipeline.config.tasks import TASKS, Classification, Regression
from mlpipeline.errors import PipelineError

SPLIT = Split(train=0.6, val=0.2, test=0.2, min_class_samples=3, bins=4)


def test_each_name_selects_its_task_and_an_unknown_one_is_refused() -> None:
    assert isinstance(task_for("classification"), Classification)
    assert isinstance(task_for("regression"), Regression)
    with pytest.raises(PipelineError, match="not one of classification, regression"):
        task_for("ranking")


def test_the_schema_allows_every_tasks_sweep_metrics_and_no_other() -> None:
    assert set(SWEEP_METRICS) == {m for t in TASKS.values() for m in t.sweep_metrics}


def test_classes_are_encoded_in_natural_order_and_stratify_the_split() -> None:
    task = Classification()
    y, classes = task.encode_labels(pa.chunked_array([[10, 2, 2, 10, 1]]), "label")
    assert classes == ["1", "2", "10"] and y.tolist() == [2, 1, 1, 2, 0]
    assert task.strata(y, SPLIT) is y
    assert task.output_shape(classes) == [None, 3] and task.output_size(classes) == 3


def test_a_regression_target_is_stratified_on_quantile_bins() -> None:
    task = Regression()
    y, classes = task.encode_labels(pa.chunked_array([[0.5, 1.5, 2.5, 3.5]]), "label")
    assert classes is None and y.dtype == np.float32
    assert task.strata(y, SPLIT).tolist() == [0, 1, 2, 3]
    assert task.strata(y, Split(**{**SPLIT.model_dump(), "bins": 0})) is None
    assert task.output_shape(None) == [None] and task.output_size(None) == 1
    with pytest.raises(PipelineError, match="label 'price' is not numeric"):
        task.encode_labels(pa.chunked_array([["a", "b"]]), "price")


def test_the_export_check_counts_class_disagreements_only_for_classes() -> None:
    a = np.array([[0.6, 0.4], [0.4, 0.6]], np.float32)
    b = np.array([[0.4, 0.6], [0.4, 0.6]], np.float32)
    assert Classification().compare(a, b, 1.0, 0.0)[2] == 1
    assert Regression().compare(a[:, 0], b[:, 0], 1.0, 0.0) == (pytest.approx(0.2), 0, 0)


def test_the_tasks_plot_files_are_those_evaluate_writes() -> None:
    from mlpipeline.plots import EVAL_PLOTS

    named = [p for t in TASKS.values() for p in t.plots]
    assert sorted(named) == sorted(EVAL_PLOTS), "each plot file is one task's"
