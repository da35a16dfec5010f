"""The sweep's Hydra callback: its parent MLflow run, and at the end the trials' summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from mlflow import MlflowClient
from omegaconf import DictConfig, OmegaConf

from mlpipeline import tracking
from mlpipeline.artifacts import atomic_path
from mlpipeline.config import validate_config
from mlpipeline.sweep.files import PARENT_RUN_FILE, RESULT_FILE, parent_run
from mlpipeline.sweep.workers import warm_joblib_workers


def trials_experiment(config: DictConfig) -> str:
    """The MLflow experiment the trials log to: their validated config's, where a null
    `project` (and so `tracking.experiment`) is the data's name."""
    plain = {
        key: OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        for key, value in config.items()
        if key != "hydra"
    }
    return validate_config(plain, source="sweep config").tracking.experiment


class SweepSummary(Callback):
    """Opens the sweep's parent MLflow run before the first trial; at the end collects the
    trials' result files, prints them and writes and logs the best one."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if "joblib" in str(config.hydra.launcher.get("_target_", "")):
            warm_joblib_workers()  # a no-op when main() saw the launcher on the command line

        experiment_id = tracking.setup(config.tracking.uri, trials_experiment(config))
        run = MlflowClient(tracking.tracking_uri(config.tracking.uri)).create_run(
            experiment_id,
            run_name=f"sweep {Path(config.hydra.sweep.dir).name}",
            tags={"mlpipeline.kind": "sweep", "sweep_dir": str(config.hydra.sweep.dir)},
        )
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / PARENT_RUN_FILE).write_text(run.info.run_id, encoding="utf-8")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        trials = [
            {**json.loads(p.read_text()), "dir": str(p.parent)}
            for p in sorted(sweep_dir.glob(f"*/{RESULT_FILE}"), key=lambda p: int(p.parent.name))
        ]
        parent = parent_run(sweep_dir)
        client = MlflowClient(tracking.tracking_uri(config.tracking.uri))
        if not trials:
            if parent:
                client.set_terminated(parent, status="FAILED")
            return
        maximize = config.sweep.direction == "maximize"
        best = (max if maximize else min)(trials, key=lambda t: t["score"])
        summary = {
            "metric": config.sweep.metric,
            "direction": config.sweep.direction,
            "best": best,
            "trials": trials,
        }
        with atomic_path(sweep_dir / "best.yaml") as tmp:
            tmp.write_text(OmegaConf.to_yaml(OmegaConf.create(summary)), encoding="utf-8")
        if parent:
            client.log_metric(parent, f"best_{config.sweep.metric}", best["score"])
            client.set_tag(parent, "best_overrides", " ".join(best["overrides"]))
            client.log_artifact(parent, str(sweep_dir / "best.yaml"))
            client.set_terminated(parent)
        metric = f"{config.sweep.metric} ({config.sweep.direction})"
        print(f"\nsweep: {len(trials)} trials in {sweep_dir}, {metric}")
        for t in trials:
            mark = "*" if t is best else " "
            print(f" {mark} {t['score']:.4f}  {' '.join(t['overrides']) or '(defaults)'}")
        overrides = " ".join(best["overrides"])
        print(f"best: {best['score']:.4f} with {overrides} -> {sweep_dir / 'best.yaml'}")
