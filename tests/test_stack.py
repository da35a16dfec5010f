"""The team stack of docker-compose.yml: the Compose files' shape, checked everywhere, and the
real stack (tracking server and model server images built, started, checked, removed) through
mlpipeline.stack.smoke.

The real-stack test is marked `stack` as well as `docker` and `slow`: building the MLflow image
takes minutes (about 5 on the vfs storage driver), so `make test` deselects it and
`make test-stack` (run by .ci/run after `make test`) runs it. It builds from a temporary copy of
what the images need with a tiny model (a clean clone has no pipeline outputs). Without a
daemon or Compose it skips, unless MLPIPELINE_REQUIRE_DOCKER=1 (as in .ci/run): then it fails.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import ROOT
from test_serve import export_tiny_model

from mlpipeline import image as img
from mlpipeline import stack
from mlpipeline.errors import PipelineError

PROJECT = "mlpipelinestackpytest"  # letters only: Compose v1 and v2 name it alike
CONTEXT_FILES = (
    "docker-compose.yml",
    "docker-compose.override.yml",
    "docker-compose.host.yml",
    "Dockerfile",
    "docker/mlflow.Dockerfile",
    ".dockerignore",
    "requirements.lock",
    "scripts/mlflow-server.sh",
    "src/mlpipeline/__init__.py",
    "src/mlpipeline/errors.py",
    "src/mlpipeline/serve.py",
)


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text(encoding="utf-8"))


def test_compose_files_publish_ports_or_use_the_host_network_never_both() -> None:
    base, ports, host = (
        load(f"docker-compose{suffix}.yml") for suffix in ("", ".override", ".host")
    )
    assert set(base["services"]) == set(stack.SERVICES) == set(ports["services"])
    assert set(host["services"]) == set(stack.SERVICES)
    for name, service in base["services"].items():
        # Compose v1 refuses host networking with published ports: those live apart
        assert "ports" not in service and "network_mode" not in service, name
        assert service["build"]["args"]["BASE_IMAGE"] == "${BASE_IMAGE:-python:3.11-slim}"
        assert "network" not in service["build"]
        assert service["healthcheck"]["test"][0] == "CMD"
        assert service["restart"] == "unless-stopped"
        assert host["services"][name]["network_mode"] == "host"
        assert host["services"][name]["build"] == {"network": "host"}
        assert "ports" not in host["services"][name]
    assert base["services"]["mlflow"]["volumes"] == ["mlflow-data:/data"]
    assert "mlflow-data" in base["volumes"]
    assert ports["services"]["mlflow"]["ports"] == ["${MLFLOW_PORT:-5000}:5000"]
    assert ports["services"]["model"]["ports"] == ["${MODEL_PORT:-8080}:8080"]
    assert host["services"]["mlflow"]["environment"]["MLFLOW_PORT"] == "${MLFLOW_PORT:-5000}"
    assert host["services"]["model"]["environment"]["PORT"] == "${MODEL_PORT:-8080}"


def test_the_dockerignore_allow_list_lets_the_mlflow_build_see_its_files() -> None:
    dockerfile = (ROOT / "docker/mlflow.Dockerfile").read_text(encoding="utf-8")
    sources = [
        src
        for line in re.findall(r"^COPY (?!--from)(.+)$", dockerfile, re.MULTILINE)
        for src in line.split()[:-1]
    ]
    allowed = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert sources == ["requirements.lock", "scripts/mlflow-server.sh"]
    assert all(f"!{src}" in allowed for src in [*sources, "docker/mlflow.Dockerfile"])


def test_no_compose_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stack.shutil, "which", lambda _name: None)
    with pytest.raises(PipelineError, match="neither `docker compose` nor `docker-compose`"):
        stack.compose_command()


@pytest.fixture
def client() -> img.docker.DockerClient:
    """The daemon, Compose and the base image, or a skip (a failure where they are required)."""
    required = os.environ.get("MLPIPELINE_REQUIRE_DOCKER") == "1"
    base = os.environ.get("BASE_IMAGE", "python:3.11-slim")
    try:
        docker_client = img.connect()
        stack.compose_command()
        if not required:
            # no registry may be reachable: build only on a base image that is already here
            img.ensure_base_image(docker_client, base)
    except PipelineError as err:
        if required:
            pytest.fail(f"MLPIPELINE_REQUIRE_DOCKER=1 but {err}")
        pytest.skip(str(err))
    return docker_client


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.stack
def test_the_stack_builds_starts_answers_and_goes(
    client: img.docker.DockerClient, tmp_path: Path
) -> None:
    root = tmp_path / "context"
    for name in CONTEXT_FILES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, root / name)
    export_tiny_model(root / "models")
    report = stack.smoke(
        client,
        root,
        np.load(root / "models/x.npy"),
        np.load(root / "models/reference.npy"),
        os.environ.get("BASE_IMAGE", "python:3.11-slim"),
        project=PROJECT,
        images={"mlflow": "mlpipeline-mlflow:pytest", "model": "mlpipeline-serve:stack-pytest"},
        quiet=True,
    )
    print(stack.describe(report))
    assert report.max_abs_diff <= img.ATOL
    assert report.artifact_uri.startswith("mlflow-artifacts:/")
    assert set(report.healthy_s) == set(stack.SERVICES)
    assert report.images == {
        "mlflow": "mlpipeline-mlflow:pytest",
        "model": "mlpipeline-serve:stack-pytest",
    }
    mlflow_image = client.images.get("mlpipeline-mlflow:pytest")
    assert mlflow_image.attrs["Config"]["User"] == "mlflow"
    assert "org.opencontainers.image.revision" in mlflow_image.labels
    # down -v removed the containers and the tracking data's volume
    label = {"label": f"com.docker.compose.project={PROJECT}"}
    assert client.containers.list(all=True, filters=label) == []
    assert client.volumes.list(filters=label) == []
