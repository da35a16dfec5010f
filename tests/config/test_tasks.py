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

    named = [f for t in TASKS.values() for f in t().files]
    assert sorted(named) == sorted(EVAL_PLOTS), "each plot file is one task's"


def scores(name: str) -> tuple[object, np.ndarray, list[str] | None]:
    """Test outputs, targets and classes of a task, as the evaluate stage passes them."""
    import torch

    if name == "classification":
        probs = torch.tensor([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.1, 0.9]])
        return probs, np.array([0, 1, 1, 1]), ["a", "b"]
    return torch.tensor([1.0, 2.5, 2.0, 4.0]), np.array([1.0, 2.0, 3.0, 4.0], np.float32), None


@pytest.mark.parametrize("name", sorted(TASKS))
def test_each_plot_reads_columns_its_file_holds_and_the_task_fills_just_those_files(
    name: str,
) -> None:
    """A regression writes no classification file (and the reverse); no panel of a task reads
    a file it does not fill, or a column its file lacks."""
    from mlpipeline.config.schema import Evaluate
    from mlpipeline.models.training import HISTORY_COLUMNS
    from mlpipeline.plots import DRAW, EVAL_COLUMNS, HISTORY

    task = task_for(name)
    outputs, y, classes = scores(name)
    settings = Evaluate(batch_size=8, calibration_bins=2, curve_thresholds=5, positive_class=None)
    _, filled = task.evaluate(outputs, y, classes, settings, np.arange(len(y)))
    assert sorted(filled) == sorted(task.files)
    assert len({p.name for p in task.plots}) == len(task.plots), "one id per panel"
    for plot in task.plots:
        columns = HISTORY_COLUMNS if plot.source == HISTORY else EVAL_COLUMNS[plot.source]
        assert {plot.x, *plot.y} <= set(columns), plot.name
        assert plot.template in DRAW and plot.title, plot.name
        if plot.source != HISTORY:
            assert filled[plot.source] and {plot.x, *plot.y} <= set(filled[plot.source][0])
