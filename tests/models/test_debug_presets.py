"""The debug presets compose, validate and change what training does."""

from __future__ import annotations

import math

import pytest

from mlpipeline.stages.features import features
from mlpipeline.stages.ingest import ingest
from mlpipeline.stages.prepare import prepare
from mlpipeline.stages.train import train

# the epochs each preset trains with `trainer.max_epochs=2` after it
EPOCHS = {"fast_dev_run": 1, "overfit": 2, "limit": 2, "profiler": 2}


@pytest.mark.parametrize("preset", list(EPOCHS))
def test_debug_preset_trains(make_cfg, preset: str) -> None:
    cfg = make_cfg(f"debug={preset}", "trainer.max_epochs=2")
    ingest(cfg)
    prepare(cfg)
    features(cfg)
    result = train(cfg)
    assert result.epochs == EPOCHS[preset]
    # fast_dev_run saves no checkpoint, so it has no best score
    assert math.isnan(result.best_score) == (preset == "fast_dev_run")
    trainer = cfg.trainer
    assert getattr(trainer, "overfit_batches", None) == (3 if preset == "overfit" else None)
    assert getattr(trainer, "limit_train_batches", None) == (5 if preset == "limit" else None)
    assert (getattr(trainer, "profiler", None) == "simple") == (preset == "profiler")
