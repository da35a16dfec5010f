"""Shared fixtures: a tiny composed config in a temporary directory, and temporary copies of
the repository in which the real `dvc` runs: as it is (repo_copy), or already reproduced with
two-epoch training (tiny_repo). Plain helpers are in helpers.py."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import ROOT, commit_all, copy_tracked_files, run, set_in_conf, tiny

from mlpipeline.config import Config, compose_config


@pytest.fixture(autouse=True)
def _fresh_mlflow_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI, which the pipeline honours;
    without this, one test's store leaks into the next test in the same worker."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., Config]:
    """Compose conf/ with two-epoch training and any extra overrides, paths under tmp_path."""
    (tmp_path / "raw").mkdir(exist_ok=True)

    def make(*overrides: str) -> Config:
        return tiny(
            compose_config(ROOT / "conf", ["trainer.max_epochs=2", *overrides])[1], tmp_path
        )

    return make


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """The repository's tracked files as they are now, in a fresh git repository."""
    return copy_tracked_files(tmp_path / "repo")


@pytest.fixture(scope="session")
def tiny_baseline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built once per test process: the repository with two-epoch training, reproduced by
    `dvc repro` and committed. Tests take copies of it (tiny_repo), never this one."""
    repo = copy_tracked_files(tmp_path_factory.mktemp("baseline") / "repo")
    set_in_conf(repo, "trainer/default.yaml", "max_epochs", 2)
    run(["dvc", "repro"], repo)
    commit_all(repo, "tiny")
    # the store holds its artifact directory's absolute path: each copy starts a store of its own
    (repo / "mlflow.db").unlink()
    shutil.rmtree(repo / "mlartifacts", ignore_errors=True)
    return repo


@pytest.fixture
def tiny_repo(tiny_baseline: Path, tmp_path: Path) -> Path:
    """A copy of tiny_baseline: reproduced (two epochs), committed, its DVC cache included."""
    return Path(shutil.copytree(tiny_baseline, tmp_path / "repo", symlinks=True))
