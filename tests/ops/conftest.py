"""The Docker daemon for the image and stack tests, or a skip that says why. Where it is
required (MLPIPELINE_REQUIRE_DOCKER=1, as .ci/run sets it) a missing daemon fails them.

Settings a CI machine sets for an unusual daemon, read the same way the product reads them:
BASE_IMAGE (a base image already on the daemon), DOCKER_NETWORK=host (a daemon without a bridge
network, where published ports do not work: the stack then runs from a host-network variant of
docker-compose.yml, helpers.host_network_compose_file).

Airflow for the orchestration tests: a private home per test (SQLite, no scheduler unless a
test starts one), from the environment `make airflow-install` creates."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
from helpers import REQUIRED, ROOT, free_port, run, stop, wait_for_server

from mlpipeline.errors import PipelineError
from mlpipeline.ops.docker import DockerSettings, connect, ensure_base_image


@pytest.fixture(scope="session")
def settings() -> DockerSettings:
    return DockerSettings()


@pytest.fixture(scope="session")
def base_image(settings: DockerSettings) -> str:
    """BASE_IMAGE, else the Dockerfile's own base, as the product resolves it."""
    return settings.base(ROOT)


@pytest.fixture(scope="session")
def client(base_image: str) -> docker.DockerClient:
    """A daemon that answers and has the base image, pulled if it is not there yet."""
    try:
        docker_client = connect()
        # deleting a GB-sized image takes minutes on a copying storage driver (vfs) and a busy
        # daemon: past docker-py's 60 s read timeout
        docker_client.api.timeout = 600
        ensure_base_image(docker_client, base_image)
    except PipelineError as err:
        if REQUIRED:
            pytest.fail(f"MLPIPELINE_REQUIRE_DOCKER=1 but {err}")
        pytest.skip(str(err))
    return docker_client


# Airflow, from its own environment (make airflow-install; make test-all installs it)

AIRFLOW_BIN = ROOT / ".venv-airflow" / "bin"


def airflow_env(home: Path) -> dict[str, str]:
    """Environment for Airflow's CLI with its home (SQLite database, dags folder) in `home`."""
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # Airflow's own programs first; the pipeline's environment is the DAG's to name
        "PATH": f"{AIRFLOW_BIN}{os.pathsep}{os.environ['PATH']}",
    }


@pytest.fixture(scope="session")
def airflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated Airflow SQLite database, made once per test process; tests copy it."""
    if not (AIRFLOW_BIN / "airflow").is_file():
        pytest.skip(f"{AIRFLOW_BIN}/airflow not found: make airflow-install (test-all runs it)")
    home = tmp_path_factory.mktemp("airflow-db")
    run([str(AIRFLOW_BIN / "airflow"), "db", "migrate"], home, **airflow_env(home))
    return home / "airflow.db"


@dataclass
class Airflow:
    """A private Airflow home holding dags/mlpipeline_dags.py, and its CLI with `env` (set the
    MLPIPELINE_* settings there)."""

    home: Path
    env: dict[str, str]

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return run([str(AIRFLOW_BIN / "airflow"), *args], self.home, check=check, **self.env)

    def dags_test(self, dag_id: str = "mlpipeline", conf: dict | None = None, check: bool = True):
        """`airflow dags test`: one whole DAG run in this process, no scheduler."""
        extra = ["-c", json.dumps(conf)] if conf else []
        return self("dags", "test", dag_id, *extra, check=check)

    def query(self, sql: str, *args: str) -> list[sqlite3.Row]:
        """Rows of Airflow's own database, read as the CLI's list commands would (each of
        those starts Airflow, seconds of CPU, for what one query answers)."""
        with contextlib.closing(sqlite3.connect(self.home / "airflow.db")) as db:
            db.row_factory = sqlite3.Row
            return db.execute(sql, args).fetchall()

    def runs(self, dag_id: str = "mlpipeline") -> list[dict]:
        """The DAG's runs (run_id, state), newest first."""
        sql = "SELECT run_id, state FROM dag_run WHERE dag_id = ? ORDER BY id DESC"
        return [dict(row) for row in self.query(sql, dag_id)]

    def states(self, run_id: str, dag_id: str = "mlpipeline") -> dict[str, str]:
        """Each task's state in a run."""
        sql = "SELECT task_id, state FROM task_instance WHERE dag_id = ? AND run_id = ?"
        return {row["task_id"]: row["state"] for row in self.query(sql, dag_id, run_id)}


@pytest.fixture
def airflow(tmp_path: Path, airflow_db: Path) -> Airflow:
    home = tmp_path / "airflow"
    (home / "dags").mkdir(parents=True)
    shutil.copy2(airflow_db, home / "airflow.db")
    shutil.copy2(ROOT / "dags" / "mlpipeline_dags.py", home / "dags" / "mlpipeline_dags.py")
    return Airflow(home, airflow_env(home))


@contextlib.contextmanager
def scheduler(airflow: Airflow, timeout_s: float = 240) -> Iterator[sqlite3.Connection]:
    """`airflow standalone` (scheduler, DAG processor, API server, triggerer) on free ports
    for the block; yields a connection to its database for polling (cheaper than the CLI)."""
    api = free_port()
    env = {
        **os.environ,
        **airflow.env,
        "AIRFLOW__API__PORT": str(api),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api}/execution/",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        # the executor's worker processes: two cores here, and the DAG is nearly a chain
        "AIRFLOW__CORE__PARALLELISM": "2",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    log = (airflow.home / "standalone.log").open("w")
    proc = subprocess.Popen(
        [str(AIRFLOW_BIN / "airflow"), "standalone"],
        cwd=airflow.home, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        wait_for_server(
            proc, f"http://127.0.0.1:{api}/api/v2/monitor/health", timeout_s,
            (airflow.home / "standalone.log").read_text,
        )  # fmt: skip
        with contextlib.closing(sqlite3.connect(airflow.home / "airflow.db")) as db:
            yield db
    finally:
        stop(proc)
        log.close()


def wait_for(db: sqlite3.Connection, query: str, args: tuple, wanted: set, timeout_s: float):
    """Poll `query` (one value) until it is in `wanted`; fail with the last value if not."""
    deadline = time.monotonic() + timeout_s
    value = None
    while time.monotonic() < deadline:
        row = db.execute(query, args).fetchone()
        value = row[0] if row else None
        if value in wanted:
            return value
        time.sleep(1)
    pytest.fail(f"{query} {args}: {value!r} after {timeout_s} s, not one of {wanted}")
