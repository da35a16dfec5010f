"""The DVC pipeline as a Kubeflow Pipelines (v2) pipeline: one container component per stage
of `read_graph`'s graph, each running the training image's orchestration runner
(`python -m mlpipeline.ops.orchestrate run <stage>`), in two steps run in two environments:

    python -m mlpipeline.ops.orchestrate.kfp plan --params params.yaml --output plan.json
    python -m mlpipeline.ops.orchestrate.kfp compile plan.json --output pipeline.yaml
    python -m mlpipeline.ops.orchestrate.kfp run-local pipeline.yaml --root DIR [--override X]

`plan` runs in the pipeline's environment (DVC reads the graph, the schema checks the
`orchestration` section); `compile` and `run-local` in the Kubeflow SDK's (.venv-kfp: its
lock cannot share the pipeline's), which imports neither DVC nor torch. `make kfp` runs the
first two; `run-local` runs a compiled pipeline without a cluster, with the SDK's local
runner: each task a container of the image on this machine's Docker daemon (the network
DOCKER_NETWORK, default `bridge`), the DVC remote's AWS_* credentials taken from this
environment instead of the secret.

Each task's hand-off is an output artifact (the file the runner writes, `--output`) that the
tasks after it take as input artifacts (`--upstream`): files, as a hand-off's uncached files
(figures) outgrow the 128 kB that one command-line argument may hold; the run's `overrides`
parameter (a list, as `dvc exp run -S` takes them) reaches every task as `--overrides`; the
DVC remote's credentials come from a Kubernetes secret as AWS_* variables. docs/orchestration-kfp.md
tells how to deploy it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlpipeline.errors import PipelineError, exit_on_error
from mlpipeline.ops.orchestrate.graph import Stage, read_graph

PIPELINE_NAME = "mlpipeline"
# where the training image keeps the repository (docker/train.Dockerfile's WORKDIR)
WORKSPACE = "/workspace"
# the secret's keys, as the variables boto3 and DVC read; the first two must be there
SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
OPTIONAL_SECRET_KEYS = ("AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")
GPU_RESOURCE = "nvidia.com/gpu"
# the run's name, which Kubeflow fills in (the SDK's dsl.PIPELINE_JOB_NAME_PLACEHOLDER)
PIPELINE_JOB_NAME = "{{$.pipeline_job_name}}"
HANDOFF = "handoff"
_NOT_IN_NAME = re.compile(r"[^a-z0-9]+")
_COLOUR = re.compile(r"\x1b\[[0-9;]*m")


def plan(root: Path, params: Path) -> dict[str, Any]:
    """What the compiler needs, from the pipeline's environment: the stage graph (DVC's own),
    the training image, the secret's name and each stage's resources (params.yaml's
    `orchestration`, checked). PipelineError names a resources entry for no stage."""
    from mlpipeline.config.schema import load_config  # pydantic: not in the SDK's environment

    orchestration = load_config(params).orchestration
    stages = read_graph(root)
    names = {s.name for s in stages}
    unknown = sorted(set(orchestration.resources) - names - {"default"})
    if unknown:
        raise PipelineError(
            f"orchestration.resources names no stage of the pipeline: {', '.join(unknown)} "
            f"(stages: {', '.join(sorted(names))})"
        )
    return {
        "image": orchestration.image,
        "remote_secret": orchestration.remote_secret,
        "stages": [
            {
                "name": s.name,
                "task_id": s.task_id,
                "upstream": list(s.upstream),
                "resources": orchestration.resources_for(s.name).model_dump(),
            }
            for s in stages
        ],
    }


def component_name(stage: str) -> str:
    """A component's name for a stage address (Kubeflow keeps lower-case letters, digits and
    dashes)."""
    return _NOT_IN_NAME.sub("-", stage.lower()).strip("-") or "stage"


def component_spec(stage: Stage, image: str) -> dict[str, Any]:
    """The stage's container component (Kubeflow's component YAML): the runner with one
    input artifact per upstream task's hand-off, the run's overrides, and its own hand-off as
    output artifact."""
    upstream = [f"upstream_{i}" for i in range(len(stage.upstream))]
    command: list[Any] = [
        "python", "-m", "mlpipeline.ops.orchestrate", "run", stage.name, "--repo", WORKSPACE,
        "--overrides", {"inputValue": "overrides"}, "--experiment", PIPELINE_JOB_NAME,
    ]  # fmt: skip
    for name in upstream:
        command += ["--upstream", {"inputPath": name}]
    command += ["--output", {"outputPath": HANDOFF}]
    return {
        "name": component_name(stage.name),
        "description": f"DVC stage {stage.name}: pull its deps, dvc repro --single-item, push",
        "inputs": [
            {"name": "overrides", "type": "JsonArray"},
            *({"name": n} for n in upstream),
        ],
        "outputs": [{"name": HANDOFF}],
        "implementation": {"container": {"image": image, "command": command}},
    }


def build_pipeline(spec: dict[str, Any]) -> Any:
    """The Kubeflow pipeline function for a `plan` (imports the SDK)."""
    # the SDK's own environment has it; the pipeline's, which imports this module too, has not
    from kfp import components, dsl, kubernetes

    stages = [Stage(s["name"], s["task_id"], tuple(s["upstream"])) for s in spec["stages"]]
    resources = {s["name"]: s["resources"] for s in spec["stages"]}
    made = {
        s.name: components.load_component_from_text(json.dumps(component_spec(s, spec["image"])))
        for s in stages
    }

    def pipeline(overrides: list = []) -> None:  # noqa: B006 (the SDK reads the default)
        tasks: dict[str, Any] = {}
        for stage in stages:
            inputs = {
                f"upstream_{i}": tasks[name].outputs[HANDOFF]
                for i, name in enumerate(stage.upstream)
            }
            task = made[stage.name](overrides=overrides, **inputs)
            task.set_display_name(stage.name)
            # DVC's hashes decide what runs: Kubeflow's cache would replay an old hand-off
            # for a task whose inputs look the same while the revision or the remote changed
            task.set_caching_options(False)
            wanted = resources[stage.name]
            cpu, memory = f"{wanted['cpu']:g}", wanted["memory"]
            task.set_cpu_request(cpu).set_cpu_limit(cpu)
            task.set_memory_request(memory).set_memory_limit(memory)
            if wanted["gpu"]:
                task.set_accelerator_type(GPU_RESOURCE).set_accelerator_limit(wanted["gpu"])
            secret = spec["remote_secret"]
            kubernetes.use_secret_as_env(task, secret, {k: k for k in SECRET_KEYS})
            optional = {k: k for k in OPTIONAL_SECRET_KEYS}
            kubernetes.use_secret_as_env(task, secret, optional, optional=True)
            tasks[stage.name] = task

    # the SDK reads the parameter's type from the annotation, a string under this module's
    # `from __future__ import annotations`
    pipeline.__annotations__ = {"overrides": list, "return": None}
    description = "The DVC pipeline (dvc.yaml), one task per stage"
    return dsl.pipeline(name=PIPELINE_NAME, description=description)(pipeline)


def compile_pipeline(spec: dict[str, Any], output: Path) -> None:
    """Compile a `plan` into Kubeflow's pipeline YAML at `output` (whole, or not at all)."""
    from kfp import compiler  # as in build_pipeline: only the SDK's environment has it

    pipeline = build_pipeline(spec)
    output.parent.mkdir(parents=True, exist_ok=True)
    # mlpipeline.artifacts' atomic_path needs numpy, which the SDK's environment lacks
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=f".{output.name}.") as tmp:
        written = Path(tmp, output.name)  # the output's name: the SDK reads its suffix
        compiler.Compiler().compile(pipeline, str(written))
        os.replace(written, output)


def collect_container_artifacts(collect: Callable[..., dict[str, Any]]) -> Callable[..., Any]:
    """The local runner's collection of a task's outputs, plus the output artifacts that a
    container component wrote: the SDK's own reads only the executor output file, which
    only its Python components write (on a cluster the launcher uploads them)."""
    from kfp.local import executor_output_utils  # as in build_pipeline

    def collect_all(executor_input: Any, component_spec: Any) -> dict[str, Any]:
        outputs = collect(executor_input=executor_input, component_spec=component_spec)
        for name, found in executor_input.outputs.artifacts.items():
            written = found.artifacts[0]
            if name not in outputs and Path(written.uri).is_file():
                outputs[name] = executor_output_utils.runtime_artifact_to_dsl_artifact(written)
        return outputs

    return collect_all


def run_local(pipeline: Path, root: Path, overrides: list[str], network: str) -> None:
    """Run a compiled pipeline with the SDK's local runner, its tasks' outputs under `root`;
    PipelineError names the task that failed (the tasks after it do not run)."""
    from kfp import components, local
    from kfp.local import executor_output_utils  # as in build_pipeline

    if not pipeline.is_file():
        raise PipelineError(f"{pipeline} not found: write it with make kfp")
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    # the image's user is not this one: it writes each task's hand-off under root
    root.chmod(0o777)
    keys = (*SECRET_KEYS, *OPTIONAL_SECRET_KEYS)
    env = {k: os.environ[k] for k in keys if os.environ.get(k)}
    runner = local.DockerRunner(network_mode=network, environment=env)
    local.init(runner=runner, pipeline_root=str(root), raise_on_error=True)
    executor_output_utils.get_outputs_for_task = collect_container_artifacts(
        executor_output_utils.get_outputs_for_task
    )
    try:
        components.load_component_from_file(str(pipeline))(overrides=overrides)
    except RuntimeError as err:  # the SDK's "finished with status FAILURE. Inner task failed"
        raise PipelineError(_COLOUR.sub("", str(err)).strip()) from None


def read_plan(path: Path) -> dict[str, Any]:
    """A plan file written by `plan`; PipelineError if it is missing or not one."""
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
        missing = {"stages", "image", "remote_secret"} - set(spec)
        if missing:
            raise ValueError(f"no {', '.join(sorted(missing))}")
    except (OSError, ValueError, TypeError) as err:
        raise PipelineError(
            f"{path} is not a plan ({err}): write it with "
            "`python -m mlpipeline.ops.orchestrate.kfp plan` (make kfp)"
        ) from None
    return spec


def main(argv: list[str] | None = None) -> None:
    """`plan` or `compile` (module docstring); PipelineError becomes one line."""
    parser = argparse.ArgumentParser(
        prog="python -m mlpipeline.ops.orchestrate.kfp",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    plan_cmd = commands.add_parser("plan", help="the graph and resources, JSON (pipeline env)")
    plan_cmd.add_argument("--repo", type=Path, default=Path("."), help="the DVC repository")
    plan_cmd.add_argument("--params", type=Path, default=Path("params.yaml"))
    plan_cmd.add_argument("--output", type=Path, required=True)
    compile_cmd = commands.add_parser("compile", help="the pipeline YAML (Kubeflow SDK env)")
    compile_cmd.add_argument("plan", type=Path, help="a file `plan` wrote")
    compile_cmd.add_argument("--output", type=Path, required=True)
    local_cmd = commands.add_parser("run-local", help="run it on this Docker daemon (SDK env)")
    local_cmd.add_argument("pipeline", type=Path, help="the compiled pipeline YAML")
    local_cmd.add_argument("--root", type=Path, required=True, help="the tasks' outputs")
    local_cmd.add_argument(
        "--override", action="append", default=[], help="a Hydra override, as dvc exp run -S"
    )
    args = parser.parse_args(argv)

    with exit_on_error("interrupted"):
        if args.command == "plan":
            from mlpipeline.artifacts import write_text  # numpy: not in the SDK's environment

            write_text(args.output, json.dumps(plan(args.repo, args.params), indent=2) + "\n")
        elif args.command == "compile":
            compile_pipeline(read_plan(args.plan), args.output)
        else:
            network = os.environ.get("DOCKER_NETWORK", "bridge")
            run_local(args.pipeline, args.root, args.override, network)
            return
        print(f"wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
