"""The pipeline as an Airflow DAG, run by Airflow 3 itself on SQLite: `airflow dags test`
(no scheduler) for whole runs, a real scheduler where a run has to be cleared and resumed.
Each task runs its stage with the orchestration runner in a checkout, as a worker would."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml
from conftest import Airflow
from helpers import copy_tracked_files, run, set_in_conf

pytestmark = pytest.mark.slow
STAGES = ["compose", "ingest", "prepare", "train", "evaluate", "export", "register"]


def ran(output: str) -> list[str]:
    """The stages DVC ran, in the order the task logs say."""
    return re.findall(r"Running stage '([^']+)'", output)


def use_checkout(airflow: Airflow, repo: Path, **settings: str) -> None:
    """Point the DAG at `repo`, with this test's pipeline environment."""
    airflow.env |= {"MLPIPELINE_REPO": str(repo), "MLPIPELINE_PYTHON": sys.executable, **settings}


def test_the_dag_reproduces_dvc_repro_and_dvc_hashes_decide_what_runs(
    airflow: Airflow, tmp_path: Path
) -> None:
    plain = copy_tracked_files(tmp_path / "plain")
    plain_ran = ran(run(["dvc", "repro"], plain).stdout)
    repo = copy_tracked_files(tmp_path / "dag")
    use_checkout(airflow, repo)

    first = airflow.dags_test()
    assert airflow.runs()[0]["state"] == "success", first.stdout[-3000:]
    assert ran(first.stdout) == plain_ran
    assert (repo / "dvc.lock").read_text() == (plain / "dvc.lock").read_text()

    second = airflow.dags_test()
    assert ran(second.stdout) == []
    assert "didn't change, skipping" in second.stdout

    set_in_conf(repo, "trainer/default.yaml", "max_epochs", 3)
    third = airflow.dags_test()
    # compose resolves conf/ (it always runs on an edit there); data stages stay as they were
    assert ran(third.stdout) == ["compose", "train", "evaluate", "export", "register"]
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["trainer"]["max_epochs"] == 3

    # a manual run's parameters are `dvc exp run -S` overrides
    fourth = airflow.dags_test(conf={"overrides": ["trainer.max_epochs=2"]})
    assert ran(fourth.stdout) == ["compose", "train", "evaluate", "export", "register"]
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["trainer"]["max_epochs"] == 2
