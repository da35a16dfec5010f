"""The pipeline compiled for Kubeflow Pipelines: the plan from DVC's graph and conf/ (the
pipeline's environment), the compiled YAML (the Kubeflow SDK's, `make kfp-install`), and, in
the slow tier, the compiled pipeline run by the SDK's local runner in containers of the
training image against plain `dvc repro`."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml
from dvc.utils.serialize import load_yaml
from helpers import (
    ROOT,
    STAGES,
    commit_all,
    copy_tracked_files,
    one_line_error,
    run,
    s3_client,
    s3_env,
    set_in_conf,
)
from test_airflow import s3_remote

from mlpipeline.errors import PipelineError
from mlpipeline.ops.docker import DockerSettings
from mlpipeline.ops.orchestrate.graph import read_graph
from mlpipeline.ops.orchestrate.handoff import Handoff, merge
from mlpipeline.ops.orchestrate.kfp import HANDOFF as HANDOFF_FILE
from mlpipeline.ops.orchestrate.kfp import component_name, plan

KFP_PYTHON = ROOT / ".venv-kfp" / "bin" / "python"
RESOURCES = {
    "default": {"cpu": 1, "memory": "2Gi"},
    "train": {"cpu": 4, "memory": "16Gi", "gpu": 1},
}


def with_orchestration(repo: Path, **section: Any) -> Path:
    """The repository's params.yaml with this `orchestration` section, as a new file."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["orchestration"] = section
    path = repo.parent / "params-orchestration.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def kfp_cli(*args: str, cwd: Path) -> Any:
    """`python -m mlpipeline.ops.orchestrate.kfp` in the Kubeflow SDK's environment."""
    if not KFP_PYTHON.is_file():
        pytest.fail(f"{KFP_PYTHON} not found: make kfp-install (make test runs it)")
    return run([str(KFP_PYTHON), "-m", "mlpipeline.ops.orchestrate.kfp", *args], cwd, check=False)


def compiled(repo: Path, params: Path) -> dict[str, Any]:
    """The plan of `repo` with `params`, compiled; the YAML's two documents (the pipeline,
    then its Kubernetes settings)."""
    plan_file, out = repo.parent / "plan.json", repo.parent / "pipeline.yaml"
    plan_file.write_text(json.dumps(plan(repo, params)))
    proc = kfp_cli("compile", str(plan_file), "--output", str(out), cwd=repo)
    assert proc.returncode == 0, proc.stderr
    pipeline, platform = yaml.safe_load_all(out.read_text())
    return {"pipeline": pipeline, "kubernetes": platform["platforms"]["kubernetes"]}


def test_the_plan_is_dvcs_graph_with_each_stages_resources(repo_copy: Path) -> None:
    params = with_orchestration(repo_copy, image="registry.example.com/train:1",
                                remote_secret="s3-creds", resources=RESOURCES)  # fmt: skip
    spec = plan(repo_copy, params)
    stages = read_graph(repo_copy)
    assert [(s["name"], tuple(s["upstream"])) for s in spec["stages"]] == [
        (s.name, s.upstream) for s in stages
    ]
    by_name = {s["name"]: s["resources"] for s in spec["stages"]}
    assert by_name["train"] == {"cpu": 4, "memory": "16Gi", "gpu": 1}
    assert by_name["compose"] == {"cpu": 1, "memory": "2Gi", "gpu": 0}
    assert (spec["image"], spec["remote_secret"]) == ("registry.example.com/train:1", "s3-creds")


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"resources": {"default": {"cpu": 1, "memory": "4Gi"}, "trian": {"cpu": 1,
          "memory": "1Gi"}}}, "orchestration.resources names no stage of the pipeline: trian"),
        ({"resources": {"default": {"cpu": 1, "memory": "16GB"}}}, "orchestration.resources"),
        ({"resources": {"train": {"cpu": 1, "memory": "1Gi"}}}, "needs a `default` entry"),
        ({"remote_secret": "DVC_Remote"}, "remote_secret"),
    ],
    ids=["unknown-stage", "memory", "no-default", "secret-name"],
)  # fmt: skip
def test_a_bad_orchestration_section_is_one_line(
    repo_copy: Path, section: dict[str, Any], message: str
) -> None:
    with pytest.raises(PipelineError, match=message) as err:
        plan(repo_copy, with_orchestration(repo_copy, **section))
    assert "\n" not in str(err.value)


def test_the_compiled_pipeline_runs_each_stage_after_its_upstream_in_the_image(
    repo_copy: Path,
) -> None:
    params = with_orchestration(repo_copy, image="registry.example.com/train:1",
                                remote_secret="s3-creds", resources=RESOURCES)  # fmt: skip
    out = compiled(repo_copy, params)
    pipeline, kubernetes = out["pipeline"], out["kubernetes"]
    stages = read_graph(repo_copy)
    tasks = pipeline["root"]["dag"]["tasks"]
    assert sorted(tasks) == sorted(component_name(s.name) for s in stages)
    assert pipeline["root"]["inputDefinitions"]["parameters"]["overrides"]["parameterType"] == (
        "LIST"
    )
    executors = pipeline["deploymentSpec"]["executors"]
    for stage in stages:
        task = tasks[component_name(stage.name)]
        # the edges are read_graph's, each carrying the upstream task's hand-off
        assert sorted(task.get("dependentTasks", [])) == sorted(
            component_name(u) for u in stage.upstream
        )
        sources = [a["taskOutputArtifact"] for a in task["inputs"].get("artifacts", {}).values()]
        assert sorted(s["producerTask"] for s in sources) == sorted(
            component_name(u) for u in stage.upstream
        )
        assert task["inputs"]["parameters"]["overrides"] == {"componentInputParameter": "overrides"}
        assert not task["cachingOptions"].get("enableCache")  # DVC decides what runs
        container = executors[task["componentRef"]["name"].replace("comp-", "exec-")]["container"]
        assert container["image"] == "registry.example.com/train:1"
        command = container["command"]
        assert command[:5] == ["python", "-m", "mlpipeline.ops.orchestrate", "run", stage.name]
        assert command.count("--upstream") == len(stage.upstream)
        assert command[-2:] == ["--output", "{{$.outputs.artifacts['handoff'].path}}"]
        assert command[command.index("--overrides") + 1] == "{{$.inputs.parameters['overrides']}}"
        # the run's name, so that compose keeps the overrides (as under dvc exp run)
        assert command[command.index("--experiment") + 1] == "{{$.pipeline_job_name}}"
        # the DVC remote's credentials come from the secret, as AWS_* variables
        secrets = kubernetes["deploymentSpec"]["executors"][
            task["componentRef"]["name"].replace("comp-", "exec-")
        ]["secretAsEnv"]
        assert {s["secretName"] for s in secrets} == {"s3-creds"}
        required = next(s for s in secrets if not s["optional"])
        assert [k["envVar"] for k in required["keyToEnv"]] == [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
        ]
    train = executors["exec-train"]["container"]["resources"]
    assert (train["resourceCpuLimit"], train["resourceMemoryLimit"]) == ("4", "16Gi")
    assert train["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert train["accelerator"]["resourceCount"] == "1"
    compose = executors["exec-compose"]["container"]["resources"]
    assert (compose["resourceCpuRequest"], compose["resourceMemoryRequest"]) == ("1", "2Gi")
    assert "accelerator" not in compose


def test_compile_says_what_is_wrong_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "plan.json").write_text("{}")
    proc = kfp_cli("compile", "plan.json", "--output", "pipeline.yaml", cwd=tmp_path)
    one_line_error(proc, "plan.json is not a plan", "make kfp")
    assert not (tmp_path / "pipeline.yaml").exists()


# Kubeflow's local runner, in containers of the training image (the slow tier)


def handoffs(root: Path) -> list[Handoff]:
    """Every task's hand-off (output parameter) the local runner left under `root`."""
    return [Handoff.decode(p.read_text().strip()) for p in sorted(root.rglob(HANDOFF_FILE))]


def local_run(pipeline: Path, root: Path, cwd: Path, env: dict[str, str], *overrides: str):
    """`run-local` of a compiled pipeline, with the DVC remote's credentials in `env`."""
    cmd = [str(KFP_PYTHON), "-m", "mlpipeline.ops.orchestrate.kfp", "run-local", str(pipeline),
           "--root", str(root), *(f"--override={o}" for o in overrides)]  # fmt: skip
    return run(cmd, cwd, check=False, **env)


def executed(output: str) -> list[str]:
    """The tasks the local runner started, in order."""
    return re.findall(r"Executing task '([^']+)'", re.sub(r"\x1b\[[0-9;]*m", "", output))


@pytest.mark.slow
@pytest.mark.docker
def test_the_compiled_pipeline_run_locally_gives_dvc_repros_lock_and_stops_at_a_failure(
    client: docker.DockerClient,
    settings: DockerSettings,
    tiny_baseline: Path,
    tmp_path: Path,
    s3_server: str,
) -> None:
    from mlpipeline.ops.train_image import TrainImageSettings, build_train_image

    # the whole default pipeline: the lock's equality needs every stage; tiny_baseline is
    # the same commit reproduced by plain `dvc repro` (two-epoch training)
    origin = copy_tracked_files(tmp_path / "origin", demo=True)
    set_in_conf(origin, "trainer/default.yaml", "max_epochs", 2)
    commit_all(origin, "two-epoch training")
    s3_remote(origin, s3_server)
    tag = "mlpipeline-train:kfp-pytest"
    build_train_image(origin, TrainImageSettings(), tag=tag, quiet=True)
    try:
        spec = {**plan(origin, origin / "params.yaml"), "image": tag}
        (tmp_path / "plan.json").write_text(json.dumps(spec))
        pipeline = tmp_path / "pipeline.yaml"
        proc = kfp_cli("compile", "plan.json", "--output", str(pipeline), cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        # the credentials the secret gives on a cluster; a daemon without a bridge network
        # (DOCKER_NETWORK=host) reaches the remote on loopback
        env = {**s3_env(tmp_path), "AWS_ENDPOINT_URL": s3_server,
               "DOCKER_NETWORK": settings.docker_network}  # fmt: skip

        proc = local_run(pipeline, tmp_path / "run-1", tmp_path, env)
        out = proc.stdout + proc.stderr
        (tmp_path / "run-1.log").write_text(out)
        assert proc.returncode == 0, out[-5000:]
        assert sorted(executed(out)) == sorted(component_name(s) for s in STAGES)
        # every task's lock entries agree (merge refuses two versions of one stage), and
        # together they are plain `dvc repro`'s dvc.lock, read as DVC reads it (YAML 1.2)
        ran = merge(None, handoffs(tmp_path / "run-1"))
        baseline = load_yaml(str(tiny_baseline / "dvc.lock"))["stages"]
        assert json.loads(json.dumps(ran.stages)) == json.loads(json.dumps(baseline))
        keys = s3_client(s3_server).list_objects_v2(Bucket="dvc-storage", Prefix="p/files/md5/")
        assert keys.get("KeyCount", 0) > 0

        # a value the schema lets through and the optimizer refuses: the stages before the
        # training run (or find their outputs), the first that builds the optimizer fails
        # with the runner's one line, and no task after it starts
        proc = local_run(pipeline, tmp_path / "run-2", tmp_path, env, "optimizer.weight_decay=-1")
        out = proc.stdout + proc.stderr
        (tmp_path / "run-2.log").write_text(out)
        # run-local's own error is one line; the failing stage's log is the stage's to keep
        assert proc.returncode != 0
        failed = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
        assert len(failed) == 1 and "Inner task failed" in failed[0], proc.stderr[-3000:]
        stage = re.search(r"Inner task failed: '([^']+)'", failed[0]).group(1)
        assert stage in ("train", "crossval"), failed
        assert f"error: stage {stage} failed" in out and "weight_decay" in out, out[-5000:]
        started = executed(out)
        assert started[-1] == stage and {"compose", "ingest", "prepare", "features"} <= set(started)
        assert not {"evaluate", "profile", "export", "register"} & set(started)
    finally:
        client.images.remove(tag, force=True)
