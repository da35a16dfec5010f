"""The Airflow DAGs: one task per stage of DVC's resolved graph, each running the stage with
the orchestration runner (`python -m mlpipeline.ops.orchestrate run`) in a checkout on the
worker or in the training image, with the hand-off between tasks as their XCom value; and a
watch DAG that triggers the pipeline when the raw data's DVC hash changes.

Imports Airflow, and nothing of DVC or torch: the runner and the graph come from the
pipeline's own environment as programs."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import DAG, Asset, AssetOrTimeSchedule, BaseOperator, Param
from airflow.sdk.definitions.timetables.trigger import CronTriggerTimetable
from airflow.sdk.exceptions import AirflowException, AirflowSkipException

from mlpipeline.errors import PipelineError
from mlpipeline.ops.orchestrate.graph import Stage, from_json
from mlpipeline.ops.orchestrate.settings import Settings
from mlpipeline.ops.orchestrate.tasks import (
    OVERRIDES,
    error_line,
    received,
    remote_env,
    run_arguments,
)

RUNNER = ["-m", "mlpipeline.ops.orchestrate"]
# the DAG's first runs: scheduled runs start from the next interval after a deployment
START = pendulum.datetime(2024, 1, 1, tz="UTC")


def load_graph(settings: Settings) -> list[Stage]:
    """The stage graph: MLPIPELINE_GRAPH's file, else DVC's answer in the checkout (the
    pipeline environment's python runs `graph`)."""
    if settings.graph is not None:
        try:
            return from_json(settings.graph.read_text(encoding="utf-8"))
        except (OSError, ValueError, KeyError) as err:
            raise PipelineError(f"cannot read the stage graph {settings.graph}: {err}") from None
    if not settings.python.is_file():
        raise PipelineError(
            f"{settings.python} not found: run `make install` in {settings.repo}, or set "
            "MLPIPELINE_PYTHON to the pipeline environment's python"
        )
    proc = subprocess.run(
        [str(settings.python), *RUNNER, "graph", "--repo", str(settings.repo)],
        capture_output=True, text=True, cwd=settings.repo,
    )  # fmt: skip
    if proc.returncode != 0:
        raise PipelineError(error_line(proc.stderr.splitlines()) or proc.stderr.strip())
    return from_json(proc.stdout)


class StageOperator(BaseOperator):
    """Runs one DVC stage in a checkout on the worker with the pipeline environment's python;
    returns the hand-off for the tasks after it."""

    ui_color = "#9ad0f5"

    def __init__(
        self,
        *,
        stage: str,
        upstream_stage_tasks: list[str],
        workspace: str,
        python: str,
        remote_conn: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.stage = stage
        self.upstream_stage_tasks = upstream_stage_tasks
        self.workspace = workspace
        self.python = python
        self.remote_conn = remote_conn

    def execute(self, context: Any) -> str:
        env = {**os.environ, **remote_env(self.remote_conn)}
        with tempfile.TemporaryDirectory(prefix="mlpipeline-task-") as tmp:
            upstream, output = Path(tmp, "upstream"), Path(tmp, "handoff")
            upstream.write_text(received(context, self.upstream_stage_tasks), encoding="utf-8")
            cmd = [
                self.python, *RUNNER, *run_arguments(self.stage, context),
                "--repo", self.workspace, "--upstream", str(upstream), "--output", str(output),
            ]  # fmt: skip
            proc = subprocess.Popen(
                cmd, cwd=self.workspace, env=env, text=True, bufsize=1,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            )  # fmt: skip
            assert proc.stdout is not None
            lines = []
            for line in proc.stdout:
                lines.append(line.rstrip("\n"))
                self.log.info("%s", lines[-1])
            if proc.wait() != 0:
                raise AirflowException(error_line(lines) or f"the runner exited {proc.returncode}")
            return output.read_text(encoding="utf-8").strip()


def stage_task(settings: Settings, stage: Stage, tasks: dict[str, str]) -> BaseOperator:
    """The task that runs `stage` in the configured mode."""
    common: dict[str, Any] = {"task_id": stage.task_id}
    if settings.pool:
        common["pool"] = settings.pool
    if stage.name in settings.queues:
        common["queue"] = settings.queues[stage.name]
    upstream = [tasks[name] for name in stage.upstream]
    if settings.mode == "docker":
        # the Docker provider need be installed only where tasks run in containers
        from mlpipeline.ops.orchestrate.container import StageContainerOperator

        return StageContainerOperator(
            stage=stage.name,
            upstream_stage_tasks=upstream,
            remote_conn=settings.remote_conn,
            image=settings.image,
            docker_url=settings.docker_url,
            network_mode=settings.docker_network,
            **common,
        )
    return StageOperator(
        stage=stage.name,
        upstream_stage_tasks=upstream,
        workspace=str(settings.workspace(stage.name)),
        python=str(settings.python),
        remote_conn=settings.remote_conn,
        **common,
    )


def watched_asset(settings: Settings) -> Asset:
    """The asset whose events say the watched paths' DVC hashes changed."""
    return Asset(name=f"{settings.dag_id}_raw_data", uri=f"file://{settings.repo}/raw-data")


def pipeline_dag(settings: Settings, stages: list[Stage]) -> DAG:
    """The pipeline: one task per stage, an edge for each stage dependency."""
    schedule: Any = None
    if settings.schedule:
        schedule = CronTriggerTimetable(settings.schedule, timezone="UTC")
    if settings.watch:
        assets = [watched_asset(settings)]
        schedule = AssetOrTimeSchedule(timetable=schedule, assets=assets) if schedule else assets
    dag = DAG(
        dag_id=settings.dag_id,
        schedule=schedule,
        start_date=START,
        catchup=False,
        # runs of one DAG share the workspaces and the remote's latest state: one at a time
        max_active_runs=1,
        params={
            OVERRIDES: Param(
                [],
                type="array",
                items={"type": "string"},
                description="Hydra overrides for this run, as `dvc exp run -S` takes them",
            )
        },
        doc_md=f"The DVC pipeline of `{settings.repo}`, a task per stage (docs/orchestration.md)",
        tags=["mlpipeline", "dvc"],
    )
    tasks = {s.name: s.task_id for s in stages}
    with dag:
        operators = {s.name: stage_task(settings, s, tasks) for s in stages}
        for stage in stages:
            for name in stage.upstream:
                operators[name] >> operators[stage.name]
    return dag


class WatchOperator(BaseOperator):
    """Emits an event of the watched asset when the DVC hashes of the watched paths differ
    from those of its last event; skips otherwise."""

    def __init__(self, *, asset: Asset, paths: list[str], repo: str, python: str, **kwargs: Any):
        super().__init__(inlets=[asset], outlets=[asset], **kwargs)
        self.asset = asset
        self.paths = paths
        self.repo = repo
        self.python = python

    def execute(self, context: Any) -> dict[str, str]:
        proc = subprocess.run(
            [self.python, *RUNNER, "hash", "--repo", self.repo, *self.paths],
            capture_output=True, text=True, cwd=self.repo,
        )  # fmt: skip
        if proc.returncode != 0:
            raise AirflowException(error_line(proc.stderr.splitlines()) or proc.stderr.strip())
        hashes = dict(reversed(line.split("  ", 1)) for line in proc.stdout.splitlines())
        events = context["inlet_events"][self.asset]
        last = events[-1].extra.get("hashes") if len(events) else None
        if last == hashes:
            raise AirflowSkipException(f"unchanged: {hashes}")
        self.log.info("DVC hashes changed: %s -> %s", last, hashes)
        context["outlet_events"][self.asset].extra = {"hashes": hashes}
        return hashes


def watch_dag(settings: Settings) -> DAG:
    """The watch: checks the watched paths' DVC hashes on its own schedule."""
    dag = DAG(
        dag_id=f"{settings.dag_id}_watch",
        schedule=CronTriggerTimetable(settings.watch_schedule, timezone="UTC"),
        start_date=START,
        catchup=False,
        max_active_runs=1,
        doc_md=f"Runs `{settings.dag_id}` when the DVC hash of {', '.join(settings.watch)} changes",
        tags=["mlpipeline", "dvc"],
    )
    with dag:
        WatchOperator(
            task_id="dvc_hash",
            asset=watched_asset(settings),
            paths=list(settings.watch),
            repo=str(settings.repo),
            python=str(settings.python),
        )
    return dag


def build_dags(settings: Settings) -> dict[str, DAG]:
    """The pipeline DAG and, when paths are watched, the watch DAG, by id."""
    dags = [pipeline_dag(settings, load_graph(settings))]
    if settings.watch:
        dags.append(watch_dag(settings))
    return {dag.dag_id: dag for dag in dags}
