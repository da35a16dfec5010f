"""The DVC pipeline's stage graph (graph.read_graph) compiled to an AWS Step Functions state
machine (Amazon States Language): one AWS Batch job per stage (`submitJob.sync`) running the
training image with the runner's `run <stage>`, stages of one topological layer in the
branches of a Parallel state, Retry on Batch's transient API errors, and a Catch per stage
that ends the execution in a Fail state whose Cause is the stage's one-line error.

Tasks hand on through the run's store (runstore.py): `s3://${RunBucket}/${RunPrefix}/<execution
name>/<stage>.json`, and `<stage>.error` when a stage fails, which the state machine reads back
for the Fail state's Cause. `${...}` are deploy-time values (CloudFormation's
DefinitionSubstitutions, or `substitute`): RunBucket, RunPrefix, JobQueue, GpuJobQueue,
JobDefinition. docs/orchestration-stepfunctions.md deploys it."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from mlpipeline.errors import PipelineError
from mlpipeline.ops.orchestrate.graph import Stage
from mlpipeline.ops.orchestrate.runstore import ERROR_SUFFIX, object_name

# where the training image keeps the repository (docker/train.Dockerfile's WORKDIR)
WORKSPACE = "/workspace"
OVERRIDES_ENV = "MLPIPELINE_OVERRIDES"
STAGE_FAILED = "StageFailed"
# the placeholders a deployment fills in (CloudFormation's DefinitionSubstitutions)
PLACEHOLDERS = ("RunBucket", "RunPrefix", "JobQueue", "GpuJobQueue", "JobDefinition")
# Batch API errors worth another try; a job that ran and failed (States.TaskFailed) is the
# stage's own error and is not retried here (the job definition's retryStrategy retries lost
# hosts, e.g. reclaimed Spot instances)
TRANSIENT = ["Batch.AWSBatchException", "Batch.ServerException", "Batch.TooManyRequestsException"]
STORE = "s3://${RunBucket}/${RunPrefix}"
DEFAULT_RESOURCES: dict[str, dict[str, Any]] = {"default": {"cpu": 1, "memory": "4Gi"}}
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(Gi|G|Mi|M)?\s*$")
_JOB_NAME = re.compile(r"[^A-Za-z0-9_-]")


def memory_mib(value: object, stage: str) -> int:
    """A memory size (`16Gi`, `512Mi`, a number of MiB) in MiB, as Batch takes it."""
    match = _MEMORY.match(str(value))
    if not match:
        raise PipelineError(
            f"orchestration.resources.{stage}.memory: {value!r} is not a size: "
            "write e.g. 16Gi or 512Mi"
        )
    number, unit = float(match[1]), match[2] or "Mi"
    return int(number * {"Gi": 1024, "G": 1000**3 / 2**20, "Mi": 1, "M": 1000**2 / 2**20}[unit])


def resource_requirements(resources: Mapping[str, Any], stage: str) -> list[dict[str, str]]:
    """Batch's ResourceRequirements for a stage: its entry under `resources`, else `default`."""
    spec = {**resources.get("default", {}), **resources.get(stage, {})}
    result = []
    try:
        if spec.get("cpu"):
            result.append({"Type": "VCPU", "Value": str(float(spec["cpu"])).removesuffix(".0")})
        if spec.get("memory"):
            result.append({"Type": "MEMORY", "Value": str(memory_mib(spec["memory"], stage))})
        if int(spec.get("gpu") or 0) > 0:
            result.append({"Type": "GPU", "Value": str(int(spec["gpu"]))})
    except (TypeError, ValueError) as err:
        raise PipelineError(
            f"orchestration.resources.{stage}: {spec} ({err}): use numbers"
        ) from None
    return result


def _literal(text: str) -> str:
    """A string literal inside an intrinsic function (its quote and braces escaped)."""
    return "'" + re.sub(r"(['{}\\\\])", r"\\\1", text) + "'"


def task_states(stage: Stage, resources: Mapping[str, Any], next_state: str) -> dict[str, Any]:
    """A stage's three states: its Batch job, the reader of its error, and its Fail state."""
    command = ["python", "-m", "mlpipeline.ops.orchestrate", "run", stage.name,
               "--repo", WORKSPACE, "--store"]  # fmt: skip
    # the placeholders stay unescaped: the deployment replaces them before parsing
    parts = [*map(_literal, command), f"'{STORE}'"]
    parts += [_literal(arg) for up in stage.upstream for arg in ("--after", up)]
    parts += [_literal("--experiment"), "$$.Execution.Name"]
    requirements = resource_requirements(resources, stage.name)
    gpu = any(r["Type"] == "GPU" for r in requirements)
    error_file = object_name(stage.name, ERROR_SUFFIX)
    failed, reader = f"{stage.task_id} failed", f"{stage.task_id} error"
    job = {
        "Type": "Task",
        "Resource": "arn:aws:states:::batch:submitJob.sync",
        "Parameters": {
            "JobName": _JOB_NAME.sub("_", stage.task_id),
            "JobQueue": "${GpuJobQueue}" if gpu else "${JobQueue}",
            "JobDefinition": "${JobDefinition}",
            "ContainerOverrides": {
                "Command.$": f"States.Array({', '.join(parts)})",
                "Environment": [
                    {"Name": OVERRIDES_ENV, "Value.$": "States.JsonToString($.overrides)"}
                ],
                "ResourceRequirements": requirements,
            },
        },
        "ResultPath": None,  # the next stage gets the run's input, not Batch's job record
        "Retry": [
            {"ErrorEquals": TRANSIENT, "IntervalSeconds": 10, "MaxAttempts": 3, "BackoffRate": 2}
        ],
        "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.failure", "Next": reader}],
        **({"Next": next_state} if next_state else {"End": True}),
    }
    read_error = {
        "Type": "Task",
        "Resource": "arn:aws:states:::aws-sdk:s3:getObject",
        "Parameters": {
            "Bucket": "${RunBucket}",
            "Key.$": f"States.Format('${{RunPrefix}}/{{}}/{_literal(error_file)[1:-1]}', "
            "$$.Execution.Name)",
        },
        "ResultSelector": {"Cause.$": "$.Body"},
        "ResultPath": "$.failure",
        "Next": failed,
        # no error file (the container died before the runner could write it): Batch's own
        # record of the job (exit code, status reason) stays the cause
        "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.unread", "Next": failed}],
    }
    fail = {"Type": "Fail", "Error": STAGE_FAILED, "CausePath": "$.failure.Cause"}
    return {stage.task_id: job, reader: read_error, failed: fail}


def layers(stages: list[Stage]) -> list[list[Stage]]:
    """The stages in topological layers: each stage one layer after its latest upstream
    stage. A layer waits for the whole layer before it (simpler than one branch per path,
    at the cost of some overlap a free-form DAG would allow)."""
    depth: dict[str, int] = {}
    for stage in stages:  # read_graph's order: dependencies first
        missing = [u for u in stage.upstream if u not in depth]
        if missing:
            raise PipelineError(
                f"stage {stage.name} depends on {', '.join(missing)}, not in the graph "
                "(or after it): compile the whole graph from read_graph"
            )
        depth[stage.name] = 1 + max((depth[u] for u in stage.upstream), default=-1)
    result: list[list[Stage]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for stage in stages:
        result[depth[stage.name]].append(stage)
    return result


def compile_state_machine(
    stages: list[Stage], resources: Mapping[str, Any] | None = None, comment: str = ""
) -> dict[str, Any]:
    """The state machine (ASL as a dict) running `stages` in dependency order. The execution
    input may give `{"overrides": ["optimizer.lr=0.01"]}` (as `dvc exp run -S`); the
    execution's name is the run's id (its folder in the store, DVC_EXP_NAME)."""
    if not stages:
        raise PipelineError("the pipeline has no stages to compile")
    resources = resources or DEFAULT_RESOURCES
    groups = layers(stages)
    names = [
        group[0].task_id if len(group) == 1 else f"layer {i}: {len(group)} stages in parallel"
        for i, group in enumerate(groups)
    ]
    states: dict[str, Any] = {
        # an execution started without input runs with no overrides
        "Run parameters": {
            "Type": "Pass",
            "Parameters": {"defaults": {"overrides": []}, "given.$": "$"},
            "Next": "Merged parameters",
        },
        "Merged parameters": {
            "Type": "Pass",
            "Parameters": {"run.$": "States.JsonMerge($.defaults, $.given, false)"},
            "OutputPath": "$.run",
            "Next": names[0],
        },
    }
    for i, group in enumerate(groups):
        following = names[i + 1] if i + 1 < len(groups) else ""
        if len(group) == 1:
            states.update(task_states(group[0], resources, following))
            continue
        states[names[i]] = {
            "Type": "Parallel",
            "Branches": [
                {"StartAt": s.task_id, "States": task_states(s, resources, "")} for s in group
            ],
            "ResultPath": None,
            **({"Next": following} if following else {"End": True}),
        }
    return {
        "Comment": comment or "the DVC pipeline, one AWS Batch job per stage (mlpipeline)",
        "StartAt": "Run parameters",
        "States": states,
    }


def substitute(definition: str, values: Mapping[str, str]) -> str:
    """The definition with its `${Name}` placeholders filled in, as CloudFormation's
    DefinitionSubstitutions does; PipelineError names any left unfilled."""
    for name, value in values.items():
        definition = definition.replace("${" + name + "}", value)
    left = sorted(set(re.findall(r"\$\{(\w+)\}", definition)))
    if left:
        raise PipelineError(f"no value for {', '.join(left)}: give each a value to deploy")
    return definition


def check_structure(definition: Mapping[str, Any], stages: list[Stage]) -> None:
    """PipelineError unless every Next and StartAt names a state of its scope, every state is
    reachable, and there is exactly one Batch job per stage."""
    jobs: list[str] = []

    def scope(block: Mapping[str, Any], where: str) -> None:
        states = block["States"]
        targets = [block["StartAt"]]
        for name, state in states.items():
            targets += [state["Next"]] if "Next" in state else []
            targets += [c["Next"] for c in state.get("Catch", [])]
            if state.get("Resource", "").startswith("arn:aws:states:::batch"):
                jobs.append(state["Parameters"]["ContainerOverrides"]["Command.$"])
            for i, branch in enumerate(state.get("Branches", [])):
                scope(branch, f"{where}{name} branch {i}: ")
        unknown = sorted(set(targets) - states.keys())
        if unknown:
            raise PipelineError(f"{where}transitions to missing states {unknown}")
        seen, todo = set(), [block["StartAt"]]
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            state = states[name]
            todo += [state["Next"]] if "Next" in state else []
            todo += [c["Next"] for c in state.get("Catch", [])]
        if seen != states.keys():
            raise PipelineError(f"{where}unreachable states {sorted(states.keys() - seen)}")

    scope(definition, "")
    for stage in stages:
        count = sum(f"'run', {_literal(stage.name)}," in job for job in jobs)
        if count != 1:
            raise PipelineError(f"stage {stage.name} has {count} jobs in the state machine, not 1")
    if len(jobs) != len(stages):
        raise PipelineError(f"{len(jobs)} jobs for {len(stages)} stages")


def conf_resources(root: Path) -> dict[str, Any]:
    """`orchestration.resources` of conf/config.yaml (the engines' shared section), else one
    CPU and 4 GiB per stage."""
    path = root / "conf" / "config.yaml"
    try:
        conf = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise PipelineError(f"cannot read {path}: {err}") from None
    section = conf.get("orchestration") or {}
    resources = section.get("resources") or DEFAULT_RESOURCES
    if not isinstance(resources, dict) or not all(isinstance(v, dict) for v in resources.values()):
        raise PipelineError(
            f"{path}: orchestration.resources must map stages to {{cpu, memory, gpu}}"
        )
    return resources


def to_text(definition: Mapping[str, Any]) -> str:
    """The definition as the JSON text a deployment takes."""
    return json.dumps(definition, indent=2) + "\n"
