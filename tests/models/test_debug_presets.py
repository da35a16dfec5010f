"""The debug presets compose, validate and train."""

from __future__ import annotations

import pytest

from mlpipeline.stages.features import features
from mlpipeline.stages.ingest import ingest
from mlpipeline.stages.prepare import prepare
from mlpipeline.stages.train import train


@pytest.mark.parametrize("preset", ["fast_dev_run", "overfit", "limit", "profiler"])
def test_debug_preset_trains(make_cfg, preset: str) -> None:
    cfg = make_cfg(f"debug={preset}", "trainer.max_epochs=2")
    ingest(cfg)
    prepare(cfg)
    features(cfg)
    result = train(cfg)
    assert cfg.paths.model.is_file()
    assert result.epochs >= 1
