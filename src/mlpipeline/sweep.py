"""Hydra multirun over training: grids (basic or parallel joblib launcher) and Optuna searches.

    python -m mlpipeline.sweep -m optimizer.lr=1e-3,1e-2 model=cnn,mlp
    python -m mlpipeline.sweep -m optimizer.lr=1e-3,1e-2 model=cnn,mlp hydra/launcher=joblib
    python -m mlpipeline.sweep hparams_search=optuna

Every trial config is validated before any trial starts. Each trial prepares the data and trains
in its own output directory (<sweep dir>/<job number>/), logs one MLflow run nested under the
sweep's parent run, and returns its best validation value of `sweep.metric` (what Optuna
optimises). At the end the best trial's overrides, score and config are printed and written to
<sweep dir>/best.yaml.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from mlpipeline.artifacts import atomic_path, json_text
from mlpipeline.config import Config, check_targets, validate_config
from mlpipeline.errors import PipelineError, exit_on_error

# the sweep's MLflow run id, in the sweep directory, where every launcher's trials find it (the
# joblib launcher's workers fork from a server started before the run exists: no environment)
PARENT_RUN_FILE = ".mlflow_parent_run"
# Lightning's DDP launcher re-runs this command (multirun flags included) for ranks 1..N-1;
# rank 0 passes them its resolved trial config here so they join its training and do nothing else
TRIAL_ENV = "MLPIPELINE_DDP_TRIAL"
RESULT_FILE = "result.json"


def best_value(history: list[dict[str, float]], metric: str, direction: str) -> float:
    """The best epoch's value of `metric` in a training history."""
    values = [row[metric] for row in history if metric in row]
    if not values:
        raise PipelineError(
            f"sweep.metric {metric} was never logged; use val_loss, val_acc or val_f1"
        )
    return max(values) if direction == "maximize" else min(values)


def run_trial(cfg: Config, out_dir: Path, overrides: list[str], parent_run: str | None) -> float:
    """ingest -> prepare -> train inside `out_dir`; log the trial to MLflow; return its score."""
    from mlpipeline import tracking
    from mlpipeline.ingest import ingest
    from mlpipeline.prepare import prepare
    from mlpipeline.train import train

    paths = cfg.paths.model_copy(
        update={
            "ingested": out_dir / "data/ingested",
            "prepared": out_dir / "data/prepared",
            "model": out_dir / "models/model.pt",
            "reports": out_dir / "reports",
        }
    )
    cfg = cfg.model_copy(update={"paths": paths})
    ingest(cfg)
    prepare(cfg)
    env_before = dict(os.environ)
    os.environ[TRIAL_ENV] = json.dumps(cfg.model_dump(mode="json", by_alias=True))
    try:
        result = train(cfg)
    finally:
        # DDP leaves rank and port variables behind; the next trial's workers must not see them
        os.environ.clear()
        os.environ.update(env_before)
    score = best_value(result.history, cfg.sweep.metric, cfg.sweep.direction)
    if not result.global_zero:
        # ranks started by torchrun or SLURM (not by Lightning) run the whole trial: one logs it
        return score

    import mlflow  # after training: its import would delay the first step by ~2 s

    experiment_id = tracking.setup(cfg.tracking.uri, cfg.tracking.experiment)
    with mlflow.start_run(
        experiment_id=experiment_id, run_name=f"trial {out_dir.name}", parent_run_id=parent_run
    ) as run:
        mlflow.log_params(
            {
                k: str(v)[:6000]
                for k, v in tracking.flatten(cfg.model_dump(mode="json", by_alias=True)).items()
            }
        )
        tracking.log_history(result.history)
        mlflow.log_metric(f"best_{cfg.sweep.metric}", score)
        mlflow.set_tags({"mlpipeline.kind": "trial", "overrides": " ".join(overrides)})
    (out_dir / RESULT_FILE).write_text(
        json_text(
            {
                "score": score,
                "metric": cfg.sweep.metric,
                "overrides": overrides,
                "epochs": result.epochs,
                "mlflow_run_id": run.info.run_id,
            }
        ),
        encoding="utf-8",
    )
    return score


def _task(dict_cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    try:
        cfg = validate_config(OmegaConf.to_container(dict_cfg, resolve=True), source="trial config")
        return run_trial(
            share_cores(cfg, hydra_cfg.launcher.get("n_jobs")),
            Path(hydra_cfg.runtime.output_dir),
            list(hydra_cfg.overrides.task),
            _parent_run(Path(hydra_cfg.sweep.dir)),
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


def warm_joblib_workers() -> None:
    """Have the joblib launcher's workers forked from a server that has imported what a trial
    needs, and start that server now, so that its imports overlap the parent's validation of
    the grid. Loky, the backend Hydra's joblib launcher always uses, otherwise starts every
    worker as a fresh interpreter that imports torch, Lightning and MLflow again (~5 s each).
    The server forks before any computation, so its children start clean."""
    import multiprocessing
    import multiprocessing.forkserver

    from joblib.externals.loky.backend import context

    if context.get_start_method() == "forkserver":
        return
    # "__main__": the stdlib's convention for the script itself, when started by its path
    multiprocessing.set_forkserver_preload(["__main__", "mlpipeline._forkserver"])
    context.set_start_method("forkserver", force=True)
    multiprocessing.forkserver.ensure_running()


def _parent_run(sweep_dir: Path) -> str | None:
    path = sweep_dir / PARENT_RUN_FILE
    return path.read_text(encoding="utf-8").strip() if path.is_file() else None


class SweepSummary(Callback):
    """Opens the sweep's parent MLflow run before the first trial; at the end collects the
    trials' result files, prints them and writes and logs the best one."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from mlflow import MlflowClient

        from mlpipeline import tracking

        if "joblib" in str(config.hydra.launcher.get("_target_", "")):
            warm_joblib_workers()  # a no-op when main() saw the launcher on the command line

        experiment_id = tracking.setup(config.tracking.uri, config.tracking.experiment)
        run = MlflowClient(tracking.tracking_uri(config.tracking.uri)).create_run(
            experiment_id,
            run_name=f"sweep {Path(config.hydra.sweep.dir).name}",
            tags={"mlpipeline.kind": "sweep", "sweep_dir": str(config.hydra.sweep.dir)},
        )
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / PARENT_RUN_FILE).write_text(run.info.run_id, encoding="utf-8")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from mlflow import MlflowClient

        from mlpipeline import tracking

        sweep_dir = Path(config.hydra.sweep.dir)
        trials = [
            {**json.loads(p.read_text()), "dir": str(p.parent)}
            for p in sorted(sweep_dir.glob(f"*/{RESULT_FILE}"), key=lambda p: int(p.parent.name))
        ]
        parent = _parent_run(sweep_dir)
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


def prevalidate(conf_dir: Path, argv: list[str], in_server: bool = False) -> int:
    """Compose and validate every grid point named on the command line before any trial
    runs; return how many were checked. Search-space overrides (interval) are left to the
    sweeper, which validates each trial again. `in_server`: check the `_target_`s in a process
    forked from the joblib workers' warm server (see `_check_in_server`)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from mlpipeline.compose import compose_config

    tokens = [a for a in argv if "=" in a and not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(tokens)
    except Exception as err:  # Hydra's grammar errors
        raise PipelineError(" ".join(str(err).split())) from None
    fixed, axes = [], []
    for o in parsed:
        if o.is_hydra_override():
            continue
        if not o.is_sweep_override():
            fixed.append(o.input_line)
        elif o.is_discrete_sweep():
            prefix = o.get_key_element()
            axes.append([f"{prefix}={v}" for v in o.sweep_string_iterator()])
    configs = [compose_config(conf_dir, [*fixed, *combo])[1] for combo in itertools.product(*axes)]
    if in_server:
        _check_in_server(configs)
    else:
        for cfg in configs:
            check_targets(cfg)
    return len(configs)


def _check_in_server(configs: list[Config]) -> None:
    """`check_targets` for each config, in a child of the fork server, which imports torch and
    Lightning for the workers anyway: under the joblib launcher this process never trains, and
    importing them here too would hold up the first trial by ~5 s. Meanwhile this process
    imports what it does need next, MLflow for the sweep's parent run."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("forkserver")) as pool:
        list(pool.map(check_targets, configs))  # re-raises the first config's PipelineError


def main() -> None:
    """Validate the grid, then hand over to Hydra (which parses sys.argv)."""
    import hydra

    if (trial := os.environ.get(TRIAL_ENV)) and int(os.environ.get("LOCAL_RANK", "0")) > 0:
        from mlpipeline.train import train

        train(validate_config(json.loads(trial), source="DDP trial config"))
        return
    conf_dir = Path(os.environ.get("MLPIPELINE_CONF", "conf")).resolve()
    parallel = any(a.replace(" ", "").startswith("hydra/launcher=joblib") for a in sys.argv[1:])
    if parallel:
        warm_joblib_workers()
    with exit_on_error():
        prevalidate(conf_dir, sys.argv[1:], in_server=parallel)
    hydra.main(config_path=str(conf_dir), config_name="config", version_base=None)(_task)()


if __name__ == "__main__":
    main()
