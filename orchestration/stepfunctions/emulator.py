"""moto's server with its Step Functions interpreter and a job-recording AWS Batch, for
running the compiled state machine on a machine without AWS (tests/ops/test_stepfunctions.py):

    .venv-sfn/bin/python orchestration/stepfunctions/emulator.py PORT

Batch records each job and ends it as done (every job fails with MOTO_SIMPLE_BATCH_FAIL_AFTER=0)
without running it. With EMULATOR_JOBS_WORKSPACE=DIR it runs each job's command instead, in a
checkout at DIR standing in for the image's /workspace, with EMULATOR_JOBS_PYTHON (the
pipeline environment's python) for `python`, and the job fails when the command does; each
job's output goes to DIR/../jobs/<job name>.log.

One fix to the emulator, not to the state machine: moto's port of the interpreter passes a
service integration's parameters to boto as written (`JobName`) and its responses back as
boto names them (`jobId`), where Step Functions maps both between its names and the API's;
this restores that mapping (moto keeps the methods that do it, and leaves them empty)."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import botocore.session
from botocore import xform_name
from botocore.model import OperationModel
from moto.server import ThreadedMotoServer
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
    state_task_service,
)

Service = state_task_service.StateTaskService


def operation(self: Service, service: str | None, action: str | None) -> OperationModel:
    """The boto operation a task calls (`submitJob`, or boto's `describe_jobs`)."""
    model = botocore.session.get_session().get_service_model(self._get_boto_service_name(service))
    by_name = {xform_name(op): op for op in model.operation_names}
    return model.operation_model(by_name[xform_name(action or self.resource.api_action)])


def normalise_parameters(
    self: Service, parameters: dict, boto_service_name: str | None = None,
    service_action_name: str | None = None,
) -> None:  # fmt: skip
    """Step Functions' parameter names (`ContainerOverrides.Command`) as boto's (`command`)."""
    shape = operation(self, boto_service_name, service_action_name).input_shape
    self._to_boto_request(parameters, shape)


def normalise_response(
    self: Service, response: dict, boto_service_name: str | None = None,
    service_action_name: str | None = None,
) -> None:  # fmt: skip
    """boto's response names (`jobId`) as Step Functions gives them (`JobId`)."""
    shape = operation(self, boto_service_name, service_action_name).output_shape
    self._from_boto_response(response, shape)


def run_jobs_in(workspace: Path, python: str, endpoint: str) -> None:
    """Make Batch run each job's command in `workspace` (see the module's docstring)."""
    from moto.batch_simple.models import BatchSimpleBackend

    logs = workspace.parent / "jobs"
    logs.mkdir(exist_ok=True)

    def finish(self: BatchSimpleBackend, include_start_attempt: bool, job: Any) -> None:
        self.backend._jobs[job.job_id] = job
        job.job_started_at = datetime.datetime.now()
        job.log_stream_name = job._stream_name
        if include_start_attempt:
            job._start_attempt()
        details = job._container_details()
        command = [python if a == "python" else str(workspace) if a == "/workspace" else a
                   for a in details["command"]]  # fmt: skip
        env = {**os.environ, **{e["name"]: e["value"] for e in details["environment"]}}
        # the job's AWS calls (the run store) go to this server, as a job's go to AWS
        env.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="testing",
                   AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")  # fmt: skip
        with (logs / f"{job.job_name}.log").open("w") as log:
            done = subprocess.run(command, cwd=workspace, env=env, stdout=log, stderr=log)
        job._mark_stopped(success=done.returncode == 0)

    BatchSimpleBackend._mark_job_as_finished = finish


def main() -> None:
    """Serve on 127.0.0.1:PORT until interrupted."""
    port = int(sys.argv[1])
    # the interpreter's own AWS calls (Batch, S3) go to this server
    os.environ["MOTO_PORT"] = str(port)
    Service._normalise_parameters = normalise_parameters
    Service._normalise_response = normalise_response
    if workspace := os.environ.get("EMULATOR_JOBS_WORKSPACE"):
        python = os.environ.get("EMULATOR_JOBS_PYTHON", "python")
        run_jobs_in(Path(workspace), python, f"http://127.0.0.1:{port}")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    print(f"emulator on http://127.0.0.1:{port}", flush=True)
    try:
        server._thread.join()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
