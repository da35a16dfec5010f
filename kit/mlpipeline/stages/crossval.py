"""Stage `crossval`: K-fold cross-validation of the configured training on the training split
(`cv.folds`; 0 switches it off): the mean and standard deviation of the best `sweep.metric`
over the folds. The `evaluate` stage adds them to the test metrics when it ran,
so that `dvc metrics show` lists cross-validation only then."""

from __future__ import annotations

from typing import Any

from mlpipeline.artifacts import write_json
from mlpipeline.cli import run_stage
from mlpipeline.config import Config


def crossval(cfg: Config) -> dict[str, Any]:
    """Write `paths.cv`: {"folds": 0} when off, else the folds' scores, mean and std."""
    if cfg.cv.folds == 0:
        result: dict[str, Any] = {"folds": 0}
        print(f"crossval: off (cv.folds=0) -> {cfg.paths.cv}")
    else:
        # it imports Lightning, seconds that the stage's default (cv.folds=0) never needs
        from mlpipeline.models.training import cross_validate

        result = cross_validate(cfg)
        print(
            f"crossval: {cfg.sweep.metric} {result['mean']:.4f} ± {result['std']:.4f} over "
            f"{result['folds']} folds -> {cfg.paths.cv}"
        )
    write_json(cfg.paths.cv, result)
    return result


if __name__ == "__main__":
    run_stage(crossval)
