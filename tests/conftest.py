"""Shared fixtures: a tiny composed config in a temporary directory, temporary copies of the
repository in which the real `dvc` runs: as it is (repo_copy), or already reproduced with
two-epoch training, once per run (tiny_repo), and an S3-compatible server on loopback
(s3_server); the order the tests run in. Plain helpers are in helpers.py."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from filelock import FileLock
from helpers import (
    BIN,
    CONF,
    commit_all,
    copy_tracked_files,
    free_port,
    run,
    set_in_conf,
    stop,
    tiny,
    wait_for_server,
)

from mlpipeline.config import Config, compose_config
from mlpipeline.determinism import prepare_process


def pytest_configure() -> None:
    """The suite's Python processes keep their bytecode caches even where the environment
    says not to write them (PYTHONDONTWRITEBYTECODE): it starts hundreds of them, DVC, the
    stages and Airflow, and each would compile torch's or Airflow's sources again. The stages
    the tests run in this process get the pinned kernels their CLI sets first."""
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    prepare_process()


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
        return tiny(compose_config(CONF, ["trainer.max_epochs=2", *overrides])[1], tmp_path)

    return make


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """The repository's tracked files as they are now, in a fresh git repository."""
    return copy_tracked_files(tmp_path / "repo")


@pytest.fixture(scope="session")
def shared_dir(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """A directory that every xdist worker of this run shares, for what is built once per run
    (the first worker to need it builds it under a FileLock; the others wait and reuse it)."""
    base = tmp_path_factory.getbasetemp()
    return base if worker_id == "master" else base.parent


@pytest.fixture(scope="session")
def tiny_baseline(shared_dir: Path) -> Path:
    """Built once per run: the repository on the digits demo with two-epoch training,
    reproduced by `dvc repro` and committed. Tests take copies of it (tiny_repo), never this one."""
    repo = shared_dir / "tiny-baseline" / "repo"
    with FileLock(shared_dir / "tiny-baseline.lock"):
        if (repo.parent / "done").is_file():  # written last: another worker made it
            return repo
        shutil.rmtree(repo.parent, ignore_errors=True)
        copy_tracked_files(repo, demo=True)
        set_in_conf(repo, "trainer/default.yaml", "max_epochs", 2)
        # its log, for tests that compare what ran elsewhere with what plain `dvc repro` ran
        repro = run(["dvc", "repro"], repo)
        (repo.parent / "dvc-repro.log").write_text(repro.stdout)
        (repo.parent / "dvc-repro.err").write_text(repro.stderr)
        commit_all(repo, "tiny")
        # the store holds its artifact directory's absolute path: each copy starts its own
        (repo / "mlflow.db").unlink()
        shutil.rmtree(repo / "mlartifacts", ignore_errors=True)
        (repo.parent / "done").touch()
    return repo


@pytest.fixture
def tiny_repo(tiny_baseline: Path, tmp_path: Path) -> Path:
    """A copy of tiny_baseline: reproduced (two epochs), committed, its DVC cache included."""
    return Path(shutil.copytree(tiny_baseline, tmp_path / "repo", symlinks=True))


MOTO_SERVER = Path(BIN) / "moto_server"


@pytest.fixture
def s3_server(tmp_path: Path) -> Iterator[str]:
    """moto_server on 127.0.0.1 and a free port; yields its endpoint URL, always stops it.
    `moto[server]` is pinned in uv.lock: a missing server is an error, not a skip."""
    if not MOTO_SERVER.is_file():
        pytest.fail(f"{MOTO_SERVER} not found: moto[server] is pinned in uv.lock: make install-dev")
    port = free_port()
    log = (tmp_path / "moto.log").open("w")
    proc = subprocess.Popen(
        [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_for_server(proc, f"{endpoint}/moto-api/", 60, (tmp_path / "moto.log").read_text)
        yield endpoint
    finally:
        stop(proc)
        log.close()


# markers that put a test in the second tier whether or not it says `slow` too
SECOND_TIER = ("docker", "gpu")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Docker and GPU tests belong to the slow tier (before `-m` selects a tier). Then the
    tests that build images or run a pipeline first, the quick ones after them, so that
    xdist's workers end together: work stealing evens out the quick tail."""
    for item in items:
        if any(item.get_closest_marker(name) for name in SECOND_TIER):
            item.add_marker(pytest.mark.slow)
    weight = {"docker": 0, "slow": 1}

    def order(item: pytest.Item) -> int:
        if "tiny_baseline" in getattr(item, "fixturenames", ()):
            return 1  # the fast tier's one pipeline run: start it first, run the rest beside it
        return min((weight.get(m.name, 2) for m in item.iter_markers()), default=2)

    items.sort(key=order)
