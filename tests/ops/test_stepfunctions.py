"""The pipeline compiled to an AWS Step Functions state machine (kit/mlpipeline/ops/orchestrate/
stepfunctions.py), validated and executed by moto's Step Functions interpreter with moto's
AWS Batch (orchestration/stepfunctions/emulator.py: jobs recorded, or run in a checkout), and
the runner's run store."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
import yaml
from helpers import ROOT, copy_tracked_files, free_port, one_line_error, run, stop, wait_for_server

from mlpipeline.errors import PipelineError
from mlpipeline.ops.orchestrate import stepfunctions as sfn
from mlpipeline.ops.orchestrate.graph import Stage, read_graph
from mlpipeline.ops.orchestrate.handoff import Handoff

REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/mlpipeline-states"
VALUES = {"RunBucket": "runs-bucket", "RunPrefix": "mlpipeline-runs", "JobQueue": "cpu",
          "GpuJobQueue": "gpu", "JobDefinition": "mlpipeline-train"}  # fmt: skip
RESOURCES = {
    "default": {"cpu": 1, "memory": "4Gi"},
    "train": {"cpu": 4, "memory": "16Gi", "gpu": 1},
}


@pytest.fixture(scope="module")
def composed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository with a params.yaml, which dvc.yaml's paths need (a generated project
    commits none: its first `make pipeline` composes it)."""
    return copy_tracked_files(tmp_path_factory.mktemp("composed") / "repo", demo=True)


@pytest.fixture(scope="module")
def graph(composed: Path) -> list[Stage]:
    return read_graph(composed)


def jobs(definition: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each Batch job state's parameters, by state name, branches included."""
    found = {}
    for name, state in definition["States"].items():
        if state.get("Resource", "").startswith("arn:aws:states:::batch"):
            found[name] = state["Parameters"]
        for branch in state.get("Branches", []):
            found.update(jobs(branch))
    return found


def test_one_job_per_stage_in_dependency_layers(graph: list[Stage]) -> None:
    definition = sfn.compile_state_machine(graph, RESOURCES)
    sfn.check_structure(definition, graph)
    found = jobs(definition)
    assert sorted(found) == sorted(s.task_id for s in graph)
    # each stage runs after its upstream stages: in a later layer
    layer = {s.name: i for i, group in enumerate(sfn.layers(graph)) for s in group}
    for stage in graph:
        assert all(layer[u] < layer[stage.name] for u in stage.upstream)
        command = found[stage.task_id]["ContainerOverrides"]["Command.$"]
        assert f"'run', '{stage.name}'," in command
        assert command.count("'--after'") == len(stage.upstream)
    train = found["train"]
    assert train["JobQueue"] == "${GpuJobQueue}"
    assert {"Type": "GPU", "Value": "1"} in train["ContainerOverrides"]["ResourceRequirements"]
    assert {"Type": "MEMORY", "Value": "16384"} in train["ContainerOverrides"][
        "ResourceRequirements"
    ]
    assert found["compose"]["JobQueue"] == "${JobQueue}"
    # the layers with several stages are Parallel states
    parallel = [s for s in definition["States"].values() if s["Type"] == "Parallel"]
    assert len(parallel) == sum(len(g) > 1 for g in sfn.layers(graph)) > 0


def test_the_structure_check_finds_a_dangling_transition(graph: list[Stage]) -> None:
    definition = sfn.compile_state_machine(graph)
    definition["States"]["compose"]["Next"] = "nowhere"
    with pytest.raises(PipelineError, match="missing states \\['nowhere'\\]"):
        sfn.check_structure(definition, graph)
    definition = sfn.compile_state_machine(graph[:-1])
    with pytest.raises(PipelineError, match=f"stage {graph[-1].name} has 0 jobs"):
        sfn.check_structure(definition, graph)


def test_bad_resources_and_missing_values_are_one_line(graph: list[Stage]) -> None:
    with pytest.raises(PipelineError, match="memory: '16 gigs' is not a size"):
        sfn.compile_state_machine(graph, {"default": {"memory": "16 gigs"}})
    with pytest.raises(PipelineError, match="no value for JobDefinition, JobQueue"):
        sfn.substitute(sfn.to_text(sfn.compile_state_machine(graph)), {
            k: v for k, v in VALUES.items() if k not in ("JobQueue", "JobDefinition")})  # fmt: skip


def test_make_stepfunctions_writes_the_machine(composed: Path, tmp_path: Path) -> None:
    out = tmp_path / "pipeline.asl.json"
    cmd = [
        sys.executable,
        "-m",
        "mlpipeline.ops.orchestrate",
        "stepfunctions",
        "--output",
        str(out),
    ]
    run(cmd, composed)
    assert json.loads(out.read_text())["StartAt"] == "Run parameters"


def test_the_runner_keeps_hand_offs_and_errors_in_the_run_store(repo_copy: Path) -> None:
    store = (repo_copy.parent / "store").as_uri()
    cli = [sys.executable, "-m", "mlpipeline.ops.orchestrate", "run", "ingest", "--repo", "."]
    proc = run([*cli, "--store", store, "--after", "compose", "--experiment", "r1"],
               repo_copy, check=False)  # fmt: skip
    line = one_line_error(proc, "no hand-off from stage compose", "r1/compose.json")
    assert (repo_copy.parent / "store" / "r1" / "ingest.error").read_text() == line.removeprefix(
        "error: "
    )
    # a first stage writes its hand-off there, under the run's name, for the stages after it
    compose = [sys.executable, "-m", "mlpipeline.ops.orchestrate", "run", "compose", "--repo", "."]
    run([*compose, "--store", store, "--experiment", "r1"], repo_copy)
    written = Handoff.decode((repo_copy.parent / "store" / "r1" / "compose.json").read_text())
    assert "compose" in written.stages
    proc = run([*cli, "--after", "compose"], repo_copy, check=False)
    one_line_error(proc, "--after names upstream stages in a run's store: give --store too")
    proc = run([*cli, "--store", store], repo_copy, check=False,
               MLPIPELINE_OVERRIDES="optimizer.lr=1")  # fmt: skip
    one_line_error(proc, "--store needs --experiment")
    proc = run([*cli], repo_copy, check=False, MLPIPELINE_OVERRIDES="optimizer.lr=1")
    one_line_error(proc, "MLPIPELINE_OVERRIDES is not JSON")


# The emulator: moto's server with its Step Functions interpreter, which runs the machine's
# states, and its AWS Batch, which records each job and marks it done without running it
# (`use_docker: False`; every job fails where MOTO_SIMPLE_BATCH_FAIL_AFTER=0; each runs in a
# checkout with EMULATOR_JOBS_WORKSPACE). It has its own environment: the interpreter needs an
# antlr4 runtime that Hydra's rules out of ours.
EMULATOR_PYTHON = ROOT / ".venv-sfn" / "bin" / "python"
EMULATOR = ROOT / "orchestration" / "stepfunctions" / "emulator.py"
MOTO_CONFIG = {"stepfunctions": {"execute_state_machine": True}, "batch": {"use_docker": False}}


@contextlib.contextmanager
def emulator(tmp_path: Path, **env: str) -> Iterator[str]:
    """The emulator on a free loopback port; its endpoint."""
    if not EMULATOR_PYTHON.is_file():
        pytest.skip(f"{EMULATOR_PYTHON} not found: make sfn-emulator-install (test-all runs it)")
    port = free_port()
    path = tmp_path / f"emulator-{port}.log"
    log = path.open("w")
    proc = subprocess.Popen([str(EMULATOR_PYTHON), str(EMULATOR), str(port)], stdout=log,
                            stderr=subprocess.STDOUT, env={**os.environ, **env},
                            start_new_session=True)  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_for_server(proc, f"{endpoint}/moto-api/data.json", 60, log=path.read_text)
        requests.post(
            f"{endpoint}/moto-api/config", json=MOTO_CONFIG, timeout=10
        ).raise_for_status()
        yield endpoint
    finally:
        stop(proc)
        log.close()


def client(endpoint: str, service: str) -> Any:
    return boto3.client(service, endpoint_url=endpoint, region_name=REGION,
                        aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip


def deploy(endpoint: str, stages: list[Stage]) -> str:
    """What the CloudFormation stack of docs/orchestration-stepfunctions.md creates, in the
    emulator: the run store's bucket, a compute environment, the CPU and GPU queues, the job
    definition and the state machine; the machine's ARN."""
    client(endpoint, "s3").create_bucket(Bucket=VALUES["RunBucket"])
    role = client(endpoint, "iam").create_role(RoleName="batch", AssumeRolePolicyDocument="{}")
    batch = client(endpoint, "batch")
    env = batch.create_compute_environment(
        computeEnvironmentName="mlpipeline", type="UNMANAGED", state="ENABLED",
        serviceRole=role["Role"]["Arn"],
    )["computeEnvironmentArn"]  # fmt: skip
    for queue in (VALUES["JobQueue"], VALUES["GpuJobQueue"]):
        batch.create_job_queue(
            jobQueueName=queue, state="ENABLED", priority=1,
            computeEnvironmentOrder=[{"order": 1, "computeEnvironment": env}],
        )  # fmt: skip
    batch.register_job_definition(
        jobDefinitionName=VALUES["JobDefinition"], type="container",
        containerProperties={"image": "mlpipeline-train:latest", "vcpus": 1, "memory": 4096},
    )  # fmt: skip
    text = sfn.substitute(sfn.to_text(sfn.compile_state_machine(stages, RESOURCES)), VALUES)
    return client(endpoint, "stepfunctions").create_state_machine(
        name="mlpipeline", definition=text, roleArn=ROLE
    )["stateMachineArn"]


def execute(endpoint: str, machine: str, name: str, given: dict[str, Any]) -> dict[str, Any]:
    """One execution run to its end: its description, with its history's events."""
    states = client(endpoint, "stepfunctions")
    arn = states.start_execution(stateMachineArn=machine, name=name, input=json.dumps(given))[
        "executionArn"
    ]
    for _ in range(600):  # the interpreter runs it in a thread, polling each job (.sync)
        described = states.describe_execution(executionArn=arn)
        if described["status"] != "RUNNING":
            described["events"] = states.get_execution_history(executionArn=arn)["events"]
            return described
        time.sleep(0.2)
    raise AssertionError(f"execution {name} still running")


def submitted(endpoint: str) -> list[dict[str, Any]]:
    """Batch's jobs in the order they were submitted."""
    batch = client(endpoint, "batch")
    ids = [
        job["jobId"]
        for queue in (VALUES["JobQueue"], VALUES["GpuJobQueue"])
        for job in batch.list_jobs(jobQueue=queue, filters=[{"name": "JOB_NAME", "values": ["*"]}])[
            "jobSummaryList"
        ]
    ]
    jobs = batch.describe_jobs(jobs=ids)["jobs"] if ids else []
    return sorted(jobs, key=lambda j: j["createdAt"])


@pytest.mark.slow
def test_the_emulator_runs_the_stages_in_dependency_order(
    tmp_path: Path, graph: list[Stage]
) -> None:
    with emulator(tmp_path) as endpoint:
        machine = deploy(endpoint, graph)
        described = execute(endpoint, machine, "run-1", {"overrides": ["optimizer.lr=0.01"]})
        assert described["status"] == "SUCCEEDED", described
        jobs = submitted(endpoint)
    order = [j["jobName"] for j in jobs]
    print("stages in the order Batch got them:", " ".join(order))
    assert sorted(order) == sorted(s.task_id for s in graph)
    for stage in graph:
        assert all(order.index(u) < order.index(stage.task_id) for u in stage.upstream)
        job = next(j for j in jobs if j["jobName"] == stage.task_id)
        assert job["container"]["command"] == [
            "python", "-m", "mlpipeline.ops.orchestrate", "run", stage.name,
            "--repo", "/workspace", "--store", "s3://runs-bucket/mlpipeline-runs",
            *[arg for up in stage.upstream for arg in ("--after", up)],
            "--experiment", "run-1",
        ]  # fmt: skip
        env = {e["name"]: e["value"] for e in job["container"]["environment"]}
        assert json.loads(env["MLPIPELINE_OVERRIDES"]) == ["optimizer.lr=0.01"]
        queue = "gpu" if stage.name == "train" else "cpu"
        assert job["jobQueue"].endswith(f"/{queue}")
    # without input, the run has no overrides
    with emulator(tmp_path) as endpoint:
        machine = deploy(endpoint, graph[:1])
        assert execute(endpoint, machine, "run-2", {})["status"] == "SUCCEEDED"
        env = submitted(endpoint)[0]["container"]["environment"]
        assert {"name": "MLPIPELINE_OVERRIDES", "value": "[]"} in env


@pytest.mark.slow
def test_a_failing_stage_ends_the_execution_with_its_error(
    tmp_path: Path, graph: list[Stage], repo_copy: Path
) -> None:
    # every job fails in this emulator: the first stage's, which the real runner reports
    with emulator(tmp_path, MOTO_SIMPLE_BATCH_FAIL_AFTER="0") as endpoint:
        machine = deploy(endpoint, graph)
        # the runner as the job would run it, with a run's forbidden override: it writes its
        # one-line error to the run's store in the emulator's S3
        store = f"s3://{VALUES['RunBucket']}/{VALUES['RunPrefix']}"
        cli = [sys.executable, "-m", "mlpipeline.ops.orchestrate", "run", "compose", "--repo", "."]
        proc = run([*cli, "--store", store, "--experiment", "run-3"], repo_copy, check=False,
                   AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="testing",
                   AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION=REGION,
                   MLPIPELINE_OVERRIDES='["+callbacks.x._target_=builtins.open"]')  # fmt: skip
        line = one_line_error(proc, "is not in a package a _target_ may name")
        described = execute(endpoint, machine, "run-3", {})
        jobs = submitted(endpoint)
        # a stage whose runner wrote nothing (the container died first): Batch's record
        unread = execute(endpoint, machine, "run-4", {})
    assert described["status"] == "FAILED"
    assert described["error"] == sfn.STAGE_FAILED
    assert described["cause"] == line.removeprefix("error: ")
    assert [j["jobName"] for j in jobs] == ["compose"]  # no stage after it ran
    failed = [e for e in described["events"] if e["type"] == "FailStateEntered"]
    assert json.loads(failed[0]["stateEnteredEventDetails"]["input"])["failure"]
    assert unread["status"] == "FAILED"
    assert json.loads(unread["cause"])["Status"] == "FAILED"  # the job as Batch describes it


@pytest.mark.slow
def test_the_emulator_runs_the_real_stages_through_the_run_store(
    tmp_path: Path, graph: list[Stage], repo_copy: Path
) -> None:
    # the first three stages: enough for real jobs that hand on through the run store (the
    # whole graph would train for minutes); the checkout stands in for the image's /workspace
    stages = graph[:3]
    committed = yaml.safe_load((repo_copy / "dvc.lock").read_text())["stages"]
    with emulator(tmp_path, EMULATOR_JOBS_WORKSPACE=str(repo_copy),
                  EMULATOR_JOBS_PYTHON=sys.executable) as endpoint:  # fmt: skip
        machine = deploy(endpoint, stages)
        described = execute(endpoint, machine, "run-5", {"overrides": ["trainer.max_epochs=3"]})
        logs = {p.name: p.read_text() for p in (repo_copy.parent / "jobs").glob("*.log")}
        assert described["status"] == "SUCCEEDED", (described, logs)
        order = [j["jobName"] for j in submitted(endpoint)]
        keys = client(endpoint, "s3").list_objects_v2(Bucket=VALUES["RunBucket"])["Contents"]
    print("stages in the order they ran:", " ".join(order))
    assert order == [s.task_id for s in stages]
    assert sorted(k["Key"] for k in keys) == sorted(
        f"{VALUES['RunPrefix']}/run-5/{s.name}.json" for s in stages
    )
    # the stages' outputs are those a plain `dvc repro` gave (the committed dvc.lock's)
    lock = yaml.safe_load((repo_copy / "dvc.lock").read_text())["stages"]
    for stage in stages[1:]:
        assert lock[stage.name]["outs"] == committed[stage.name]["outs"]
    # the execution's overrides reached params.yaml through the first stage's job
    assert yaml.safe_load((repo_copy / "params.yaml").read_text())["trainer"]["max_epochs"] == 3
