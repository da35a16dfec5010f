"""Experiments: conf/ edits under plain `dvc repro`, `dvc exp run -S`, the DVC queue, and Hydra
multirun sweeps (basic, joblib, Optuna), each in a temporary repository with a tiny config."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import mlflow
import pytest
import yaml
from conftest import ROOT, run, set_in_conf, stages_run

from mlpipeline.artifacts import md5_file
from mlpipeline.nets import load_model

pytestmark = pytest.mark.slow


def mlflow_runs(repo: Path):
    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow.db'}")
    return mlflow.search_runs(search_all_experiments=True)


def test_conf_edits_rerun_exactly_the_affected_stages(tiny_repo: Path) -> None:
    set_in_conf(tiny_repo, "optimizer/adamw.yaml", "lr", 0.01)
    ran = stages_run(run(["dvc", "repro"], tiny_repo).stdout)
    assert ran[:2] == ["compose", "train"] and not {"ingest", "prepare"} & set(ran)
    assert "optimizer.lr" in run(["dvc", "params", "diff"], tiny_repo).stdout
    lock = yaml.safe_load((tiny_repo / "dvc.lock").read_text())
    assert lock["stages"]["train"]["params"]["params.yaml"]["optimizer"]["lr"] == 0.01

    # switching which option a group defaults to is an edit like any other
    config = tiny_repo / "conf/config.yaml"
    config.write_text(config.read_text().replace("- model: cnn", "- model: mlp"))
    ran = stages_run(run(["dvc", "repro"], tiny_repo).stdout)
    assert "train" in ran and "prepare" not in ran
    assert load_model(tiny_repo / "models/model.pt")[1]["net"]["_target_"].endswith("MLP")
    assert stages_run(run(["dvc", "repro"], tiny_repo).stdout) == []


def test_exp_run_overrides_values_and_groups(tiny_repo: Path) -> None:
    run(["dvc", "exp", "run", "-S", "optimizer.lr=0.02", "-n", "fast-lr"], tiny_repo)
    shown = json.loads(run(["dvc", "exp", "show", "--json"], tiny_repo).stdout)
    assert '"lr": 0.02' in json.dumps(shown)
    assert "0.02" in run(["dvc", "params", "diff"], tiny_repo).stdout
    assert yaml.safe_load((tiny_repo / "params.yaml").read_text())["optimizer"]["lr"] == 0.02
    runs = mlflow_runs(tiny_repo)
    exp_run = runs[runs["tags.dvc_exp_name"] == "fast-lr"]
    assert exp_run["params.optimizer.lr"].tolist() == ["0.02"]

    run(["dvc", "exp", "run", "-S", "model=mlp"], tiny_repo)
    assert load_model(tiny_repo / "models/model.pt")[1]["net"]["_target_"].endswith("MLP")


def test_exp_run_keeps_overrides_beside_uncommitted_conf_edits(tiny_repo: Path) -> None:
    # DVC composes conf/ (this edit included) with -S; the compose stage must not undo -S
    set_in_conf(tiny_repo, "optimizer/adamw.yaml", "lr", 0.005)
    out = run(["dvc", "exp", "run", "-S", "optimizer.weight_decay=0.02"], tiny_repo).stdout
    assert "keeping params.yaml as `dvc exp run` composed it" in out
    lock = yaml.safe_load((tiny_repo / "dvc.lock").read_text())
    optimizer = lock["stages"]["train"]["params"]["params.yaml"]["optimizer"]
    assert (optimizer["lr"], optimizer["weight_decay"]) == (0.005, 0.02)


def test_queued_experiments_run_in_parallel_and_log_to_the_main_store(tiny_repo: Path) -> None:
    run(["dvc", "exp", "run", "--queue", "-S", "optimizer.lr=0.001,0.002,0.01"], tiny_repo)
    run(["dvc", "queue", "start", "-j", "2"], tiny_repo)
    # a finished experiment is a git ref; git reads refs without the repository lock that
    # `dvc queue status` takes from the running experiments
    refs = ["git", "for-each-ref", "--format=%(refname)", "refs/exps"]
    start = time.monotonic()
    while (waited := time.monotonic() - start) < 600:
        done = [r for r in run(refs, tiny_repo).stdout.split() if r.count("/") == 4]
        # and now and then, in case one failed (it leaves no ref)
        if len(done) >= 3 or int(waited) % 20 == 19:
            status = run(["dvc", "queue", "status"], tiny_repo).stdout
            if "Failed" in status or status.count("Success") == 3:
                break
        time.sleep(1)
    run(["dvc", "queue", "stop"], tiny_repo, check=False)
    assert status.count("Success") == 3, status
    shown = run(["dvc", "exp", "show", "--csv"], tiny_repo).stdout
    assert all(v in shown for v in ("0.001", "0.002", "0.01")), shown
    runs = mlflow_runs(tiny_repo)
    assert runs["tags.dvc_exp_name"].notna().sum() == 3
    assert sorted(runs.dropna(subset=["tags.dvc_exp_name"])["params.optimizer.lr"]) == [
        "0.001",
        "0.002",
        "0.01",
    ]


@pytest.mark.parametrize(
    "launcher",
    [[], ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]],
    ids=["basic", "joblib"],
)
def test_grid_sweep_nests_one_run_per_trial(tmp_path: Path, launcher: list[str]) -> None:
    shutil.copytree(ROOT / "conf", tmp_path / "conf")
    cmd = ["python", "-m", "mlpipeline.sweep", "-m", "optimizer.lr=0.003,0.01", "model=cnn,mlp"]
    out = run([*cmd, "trainer.max_epochs=2", "hydra.sweep.dir=sweep", *launcher], tmp_path).stdout
    assert "best:" in out
    trials = sorted((tmp_path / "sweep").glob("*/result.json"))
    assert len(trials) == 4
    # each trial wrote its own model in its own directory: nothing was overwritten
    assert len({md5_file(p.parent / "models/model.pt") for p in trials}) == 4
    best = yaml.safe_load((tmp_path / "sweep/best.yaml").read_text())
    assert best["best"]["score"] == max(json.loads(p.read_text())["score"] for p in trials)
    runs = mlflow_runs(tmp_path)
    parent = runs[runs["tags.mlpipeline.kind"] == "sweep"]
    assert len(parent) == 1
    children = runs[runs["tags.mlflow.parentRunId"] == parent["run_id"].iloc[0]]
    assert len(children) == 4 and set(children["status"]) == {"FINISHED"}


def test_optuna_search_optimises_the_configured_metric(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "conf", tmp_path / "conf")
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
    ],
)
def test_sweep_validates_every_trial_before_any_work(tmp_path: Path, args, message) -> None:
    shutil.copytree(ROOT / "conf", tmp_path / "conf")
    proc = run(["python", "-m", "mlpipeline.sweep", *args], tmp_path, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "multirun").exists() and not (tmp_path / "outputs").exists()
