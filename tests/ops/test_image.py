"""The serving image, built from this repository's Dockerfile and run for real through the
Docker SDK: every endpoint and every bad request over HTTP against the container.

The build context is a temporary copy of what the Dockerfile needs, with a small CNN exported
by the export stage's own function (a clean clone has no pipeline outputs). Without a daemon
these tests skip, unless MLPIPELINE_REQUIRE_DOCKER=1 (as in .ci/run), where they fail.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import numpy as np
import pytest
from docker.models.images import Image
from filelock import FileLock
from helpers import (
    MAX_BATCH,
    MAX_BODY,
    ROOT,
    ROW,
    bad_requests,
    copy_serving,
    export_tiny_image_model,
    export_tiny_model,
)
from prometheus_client.parser import text_string_to_metric_families

from mlpipeline.artifacts import md5_file
from mlpipeline.ops import image as img
from mlpipeline.ops import smoke as checks
from mlpipeline.ops.docker import DockerSettings, Running, free_port, health, running

BAD = bad_requests()
TAG = "mlpipeline-serve:pytest"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="session")
def context(shared_dir: Path) -> Path:
    """Dockerfile, .dockerignore, the lock, the serving package and a tiny model."""
    root = shared_dir / "image-context"
    with FileLock(shared_dir / "image-context.lock"):
        if (root / "models/reference.npy").is_file():  # written last: another worker made it
            return root
        for name in (
            "Dockerfile",
            ".dockerignore",
            "pyproject.toml",
            "uv.lock",
            "docker/locked.py",
        ):
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, root / name)
        copy_serving(root)
        export_tiny_model(root / "models")
    return root


@pytest.fixture(scope="session")
def image(
    client: docker.DockerClient, context: Path, shared_dir: Path, settings: DockerSettings
) -> Image:
    """The image, built by the first worker to get here; the others reuse it. It stays
    tagged TAG after the run (the next run replaces it), as workers finish at different times."""
    marker = shared_dir / "image-id"
    with FileLock(shared_dir / "image.lock"):
        if marker.is_file():
            return client.images.get(marker.read_text())
        try:
            previous = client.images.get(TAG).id
        except docker.errors.ImageNotFound:
            previous = None
        built = img.build_image(
            client,
            context,
            TAG,
            settings.base_image,
            settings.docker_network,
            git_commit=COMMIT,
            quiet=True,
        )
        if previous and previous != built.id:
            with contextlib.suppress(docker.errors.DockerException):
                client.images.remove(previous)
        marker.write_text(built.id)
        return built


@pytest.fixture(scope="module")
def service(
    client: docker.DockerClient, image: Image, settings: DockerSettings
) -> Iterator[Running]:
    env = {"MAX_BATCH": str(MAX_BATCH), "MAX_BODY_BYTES": str(MAX_BODY)}
    with running(client, TAG, free_port(), settings.docker_network, env) as run:
        yield run


@pytest.fixture
def http(service: Running) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.url, timeout=30) as http_client:
        yield http_client


@pytest.mark.docker
def test_predict_matches_the_reference_outputs(http: httpx.Client, context: Path) -> None:
    x = np.load(context / "models/x.npy")
    reference = np.load(context / "models/reference.npy")
    probs, classes = checks.predict_all(str(http.base_url), x, MAX_BATCH)
    assert checks.compare(probs, classes, reference, [str(c) for c in range(10)]) <= checks.ATOL


@pytest.mark.docker
def test_health_ready_metadata(http: httpx.Client, context: Path) -> None:
    assert http.get("/health").json() == {"status": "ok"}
    assert http.get("/ready").json()["status"] == "ready"
    meta = http.get("/metadata").json()
    card = json.loads((context / "models/model_card.json").read_text())
    assert {k: meta[k] for k in card} == card
    assert meta["git_commit"] == COMMIT
    assert meta["serving"] == {
        "max_batch": MAX_BATCH,
        "max_body_bytes": MAX_BODY,
        "drift_metrics": True,
    }


@pytest.mark.docker
def test_metrics_over_http(http: httpx.Client) -> None:
    http.post("/predict", json={"inputs": [np.zeros(ROW).tolist()] * 3})
    http.post("/predict", content=b"[", headers={"content-type": "application/json"})
    samples = [
        s for f in text_string_to_metric_families(http.get("/metrics").text) for s in f.samples
    ]

    def total(name: str, **labels: str) -> float:
        return sum(
            s.value
            for s in samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )

    assert total("http_requests_total", route="/predict", status="200") >= 1
    assert total("http_request_errors_total", route="/predict", status="400") >= 1
    assert total("http_request_duration_seconds_count", route="/predict") >= 2
    assert total("predict_batch_size_sum") >= 3


@pytest.mark.docker
@pytest.mark.parametrize(("body", "content_type", "status", "message"), [b[1:] for b in BAD])
def test_bad_request_over_http_gets_a_4xx(
    http: httpx.Client, body: bytes, content_type: str | None, status: int, message: str
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    answer = http.post("/predict", content=body, headers=headers)
    assert answer.status_code == status, answer.text
    assert message in answer.json()["error"]
    assert http.post("/predict", json={"inputs": [np.zeros(ROW).tolist()]}).status_code == 200


@pytest.mark.docker
def test_wrong_method_unknown_path_and_no_api_pages(http: httpx.Client) -> None:
    assert http.get("/predict").status_code == 405
    assert http.get("/nothing").json() == {"error": "Not Found"}
    # the image sets API_DOCS=false
    assert [http.get(p).status_code for p in ("/docs", "/redoc", "/openapi.json")] == [404] * 3


@pytest.mark.docker
def test_image_is_non_root_labelled_healthy_and_without_torch(
    image: Image, service: Running, context: Path
) -> None:
    assert image.attrs["Config"]["User"] == "app"
    labels = image.labels
    assert labels["org.opencontainers.image.revision"] == COMMIT
    assert labels["io.mlpipeline.model.md5"] == md5_file(context / "models/model.onnx")
    assert "org.opencontainers.image.source" in labels
    assert health(service.container) == "healthy"
    assert image.attrs["Config"]["ExposedPorts"] == {"8080/tcp": {}}
    probe = (
        "import importlib.util as u, os, shutil; "
        "print(os.getuid(), [m for m in ('torch', 'pip', 'sympy') if u.find_spec(m)], "
        "[c for c in ('gcc', 'cc', 'curl') if shutil.which(c)])"
    )
    code, out = service.container.exec_run(["python", "-c", probe])
    assert code == 0, out
    assert out.decode().split() == ["10001", "[]", "[]"]


@pytest.mark.docker
def test_smoke_reports_size_and_time_to_ready(
    client: docker.DockerClient,
    image: Image,
    context: Path,
    settings: DockerSettings,
    base_image: str,
) -> None:
    report = img.smoke(
        client,
        TAG,
        base_image,
        np.load(context / "models/x.npy"),
        np.load(context / "models/reference.npy"),
        network=settings.docker_network,
    )
    assert report.rows == 50 and report.max_abs_diff <= checks.ATOL
    assert report.health == "healthy" and report.user == "app"
    assert report.image_mb > report.base_mb > 0 and report.ready_s > 0
    # the budget: what the image adds to its base (torch or pip creeping in breaks it)
    assert report.image_mb - report.base_mb <= 170
    assert "added" in img.describe(report)


@pytest.mark.docker
def test_an_image_model_in_the_image_takes_uploaded_files(
    client: docker.DockerClient,
    image: Image,
    context: Path,
    settings: DockerSettings,
    base_image: str,
    tmp_path: Path,
) -> None:
    """The image built around a model that takes image files (the decoder copied beside the
    service): every file uploaded as multipart, answered as the reference; torch-free still."""
    root = Path(
        shutil.copytree(context, tmp_path / "context", ignore=shutil.ignore_patterns("models"))
    )
    models = export_tiny_image_model(root / "models")
    tag = "mlpipeline-serve:pytest-images"
    img.build_image(
        client, root, tag, settings.base_image, settings.docker_network, COMMIT, quiet=True
    )
    try:
        files = sorted((models / "files").iterdir())
        reference = np.load(models / "reference.npy")
        report = img.smoke(
            client, tag, base_image, files, reference, network=settings.docker_network
        )
        assert report.rows == len(files) and report.max_abs_diff <= checks.ATOL
        assert report.health == "healthy"
        # the budget for an image that decodes images (Pillow added): 200 MB over its base
        assert report.image_mb - report.base_mb <= 200
    finally:
        with contextlib.suppress(docker.errors.DockerException):
            client.images.remove(tag)


@pytest.mark.parametrize(
    "module, command",
    [
        ("mlpipeline.ops.image", "build"),
        ("mlpipeline.ops.image", "smoke"),
        ("mlpipeline.ops.stack", "smoke"),
    ],
)
def test_cli_without_a_daemon_says_so_in_one_line(
    module: str, command: str, tmp_path: Path
) -> None:
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((1, *ROW), dtype=np.float32))
    extra = ["--test", str(tmp_path), "--reference", str(x)] if command == "smoke" else []
    proc = subprocess.run(
        [sys.executable, "-m", module, command, *extra],
        # a tag given: a new project has no params.yaml to name the image from before its first run
        env={**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock", "IMAGE_TAG": "t:1"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: no Docker daemon answers at unix://"), proc.stderr
    assert proc.stderr.count("\n") == 1
