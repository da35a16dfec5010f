"""What both kinds of stage task share (dag.StageOperator on a worker, container's in the
training image): the run's arguments for the runner, the upstream hand-offs, the DVC remote's
credentials, and the runner's one-line error."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowException

from mlpipeline.errors import PipelineError
from mlpipeline.ops.orchestrate.handoff import Handoff, merge

# the DAG's run parameter that holds `dvc exp run -S` style overrides
OVERRIDES = "overrides"


def error_line(lines: list[str]) -> str:
    """The runner's one-line error among its output lines ('' if none)."""
    errors = [line for line in lines if line.startswith("error: ")]
    return errors[-1][len("error: ") :] if errors else ""


def remote_env(conn_id: str | None) -> dict[str, str]:
    """The DVC remote's credentials from an Airflow connection of type `aws` (login: access
    key id, password: secret key; extra: `region_name`, `endpoint_url`,
    `aws_session_token`), as the variables boto3 and DVC read."""
    if not conn_id:
        return {}
    conn = BaseHook.get_connection(conn_id)
    extra = conn.extra_dejson
    values = {
        "AWS_ACCESS_KEY_ID": conn.login,
        "AWS_SECRET_ACCESS_KEY": conn.password,
        "AWS_SESSION_TOKEN": extra.get("aws_session_token"),
        "AWS_DEFAULT_REGION": extra.get("region_name"),
        "AWS_ENDPOINT_URL": extra.get("endpoint_url"),
    }
    return {name: str(value) for name, value in values.items() if value}


def received(context: Mapping[str, Any], task_ids: list[str]) -> str:
    """The upstream tasks' hand-offs (their XComs) merged into one line ('' for none)."""
    lines = [context["ti"].xcom_pull(task_ids=t) for t in task_ids]
    missing = [t for t, line in zip(task_ids, lines, strict=True) if not line]
    if missing:
        raise AirflowException(f"no hand-off from upstream task(s) {', '.join(missing)}")
    try:
        return merge(None, [Handoff.decode(line) for line in lines]).encode() if lines else ""
    except PipelineError as err:
        raise AirflowException(str(err)) from None


def run_arguments(stage: str, context: Mapping[str, Any]) -> list[str]:
    """The runner's `run` arguments for this DAG run: the stage, and the run's overrides
    (its `overrides` parameter, as `dvc exp run -S` takes them) with its id as their name."""
    overrides = [str(o) for o in (context["params"].get(OVERRIDES) or [])]
    named = ["--experiment", str(context["run_id"])] if overrides else []
    return ["run", stage, *(f"--override={o}" for o in overrides), *named]
