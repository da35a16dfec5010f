"""Experiments through DVC: conf/ edits under plain `dvc repro` (conf/ stays the one source of
truth, run cache or not), `dvc exp run -S`, and the DVC queue, each in a temporary repository
reproduced with a tiny config."""

from __future__ import annotations

import json
import time
from pathlib import Path

import mlflow
import pytest
import yaml
from helpers import UP_TO_DATE, lock_outs, one_line_error, run, set_in_conf, stages_run

from mlpipeline.models.modelfile import load_model

pytestmark = pytest.mark.slow


def mlflow_runs(repo: Path):
    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow.db'}")
    return mlflow.search_runs(search_all_experiments=True)


def test_a_new_group_default_in_conf_retrains_and_keeps_the_prepared_data(tiny_repo: Path) -> None:
    # an edit of a value is test_conf_decides_after_an_edit_its_undoing_and_its_redoing's
    config = tiny_repo / "conf/config.yaml"
    config.write_text(config.read_text().replace("- model: cnn", "- model: mlp"))
    ran = stages_run(run(["dvc", "repro"], tiny_repo).stdout)
    assert "train" in ran and "prepare" not in ran
    assert load_model(tiny_repo / "models/model.pt")[1]["net"]["_target_"].endswith("MLP")
    assert stages_run(run(["dvc", "repro"], tiny_repo).stdout) == ["compose"]


def test_exp_run_overrides_values_and_groups(tiny_repo: Path) -> None:
    # a value and a group in one experiment: the group's defaults, the value on top
    cmd = ["dvc", "exp", "run", "-S", "model=mlp", "-S", "optimizer.lr=0.02", "-n", "fast-lr"]
    run(cmd, tiny_repo)
    shown = json.loads(run(["dvc", "exp", "show", "--json"], tiny_repo).stdout)
    assert '"lr": 0.02' in json.dumps(shown)
    diff = run(["dvc", "params", "diff"], tiny_repo).stdout
    assert "0.02" in diff and "model._target_" in diff
    params = yaml.safe_load((tiny_repo / "params.yaml").read_text())
    assert params["optimizer"]["lr"] == 0.02 and params["model"]["_target_"].endswith("MLP")
    runs = mlflow_runs(tiny_repo)
    exp_run = runs[runs["tags.dvc_exp_name"] == "fast-lr"]
    assert exp_run["params.optimizer.lr"].tolist() == ["0.02"]
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
    rates = ["0.001", "0.002"]
    run(["dvc", "exp", "run", "--queue", "-S", f"optimizer.lr={','.join(rates)}"], tiny_repo)
    run(["dvc", "queue", "start", "-j", "2"], tiny_repo)
    # a finished experiment is a git ref; git reads refs without the repository lock that
    # `dvc queue status` takes from the running experiments
    refs = ["git", "for-each-ref", "--format=%(refname)", "refs/exps"]
    start = time.monotonic()
    while (waited := time.monotonic() - start) < 600:
        done = [r for r in run(refs, tiny_repo).stdout.split() if r.count("/") == 4]
        # and now and then, in case one failed (it leaves no ref)
        if len(done) >= len(rates) or int(waited) % 20 == 19:
            status = run(["dvc", "queue", "status"], tiny_repo).stdout
            if "Failed" in status or status.count("Success") == len(rates):
                break
        time.sleep(1)
    run(["dvc", "queue", "stop"], tiny_repo, check=False)
    assert status.count("Success") == len(rates), status
    shown = run(["dvc", "exp", "show", "--csv"], tiny_repo).stdout
    assert all(v in shown for v in rates), shown
    runs = mlflow_runs(tiny_repo).dropna(subset=["tags.dvc_exp_name"])
    assert sorted(runs["params.optimizer.lr"]) == rates


def params(repo: Path) -> dict:
    return yaml.safe_load((repo / "params.yaml").read_text())


def test_conf_decides_after_an_edit_its_undoing_and_its_redoing(tiny_repo: Path) -> None:
    """The run cache may restore outputs, never stale ones: after each `dvc repro` the
    parameters, the lock and the model are those of conf/ as it is."""

    def reproduce(lr: float) -> tuple[str, list[str]]:
        set_in_conf(tiny_repo, "optimizer/adamw.yaml", "lr", lr)
        ran = stages_run(run(["dvc", "repro"], tiny_repo).stdout)
        # the data stages never rerun; training does, unless the run cache restores it
        assert ran[0] == "compose" and not {"ingest", "prepare", "features"} & set(ran)
        assert params(tiny_repo)["optimizer"]["lr"] == lr
        lock = yaml.safe_load((tiny_repo / "dvc.lock").read_text())
        assert lock["stages"]["train"]["params"]["params.yaml"]["optimizer"]["lr"] == lr
        assert run(["dvc", "status"], tiny_repo).stdout == UP_TO_DATE
        return lock_outs(tiny_repo)["models/model.pt"], ran

    original = lock_outs(tiny_repo)["models/model.pt"]
    edited, ran = reproduce(0.006)
    assert edited != original and "train" in ran
    assert "optimizer.lr" in run(["dvc", "params", "diff"], tiny_repo).stdout
    assert reproduce(0.003)[0] == original  # undone: back to the first model (from the run cache)
    assert reproduce(0.006)[0] == edited  # redone


def test_an_override_or_hand_edit_of_params_yaml_is_undone_by_dvc_repro(tiny_repo: Path) -> None:
    composed = (tiny_repo / "params.yaml").read_text()
    compose = run(["python", "-m", "mlpipeline.stages.compose", "optimizer.lr=0.01"], tiny_repo)
    assert "the next `dvc repro` composes it from conf/ again" in compose.stderr
    assert params(tiny_repo)["optimizer"]["lr"] == 0.01
    out = run(["dvc", "repro"], tiny_repo).stdout
    assert "compose: optimizer.lr: 0.01 -> 0.003" in out
    assert (tiny_repo / "params.yaml").read_text() == composed
    assert stages_run(out) == ["compose"]  # the model was never trained on the override

    (tiny_repo / "params.yaml").write_text(composed.replace("max_epochs: 2", "max_epochs: 3"))
    out = run(["dvc", "repro"], tiny_repo).stdout
    assert "compose: trainer.max_epochs: 3 -> 2" in out
    assert (tiny_repo / "params.yaml").read_text() == composed


def test_dvc_repro_after_an_experiment_goes_back_to_conf(tiny_repo: Path) -> None:
    """`dvc exp run -S` leaves params.yaml and dvc.lock agreeing with each other, not with
    conf/: plain `dvc repro` composes conf/ again, says so, and restores conf/'s model."""
    composed = (tiny_repo / "params.yaml").read_text()
    model = lock_outs(tiny_repo)["models/model.pt"]
    run(["dvc", "exp", "run", "-S", "optimizer.lr=0.02", "-n", "fast-lr"], tiny_repo)
    assert params(tiny_repo)["optimizer"]["lr"] == 0.02
    assert lock_outs(tiny_repo)["models/model.pt"] != model

    out = run(["dvc", "repro"], tiny_repo).stdout
    assert "params.yaml held values that conf/ does not" in out
    assert "compose: optimizer.lr: 0.02 -> 0.003" in out
    assert (tiny_repo / "params.yaml").read_text() == composed
    assert lock_outs(tiny_repo)["models/model.pt"] == model  # conf/'s, from the run cache
    assert "fast-lr" in run(["dvc", "exp", "show", "--csv"], tiny_repo).stdout  # still there


@pytest.mark.parametrize(
    ("cmd", "parts"),
    [
        (["dvc", "exp", "run", "-S", "model.dropout=1.5"], ["model.dropout", "1.5", "< 1"]),
        (
            ["dvc", "exp", "run", "-S", "model=mlp", "-S", "model.hidden=128"],
            ["model.hidden", "128", "Sequence[int >= 1]"],
        ),
        (
            ["python", "-m", "mlpipeline.stages.compose", "optimizer.learning_rate=0.01"],
            ["optimizer.learning_rate", "did you mean 'lr'?", "valid: amsgrad"],
        ),
    ],
    ids=["dropout", "hidden", "compose-typo"],
)
def test_a_bad_value_stops_before_any_work_in_one_line(tiny_repo: Path, cmd, parts) -> None:
    before = (tiny_repo / "params.yaml").read_text()
    proc = run(cmd, tiny_repo, check=False)
    one_line_error(proc, *parts)
    assert "Running stage 'train'" not in proc.stdout
    if cmd[0] == "python":
        assert (tiny_repo / "params.yaml").read_text() == before


@pytest.mark.parametrize(
    ("overrides", "parts"),
    [
        (["tracking.experiment=${{oc.env:HOME}}"],
         ["tracking.experiment=${oc.env:HOME}: calls the resolver oc.env",
          "set such a value in conf/"]),
        (["+callbacks.x._target_=builtins.open", "+callbacks.x.file={victim}",
          "+callbacks.x.mode=w"],
         ["callbacks.x._target_: 'builtins.open' is not in a package a _target_ may name"]),
        (["allowed_targets=[builtins]"],
         ["allowed_targets=[builtins]: allowed_targets cannot be overridden"]),
    ],
    ids=["environment", "target", "allow-list"],
)  # fmt: skip
def test_exp_run_refuses_a_forbidden_override_before_writing_params_yaml(
    repo_copy: Path, overrides: list[str], parts: list[str]
) -> None:
    # DVC composes -S in its own process: the Hydra plugin module it loads from .dvc/plugins
    # checks the overrides there, before composing, as the project's entry points do
    victim = repo_copy.parent / "victim.txt"
    victim.write_text("keep me")
    params = (repo_copy / "params.yaml").read_text()
    sets = [arg for o in overrides for arg in ("-S", o.format(victim=victim))]
    proc = run(["dvc", "exp", "run", *sets], repo_copy, check=False)
    one_line_error(proc, *parts, prefix="ERROR: ")
    assert stages_run(proc.stdout) == []
    assert (repo_copy / "params.yaml").read_text() == params
    assert victim.read_text() == "keep me"
    refs = run(["git", "for-each-ref", "refs/exps"], repo_copy).stdout
    assert refs == ""  # no experiment, queued or run


def test_a_misspelt_key_in_a_conf_file_stops_dvc_repro_in_one_line(tiny_repo: Path) -> None:
    adamw = tiny_repo / "conf/optimizer/adamw.yaml"
    adamw.write_text(adamw.read_text().replace("lr:", "lr_rate:"))
    proc = run(["dvc", "repro"], tiny_repo, check=False)
    one_line_error(proc, "optimizer.lr_rate: unknown key; did you mean 'lr'?")
    assert stages_run(proc.stdout) == ["compose"]
