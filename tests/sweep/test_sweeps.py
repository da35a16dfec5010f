"""Hydra multirun sweeps through `python -m mlpipeline.sweep`: grids under the basic and the
joblib launcher, an Optuna search, and the validation of every trial before any work."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import pytest
import yaml
from helpers import CONF, one_line_error, run

from mlpipeline.artifacts import md5_file

pytestmark = pytest.mark.slow


def mlflow_runs(repo: Path):
    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow.db'}")
    return mlflow.search_runs(search_all_experiments=True)


@pytest.mark.parametrize(
    "launcher",
    [[], ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]],
    ids=["basic", "joblib"],
)
def test_grid_sweep_nests_one_run_per_trial(tmp_path: Path, launcher: list[str]) -> None:
    shutil.copytree(CONF, tmp_path / "conf")
    cmd = ["python", "-m", "mlpipeline.sweep", "-m", "optimizer.lr=0.003,0.01", "model=cnn,mlp"]
    out = run([*cmd, "trainer.max_epochs=2", "hydra.sweep.dir=sweep", *launcher], tmp_path).stdout
    assert "best:" in out
    trials = sorted((tmp_path / "sweep").glob("*/result.json"))
    assert len(trials) == 4
    # each trial ran the pipeline's own stages in its own directory: nothing was overwritten
    for data in ("ingested", "prepared", "features"):
        assert all((p.parent / "data" / data / "meta.json").is_file() for p in trials), data
    assert len({md5_file(p.parent / "models/model.pt") for p in trials}) == 4
    best = yaml.safe_load((tmp_path / "sweep/best.yaml").read_text())
    # the default sweep.metric, val_loss, is minimised
    assert best["best"]["score"] == min(json.loads(p.read_text())["score"] for p in trials)
    runs = mlflow_runs(tmp_path)
    parent = runs[runs["tags.mlpipeline.kind"] == "sweep"]
    assert len(parent) == 1
    children = runs[runs["tags.mlflow.parentRunId"] == parent["run_id"].iloc[0]]
    assert len(children) == 4 and set(children["status"]) == {"FINISHED"}


def test_a_cross_validated_sweep_records_mean_and_std_per_trial(tmp_path: Path) -> None:
    shutil.copytree(CONF, tmp_path / "conf")
    cmd = ["python", "-m", "mlpipeline.sweep", "-m", "optimizer.lr=0.003,0.01", "cv.folds=5"]
    run([*cmd, "trainer.max_epochs=1", "sweep.metric=val_acc", "sweep.direction=maximize",
         "hydra.sweep.dir=sweep"], tmp_path)  # fmt: skip
    results = [
        json.loads(p.read_text()) for p in sorted((tmp_path / "sweep").glob("*/result.json"))
    ]
    assert len(results) == 2
    for result in results:
        cv = result["cv"]
        assert cv["folds"] == 5 and len(cv["scores"]) == 5
        assert result["score"] == cv["mean"] == pytest.approx(sum(cv["scores"]) / 5, abs=1e-6)
        assert cv["std"] > 0
    runs = mlflow_runs(tmp_path)
    trials = runs[runs["tags.mlpipeline.kind"] == "trial"]
    assert trials["metrics.cv_val_acc_mean"].notna().all()
    assert trials["metrics.cv_val_acc_std"].notna().all()


def test_optuna_search_optimises_the_configured_metric(tmp_path: Path) -> None:
    shutil.copytree(CONF, tmp_path / "conf")
    cmd = ["python", "-m", "mlpipeline.sweep", "hparams_search=optuna", "hydra.sweeper.n_trials=3"]
    run([*cmd, "trainer.max_epochs=2", "hydra.sweep.dir=sweep"], tmp_path)
    best = yaml.safe_load((tmp_path / "sweep/best.yaml").read_text())
    assert best["metric"] == "val_acc" and len(best["trials"]) == 3
    assert best["best"]["score"] == max(t["score"] for t in best["trials"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["optimizer.lr=-1"], "optimizer.lr: Input should be greater than 0 (got -1)"),
        (["-m", "optimizer.lr=0.1,0"], "optimizer.lr: Input should be greater than 0 (got 0)"),
        (["model=transformer"], "available options in 'model': cnn, mlp"),
        (["+trainer.max_epoch=3"], "did you mean 'max_epochs'?"),
        # checked in a child of the joblib workers' fork server, not in the sweep's process
        (["-m", "seed=1,2", "+trainer.max_epoch=3", "hydra/launcher=joblib"], "'max_epochs'?"),
        (["data.split.test=0.5"], "must sum to 1"),
        (
            ["-m", "optimizer.learning_rate=0.01,0.1"],
            "learning_rate: unknown key; did you mean 'lr'?",
        ),
        (["-m", "model.dropout=0.1,1.5"], "model.dropout: Input should be less than 1 (got 1.5)"),
        # Hydra would call its callbacks' targets before the first trial
        (["-m", "seed=1,2", "+hydra.callbacks.x._target_=builtins.exec"], "'builtins.exec' is"),
    ],
)
def test_sweep_validates_every_trial_before_any_work(tmp_path: Path, args, message) -> None:
    shutil.copytree(CONF, tmp_path / "conf")
    proc = run(["python", "-m", "mlpipeline.sweep", *args], tmp_path, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0
    one_line_error(proc, message)
    assert not (tmp_path / "multirun").exists() and not (tmp_path / "outputs").exists()
