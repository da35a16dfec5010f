"""The folds of cross-validation (mlpipeline.models.training.fold_indices)."""

from __future__ import annotations

import numpy as np
import pytest

from mlpipeline.errors import PipelineError
from mlpipeline.models.training import fold_indices


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
