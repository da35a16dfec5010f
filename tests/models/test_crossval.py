"""The folds of cross-validation (mlpipeline.models.training.fold_indices), and its figures
in the metrics."""

from __future__ import annotations

import numpy as np
import pytest

from mlpipeline.artifacts import read_json
from mlpipeline.errors import PipelineError
from mlpipeline.models.training import fold_indices
from mlpipeline.stages.crossval import crossval
from mlpipeline.stages.evaluate import evaluate
from mlpipeline.stages.features import features
from mlpipeline.stages.ingest import ingest
from mlpipeline.stages.prepare import prepare
from mlpipeline.stages.train import train as train_stage


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_folds_are_disjoint_and_cover_the_training_split(task: str) -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 103) if task == "classification" else rng.normal(size=103)
    folds = fold_indices(y, 5, task, seed=0)
    held_out = [set(v.tolist()) for _, v in folds]
    assert len(folds) == 5
    assert sum(len(v) for v in held_out) == 103 and set().union(*held_out) == set(range(103))
    for (train, val), part in zip(folds, held_out, strict=True):
        assert not part & set(train.tolist()) and len(train) + len(val) == 103
    if task == "classification":  # stratified: each fold holds every class in proportion
        for _, val in folds:
            assert set(np.bincount(y[val], minlength=3)) <= set(range(6, 10))
    assert [v.tolist() for _, v in fold_indices(y, 5, task, 0)] == [v.tolist() for _, v in folds], (
        "seeded"
    )


def test_too_many_folds_for_a_class_is_one_line() -> None:
    y = np.array([0] * 10 + [1] * 2)
    with pytest.raises(
        PipelineError,
        match=r"cannot make 5 folds of the training split: a class has only 2 rows.*lower cv.folds",
    ):
        fold_indices(y, 5, "classification", seed=0)


def test_the_metrics_hold_cross_validation_only_when_it_ran(make_cfg) -> None:
    """`dvc metrics show` lists the metrics file alone: cross-validation's figures are in it
    when the crossval stage ran, and absent (no row, no column of dashes) when it was off."""
    cfg = make_cfg()
    for stage in (ingest, prepare, features, train_stage):
        stage(cfg)
    assert crossval(cfg) == {"folds": 0}
    evaluate(cfg)
    assert not [key for key in read_json(cfg.paths.metrics) if key.startswith("cv")]

    with_cv = cfg.model_copy(update={"cv": cfg.cv.model_copy(update={"folds": 2})})
    result = crossval(with_cv)
    evaluate(with_cv)
    metrics = read_json(cfg.paths.metrics)
    assert metrics["cv_folds"] == 2 and metrics["accuracy"] > 0
    assert (metrics["cv_val_loss_mean"], metrics["cv_val_loss_std"]) == (
        result["mean"],
        result["std"],
    )
