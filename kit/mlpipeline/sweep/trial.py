"""One sweep trial: the pipeline's own stages (ingest, prepare, features, then train, or
crossval with `cv.folds`) on paths inside the trial's directory, the trial logged to MLflow
under the sweep's run, and its score returned."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from mlpipeline.artifacts import json_text
from mlpipeline.config import Config, validate_config
from mlpipeline.determinism import prepare_process
from mlpipeline.errors import PipelineError
from mlpipeline.stages.crossval import crossval
from mlpipeline.stages.features import features
from mlpipeline.stages.ingest import ingest
from mlpipeline.stages.prepare import prepare
from mlpipeline.sweep.files import RESULT_FILE, TRIAL_ENV, parent_run

# what Lightning's DDP launcher sets in its own process for the ranks it starts; left behind,
# the next trial's ranks would look for this trial's address and port
DDP_LAUNCH_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


@contextlib.contextmanager
def trial_environment(cfg: Config) -> Iterator[None]:
    """Hand `cfg` to the DDP ranks Lightning may start (`TRIAL_ENV`); afterwards give that
    variable and the launcher's (`DDP_LAUNCH_VARIABLES`) back their values from before, so a
    launcher that set them (torchrun, SLURM) keeps them and nothing else is touched."""
    before = {key: os.environ.get(key) for key in (TRIAL_ENV, *DDP_LAUNCH_VARIABLES)}
    os.environ[TRIAL_ENV] = json.dumps(cfg.dump())
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_trial(cfg: Config, out_dir: Path, overrides: list[str], parent_run: str | None) -> float:
    """The stages ingest -> prepare -> features -> train (or crossval) inside `out_dir`; log
    the trial; return its score: the best epoch's `sweep.metric`, or with `cv.folds` the mean
    over the folds of the training split."""
    # the training stages import Lightning: under the joblib launcher the sweep's own process,
    # which imports this module for Hydra, never trains and should not wait for it
    from mlpipeline.models.training import best_value
    from mlpipeline.stages.train import train

    cfg = cfg.model_copy(update={"paths": cfg.paths.rebased(out_dir)})
    ingest(cfg)
    prepare(cfg)
    features(cfg)
    with trial_environment(cfg):
        if cfg.cv.folds:
            folds = crossval(cfg)
            score, history, epochs, global_zero = folds["mean"], [], 0, True
        else:
            result = train(cfg)
            score = best_value(result.history, cfg.sweep.metric, cfg.sweep.direction)
            history, epochs, global_zero = result.history, result.epochs, result.global_zero
            folds = None
    if not global_zero:
        # ranks started by torchrun or SLURM (not by Lightning) run the whole trial: one logs it
        return score

    # after training: MLflow's seconds of import would delay the first step
    import mlflow

    from mlpipeline import tracking  # it imports MLflow: as mlflow above

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
    # a launcher's job may be a fresh process that never ran the sweep's main (submitit's)
    prepare_process()
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
