"""The orchestration's settings, from environment variables of Airflow's processes (standard
library only: Airflow's environment has neither DVC nor torch). Each variable, its meaning
and its default: docs/orchestration.md#settings; `Settings.from_env` reads them."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from mlpipeline.errors import PipelineError

Mode = Literal["checkout", "docker"]
MODES: tuple[Mode, ...] = ("checkout", "docker")


def _json_map(environ: Mapping[str, str], name: str) -> dict[str, str]:
    text = environ.get(name, "").strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as err:
        raise PipelineError(f'{name} is not JSON ({err}): set it to {{"stage": "..."}}') from None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise PipelineError(f'{name} must be a JSON object of strings: {{"stage": "..."}}')
    return value


@dataclass(frozen=True)
class Settings:
    """Where the repository is, how tasks run, and when the DAG runs (module docstring)."""

    repo: Path
    python: Path
    mode: Mode = "checkout"
    graph: Path | None = None
    workspaces: dict[str, str] = field(default_factory=dict)
    queues: dict[str, str] = field(default_factory=dict)
    pool: str | None = None
    remote_conn: str | None = None
    image: str = "mlpipeline-train:latest"
    docker_url: str = "unix://var/run/docker.sock"
    docker_network: str = "bridge"
    schedule: str | None = "@daily"
    watch: tuple[str, ...] = ("data/raw",)
    watch_schedule: str = "@hourly"
    dag_id: str = "mlpipeline"

    @staticmethod
    def from_env(environ: Mapping[str, str] = os.environ) -> Settings:
        """The settings from these environment variables; PipelineError names a bad one."""
        if not environ.get("MLPIPELINE_REPO"):
            raise PipelineError(
                "MLPIPELINE_REPO is not set: point it at a checkout of the repository "
                "(docs/orchestration.md)"
            )
        repo = Path(environ["MLPIPELINE_REPO"]).expanduser().resolve()
        mode = environ.get("MLPIPELINE_MODE", "checkout")
        if mode not in MODES:
            raise PipelineError(f"MLPIPELINE_MODE={mode!r}: use one of {', '.join(MODES)}")
        schedule = environ.get("MLPIPELINE_SCHEDULE", "@daily").strip()
        watch = environ.get("MLPIPELINE_WATCH", "data/raw")
        return Settings(
            repo=repo,
            python=Path(environ.get("MLPIPELINE_PYTHON") or repo / ".venv" / "bin" / "python"),
            mode=mode,  # type: ignore[arg-type]  (checked above)
            graph=Path(environ["MLPIPELINE_GRAPH"]) if environ.get("MLPIPELINE_GRAPH") else None,
            workspaces=_json_map(environ, "MLPIPELINE_WORKSPACES"),
            queues=_json_map(environ, "MLPIPELINE_QUEUES"),
            pool=environ.get("MLPIPELINE_POOL") or None,
            remote_conn=environ.get("MLPIPELINE_REMOTE_CONN") or None,
            image=environ.get("MLPIPELINE_IMAGE", "mlpipeline-train:latest"),
            docker_url=environ.get("MLPIPELINE_DOCKER_URL", "unix://var/run/docker.sock"),
            docker_network=environ.get("DOCKER_NETWORK", "bridge"),
            schedule=None if schedule.lower() in ("", "none") else schedule,
            watch=tuple(p.strip() for p in watch.split(",") if p.strip()),
            watch_schedule=environ.get("MLPIPELINE_WATCH_SCHEDULE", "@hourly"),
            dag_id=environ.get("MLPIPELINE_DAG_ID", "mlpipeline"),
        )

    def workspace(self, stage: str) -> Path:
        """The checkout a stage runs in (`checkout` mode)."""
        return Path(self.workspaces.get(stage, self.repo))
