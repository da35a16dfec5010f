"""`docker` mode: one stage in a container of the training image (docker/train.Dockerfile),
through Airflow's DockerOperator. The image holds the pipeline's environment and a snapshot
of the repository at one revision; the upstream hand-off goes in through the environment,
the task's own comes back as the container's last line of output, and the DVC remote's
credentials come from an Airflow connection at run time, never from the image."""

from __future__ import annotations

from typing import Any

from airflow.providers.docker.exceptions import DockerContainerFailedException
from airflow.providers.docker.operators.docker import DockerOperator
from airflow.sdk.exceptions import AirflowException

from mlpipeline.ops.orchestrate.handoff import Handoff
from mlpipeline.ops.orchestrate.tasks import error_line, received, remote_env, run_arguments

# where the image keeps the repository (docker/train.Dockerfile's WORKDIR)
WORKSPACE = "/workspace"
UPSTREAM_ENV = "MLPIPELINE_UPSTREAM"


class StageContainerOperator(DockerOperator):
    """Runs one DVC stage in a container of the training image; returns the hand-off."""

    ui_color = "#b7e4c7"

    def __init__(
        self,
        *,
        stage: str,
        upstream_stage_tasks: list[str],
        remote_conn: str | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("auto_remove", "force")
        # the daemon may be on another host: no host folder is shared with the container
        kwargs.setdefault("mount_tmp_dir", False)
        # the Docker API's calls, container creation among them: a storage driver that copies
        # a large image's file system (vfs) can take minutes on a loaded host
        kwargs.setdefault("timeout", 600)
        super().__init__(do_xcom_push=True, xcom_all=False, working_dir=WORKSPACE, **kwargs)
        self.stage = stage
        self.upstream_stage_tasks = upstream_stage_tasks
        self.remote_conn = remote_conn

    def execute(self, context: Any) -> str:
        self.command = [
            "python", "-m", "mlpipeline.ops.orchestrate", *run_arguments(self.stage, context),
            "--repo", WORKSPACE,
        ]  # fmt: skip
        self.environment = {
            **(self.environment or {}),
            UPSTREAM_ENV: received(context, self.upstream_stage_tasks),
        }
        # not templated, not shown in the UI
        self._private_environment = {**self._private_environment, **remote_env(self.remote_conn)}
        try:
            last = super().execute(context)
        except DockerContainerFailedException as err:
            lines = [str(line) for line in (err.logs or [])]
            raise AirflowException(error_line(lines) or str(err)) from None
        Handoff.decode(str(last))  # the container's last line must be its hand-off
        return str(last)
