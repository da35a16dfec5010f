"""Stage `train`: fit the configured network (`mlpipeline.models.training`); write the model
file and the epoch history."""

from __future__ import annotations

from typing import Any

from mlpipeline.cli import run_stage
from mlpipeline.config import Config
from mlpipeline.models.training import TrainResult, fit, save


def train(cfg: Config, callbacks: list[Any] | None = None) -> TrainResult:
    """Train from `paths.prepared`; write `paths.model` and `paths.history`."""
    result = fit(cfg, callbacks)
    save(result, cfg.paths.model, cfg.paths.history)
    if result.global_zero:
        capped = " (= trainer.max_epochs)" if result.epochs == cfg.trainer.max_epochs else ""
        print(
            f"trained {result.parameters:,} parameters for {result.epochs} epochs{capped} on "
            f"{result.device}; best {result.monitor} = {result.best_score:.4f} -> {cfg.paths.model}"
        )
    return result


if __name__ == "__main__":
    run_stage(train)
