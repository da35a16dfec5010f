"""The team stack of docker-compose.yml: the Compose file's shape, checked everywhere, and the
real stack (tracking server and model server images built, started with Prometheus, checked,
removed) through mlpipeline.ops.stack.smoke(monitoring=True).

The real-stack test is a `docker` test, so in the slow tier (`make test-all`). It builds from a
temporary copy of what the images need with a tiny model (a clean clone has no pipeline
outputs). Without a daemon or Compose it skips, unless MLPIPELINE_REQUIRE_DOCKER=1 (as in
.ci/run): then it fails.

Prometheus runs the Compose file's image (PROMETHEUS_IMAGE, default the official one). On a
daemon that reaches no registry, STANDIN_PROMETHEUS=1 (as .ci/run sets it) builds a stand-in
from BASE_IMAGE with Debian's Prometheus (prometheus-standin.Dockerfile) and uses that.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import (
    REQUIRED,
    ROOT,
    copy_serving,
    export_tiny_model,
    free_port,
    host_network_compose_file,
)

from mlpipeline.errors import PipelineError
from mlpipeline.ops import smoke as checks
from mlpipeline.ops import stack
from mlpipeline.ops.docker import DockerSettings, dockerfile_base

PROJECT = "mlpipelinestackpytest"  # letters only: Compose v1 and v2 name it alike
CONTEXT_FILES = (
    "docker-compose.yml",
    "Dockerfile",
    "docker/mlflow.Dockerfile",
    ".dockerignore",
    "pyproject.toml",
    "uv.lock",
    "docker/locked.py",
    "scripts/mlflow-server.sh",
    "monitoring/prometheus/prometheus.yml",
    str(stack.RULES),
)
STANDIN_PROMETHEUS = "local/prometheus:pytest"


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text(encoding="utf-8"))


BASE = dockerfile_base(ROOT / "Dockerfile")


def built(spec: dict) -> dict:
    """The services this repository builds (the monitoring ones run official images)."""
    return {name: s for name, s in spec["services"].items() if "build" in s}


def test_the_base_image_is_pinned_by_digest_and_the_same_everywhere() -> None:
    assert re.fullmatch(r"python:3\.11-slim@sha256:[0-9a-f]{64}", BASE)
    assert dockerfile_base(ROOT / "docker/mlflow.Dockerfile") == BASE
    services = built(load("docker-compose.yml"))
    assert {s["build"]["args"]["BASE_IMAGE"] for s in services.values()} == {
        f"${{BASE_IMAGE:-{BASE}}}"
    }


def test_the_compose_file_publishes_ports_on_loopback_unless_told_otherwise() -> None:
    base = load("docker-compose.yml")
    assert set(built(base)) == set(stack.SERVICES)
    for name, service in built(base).items():
        assert service["build"]["args"]["BASE_IMAGE"] == f"${{BASE_IMAGE:-{BASE}}}"
        assert "network" not in service["build"] and "network_mode" not in service, name
        assert service["healthcheck"]["test"][0] == "CMD"
        assert service["restart"] == "unless-stopped"
    assert base["services"]["mlflow"]["volumes"] == ["mlflow-data:/data"]
    assert "mlflow-data" in base["volumes"]
    assert base["services"]["mlflow"]["ports"] == [
        "${MLFLOW_BIND:-127.0.0.1}:${MLFLOW_PORT:-5000}:5000"
    ]
    assert base["services"]["model"]["ports"] == [
        "${MODEL_BIND:-127.0.0.1}:${MODEL_PORT:-8080}:8080"
    ]


def test_the_monitoring_services_scrape_the_model_and_load_the_rules_and_dashboards() -> None:
    # declared for users (profile "monitoring"); the stack test starts Prometheus, not Grafana
    base = load("docker-compose.yml")
    monitoring = {n: s for n, s in base["services"].items() if "build" not in s}
    assert set(monitoring) == {"prometheus", "grafana"}
    for name, service in monitoring.items():
        assert service["profiles"] == ["monitoring"], name
        assert service["healthcheck"]["test"][0] == "CMD", name
        assert service["restart"] == "unless-stopped", name
        (port,) = service["ports"]
        assert port.startswith(f"${{{name.upper()}_BIND:-127.0.0.1}}:"), port
    prometheus = monitoring["prometheus"]
    assert prometheus["depends_on"]["model"]["condition"] == "service_healthy"
    mounts = dict(v.split(":")[:2] for v in prometheus["volumes"] if v.startswith("./"))
    assert mounts["./monitoring/prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    config = load("monitoring/prometheus/prometheus.yml")
    assert mounts["./monitoring/prometheus/rules.yml"] in config["rule_files"]
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "model" and job["static_configs"] == [{"targets": ["model:8080"]}]
    assert monitoring["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"


def test_the_dockerignore_allow_list_lets_the_mlflow_build_see_its_files() -> None:
    dockerfile = (ROOT / "docker/mlflow.Dockerfile").read_text(encoding="utf-8")
    sources = [
        src
        for line in re.findall(r"^COPY (?!--from)(.+)$", dockerfile, re.MULTILINE)
        for src in line.split()[:-1]
    ]
    allowed = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert sources == ["pyproject.toml", "uv.lock", "docker/locked.py", "scripts/mlflow-server.sh"]
    assert all(f"!{src}" in allowed for src in [*sources, "docker/mlflow.Dockerfile"])


def test_no_compose_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stack.shutil, "which", lambda _name: None)
    with pytest.raises(PipelineError, match="neither `docker compose` nor `docker-compose`"):
        stack.compose_command()


def test_the_rule_groups_expected_are_those_of_the_rule_file() -> None:
    groups = stack.expected_rule_groups(ROOT / stack.RULES)
    assert set(groups) == {"model-drift", "model-alerts"}
    assert all(count > 0 for count in groups.values())


def test_a_prometheus_that_does_not_answer_says_so() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(PipelineError, match=f"Prometheus {url}"):
        stack.check_prometheus(url, ROOT / stack.RULES)


def test_the_host_network_variant_keeps_prometheus_on_the_model_port(tmp_path: Path) -> None:
    for name in ("docker-compose.yml", "monitoring/prometheus/prometheus.yml"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, tmp_path / name)
    spec = yaml.safe_load(host_network_compose_file(tmp_path, 18080).read_text(encoding="utf-8"))
    assert set(spec["services"]) == {*stack.SERVICES, *stack.MONITORING}
    prometheus = spec["services"]["prometheus"]
    assert prometheus["network_mode"] == "host" and "ports" not in prometheus
    assert "--web.listen-address=127.0.0.1:${PROMETHEUS_PORT:-9090}" in prometheus["command"]
    (mount,) = [
        v for v in prometheus["volumes"] if v.endswith(":/etc/prometheus/prometheus.yml:ro")
    ]
    config = yaml.safe_load((tmp_path / mount.split(":")[0]).read_text(encoding="utf-8"))
    assert config["scrape_configs"][0]["static_configs"] == [{"targets": ["127.0.0.1:18080"]}]
    without = yaml.safe_load(host_network_compose_file(tmp_path).read_text(encoding="utf-8"))
    assert set(without["services"]) == set(stack.SERVICES)


@pytest.fixture
def prometheus_image(
    client,
    settings: DockerSettings,
    base_image: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> str:
    """The Prometheus image the stack runs: with STANDIN_PROMETHEUS=1 a stand-in built here
    from BASE_IMAGE (no registry serves the official one to such a daemon), else the Compose
    file's."""
    if os.environ.get("STANDIN_PROMETHEUS") != "1":
        return os.environ.get("PROMETHEUS_IMAGE", "")
    context = tmp_path / "prometheus-standin"
    context.mkdir()
    shutil.copy2(Path(__file__).with_name("prometheus-standin.Dockerfile"), context / "Dockerfile")
    client.images.build(
        path=str(context),
        tag=STANDIN_PROMETHEUS,
        buildargs={"BASE_IMAGE": base_image},
        network_mode=settings.docker_network,
        rm=True,
    )
    monkeypatch.setenv("PROMETHEUS_IMAGE", STANDIN_PROMETHEUS)
    return STANDIN_PROMETHEUS


@pytest.mark.docker
def test_the_stack_builds_starts_answers_and_goes(
    client,
    settings: DockerSettings,
    base_image: str,
    prometheus_image: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    try:
        stack.compose_command()
    except PipelineError as err:
        pytest.fail(str(err)) if REQUIRED else pytest.skip(str(err))
    root = tmp_path / "context"
    for name in CONTEXT_FILES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, root / name)
    copy_serving(root)
    export_tiny_model(root / "models")
    ports = {"model": free_port()}
    if settings.docker_network == "host":
        monkeypatch.setenv("COMPOSE_FILE", str(host_network_compose_file(root, ports["model"])))
    report = stack.smoke(
        client,
        root,
        np.load(root / "models/x.npy"),
        np.load(root / "models/reference.npy"),
        base_image,
        project=PROJECT,
        images={"mlflow": "mlpipeline-mlflow:pytest", "model": "mlpipeline-serve:stack-pytest"},
        quiet=True,
        monitoring=True,
        ports=ports,
    )
    print(stack.describe(report))
    assert report.max_abs_diff <= checks.ATOL
    assert report.artifact_uri.startswith("mlflow-artifacts:/")
    assert set(report.healthy_s) == {*stack.SERVICES, *stack.MONITORING}
    # Prometheus scraped the model server on its host port, and loaded every rule group
    assert report.scrape["health"] == "up"
    target = f"127.0.0.1:{ports['model']}" if settings.docker_network == "host" else "model:8080"
    assert report.scrape["scrapeUrl"] == f"http://{target}/metrics"
    assert report.rule_groups == stack.expected_rule_groups(ROOT / stack.RULES)
    if prometheus_image:
        assert report.images["prometheus"] == prometheus_image
    assert {s: report.images[s] for s in stack.SERVICES} == {
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
