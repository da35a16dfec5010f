"""One sweep trial: prepare the data and train in the trial's directory, log the trial to
MLflow under the sweep's run, and return its score."""

from __future__ import annotations

import json
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from mlpipeline.artifacts import json_text
from mlpipeline.config import Config, validate_config
from mlpipeline.errors import PipelineError

# Lightning's DDP launcher re-runs this command (multirun flags included) for ranks 1..N-1;
# rank 0 passes them its resolved trial config here so they join its training and do nothing else
TRIAL_ENV = "MLPIPELINE_DDP_TRIAL"
RESULT_FILE = "result.json"


def run_trial(cfg: Config, out_dir: Path, overrides: list[str], parent_run: str | None) -> float:
    """Source -> prepared splits -> features -> training inside `out_dir`; log the trial;
    return its score: the best epoch's `sweep.metric`, or with `cv.folds` the mean over the
    folds of the training split."""
    from mlpipeline import tracking
    from mlpipeline.data.features import write_features
    from mlpipeline.data.sources import Table, load_source
    from mlpipeline.data.splits import (
        prepare_arrays,
        prepare_table,
        write_prepared,
        write_prepared_table,
    )
    from mlpipeline.models.training import best_value, cross_validate, fit, save

    cfg = cfg.model_copy(update={"paths": cfg.paths.rebased(out_dir)})
    data = load_source(cfg.data.source, cfg.paths.raw)
    if isinstance(data, Table):
        prepared = prepare_table(data, cfg.task, cfg.data.split, cfg.seed)
        write_prepared_table(prepared, cfg.paths.prepared)
    else:
        meta = data.meta(cfg.data.source.kind)
        prepared = prepare_arrays(data.x, data.y, meta, cfg.data.split, cfg.seed)
        write_prepared(prepared, cfg.paths.prepared)
    write_features(cfg)
    env_before = dict(os.environ)
    os.environ[TRIAL_ENV] = json.dumps(cfg.dump())
    try:
        if cfg.cv.folds:
            folds = cross_validate(cfg)
            score, history, epochs, global_zero = folds["mean"], [], 0, True
        else:
            result = fit(cfg)
            save(result, cfg.paths.model, cfg.paths.history)
            score = best_value(result.history, cfg.sweep.metric, cfg.sweep.direction)
            history, epochs, global_zero = result.history, result.epochs, result.global_zero
            folds = None
    finally:
        # DDP leaves rank and port variables behind; the next trial's workers must not see them
        os.environ.clear()
        os.environ.update(env_before)
    if not global_zero:
        # ranks started by torchrun or SLURM (not by Lightning) run the whole trial: one logs it
        return score

    import mlflow  # after training: its import would delay the first step

    experiment_id = tracking.setup(cfg.tracking.uri, cfg.tracking.experiment)
    with mlflow.start_run(
        experiment_id=experiment_id, run_name=f"trial {out_dir.name}", parent_run_id=parent_run
    ) as run:
        tracking.log_params(cfg.dump())
        if history:
            tracking.log_history(history)
        mlflow.log_metric(f"best_{cfg.sweep.metric}", score)
        if folds:
            mlflow.log_metrics(
                {
                    f"cv_{cfg.sweep.metric}_mean": folds["mean"],
                    f"cv_{cfg.sweep.metric}_std": folds["std"],
                }
            )
        mlflow.set_tags({"mlpipeline.kind": "trial", "overrides": " ".join(overrides)})
    summary = {
        "score": score,
        "metric": cfg.sweep.metric,
        "overrides": overrides,
        "epochs": epochs,
        "mlflow_run_id": run.info.run_id,
    }
    if folds:
        summary["cv"] = folds
    (out_dir / RESULT_FILE).write_text(json_text(summary), encoding="utf-8")
    return score


def task(dict_cfg: DictConfig) -> float:
    """Hydra's task function: one trial from its composed config."""
    from hydra.core.hydra_config import HydraConfig

    from mlpipeline.sweep.summary import parent_run

    hydra_cfg = HydraConfig.get()
    try:
        cfg = validate_config(OmegaConf.to_container(dict_cfg, resolve=True), source="trial config")
        return run_trial(
            share_cores(cfg, hydra_cfg.launcher.get("n_jobs")),
            Path(hydra_cfg.runtime.output_dir),
            list(hydra_cfg.overrides.task),
            parent_run(Path(hydra_cfg.sweep.dir)),
        )
    except PipelineError as err:
        raise SystemExit(f"error: {err}") from None


def share_cores(cfg: Config, n_jobs: int | None) -> Config:
    """Under a parallel launcher (joblib: n_jobs trials at once) with `cpu_threads: null`, give
    each trial its share of the cores: torch's default of one thread per core in every trial
    oversubscribes the CPU, and its spinning threads then slow all trials down. A fixed
    cpu_threads stays as configured (it is part of the model's bits)."""
    if cfg.cpu_threads is not None or not n_jobs or n_jobs == 1:
        return cfg
    cores = os.cpu_count() or 1
    jobs = max(1, cores + 1 + n_jobs) if n_jobs < 0 else n_jobs  # joblib: -1 = all cores
    return cfg.model_copy(update={"cpu_threads": max(1, cores // jobs)})
