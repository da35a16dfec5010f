"""Shared fixtures: a tiny composed config in a temporary directory, and temporary copies of
the repository in which the real `dvc` runs: as committed (repo_copy), or already reproduced
with two-epoch training (tiny_repo)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from mlpipeline.compose import compose_config
from mlpipeline.config import Config
from mlpipeline.image import free_port  # noqa: F401  (the tests import it from here)

ROOT = Path(__file__).resolve().parents[1]
# stage commands say `python`/`dvc`: make them the ones of the running venv
BIN = str(Path(sys.executable).parent)
# longer than any command of the suite takes here, far shorter than a DDP rendezvous timeout
RUN_TIMEOUT_S = 600


def stop(proc: subprocess.Popen) -> None:
    """End a server started with start_new_session=True, and its children (mlflow starts
    uvicorn and a job runner): SIGTERM to the group, SIGKILL if it lingers."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    # children that outlived the leader share its group id
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(autouse=True)
def _fresh_mlflow_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI, which the pipeline honours;
    without this, one test's store leaks into the next test in the same worker."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(name, raising=False)


def tiny_overrides(base: Path) -> list[str]:
    """Paths under `base`, two epochs, a private MLflow store."""
    paths = ["ingested", "prepared", "reports"]
    return [
        *(f"paths.{p}={base}/{p}" for p in paths),
        f"paths.raw={base}/raw",
        f"paths.model={base}/models/model.pt",
        f"paths.onnx={base}/models/model.onnx",
        f"paths.card={base}/models/model_card.json",
        f"paths.reference={base}/models/reference.npy",
        f"tracking.uri=sqlite:///{base}/mlflow.db",
        "trainer.max_epochs=2",
    ]


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., Config]:
    """Compose conf/ with tiny settings under tmp_path, plus any extra overrides."""
    (tmp_path / "raw").mkdir(exist_ok=True)

    def make(*overrides: str) -> Config:
        return compose_config(ROOT / "conf", [*tiny_overrides(tmp_path), *overrides])[1]

    return make


def run(cmd: list[str], cwd: Path, check: bool = True, **env: str) -> subprocess.CompletedProcess:
    """Run a command with the venv first on PATH in its own process group; fail with its
    output when `check` and it fails, or when it is still running after RUN_TIMEOUT_S."""
    full_env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    full_env |= {"PATH": f"{BIN}:{os.environ['PATH']}", **env}
    popen = subprocess.Popen(
        cmd, cwd=cwd, env=full_env, text=True, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = popen.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        # a hung DDP peer holds the pipes open forever: end the whole process group
        stop(popen)
        out, err = popen.communicate()
        pytest.fail(f"{' '.join(cmd)} still running after {RUN_TIMEOUT_S} s:\n{out}\n{err}")
    proc = subprocess.CompletedProcess(cmd, popen.returncode, out, err)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def copy_tracked_files(dest: Path) -> Path:
    """The git-tracked files of this repository, committed in a fresh git repository."""
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    run(["git", "init", "-q"], dest)
    commit_all(dest, "copy")
    return dest


def commit_all(repo: Path, message: str) -> None:
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message], repo)


def set_in_conf(repo: Path, file: str, key: str, value: object) -> None:
    """Set `key` (dotted) in conf/<file> of `repo`."""
    path = repo / "conf" / file
    data = yaml.safe_load(path.read_text())
    node = data
    *parents, last = key.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """The repository as committed, in a fresh git repository."""
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


def stages_run(output: str) -> list[str]:
    """Names of the stages `dvc repro` actually ran, from its output."""
    return [
        line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")
    ]
