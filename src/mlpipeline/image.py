"""The serving image, through the Docker SDK: build it, then smoke-test it.

    python -m mlpipeline.image build   # docker build (classic builder, host network)
    python -m mlpipeline.image smoke   # run it, wait until ready, check the test split

`build` passes BASE_IMAGE (env, default python:3.11-slim), GIT_COMMIT, MODEL_MD5 and SOURCE_URL
as build arguments. `smoke` starts a container with host networking (Docker daemons without a
bridge network cannot publish ports), times it from start to ready, sends the test split and
compares the answers with the export stage's reference probabilities, waits for the image's
HEALTHCHECK to pass, and reports image size, size added over the base image and time to ready.
Without a Docker daemon either command says so in one line and exits 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import docker
import httpx
import numpy as np
from docker.errors import APIError, DockerException, ImageNotFound
from docker.models.containers import Container
from docker.models.images import Image
from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from mlpipeline.artifacts import md5_file
from mlpipeline.errors import PipelineError, exit_on_error

MB = 1e6
ATOL = 1e-5
SIZE_GOAL_MB, READY_GOAL_S = 170, 3.0


class ImageSettings(BaseSettings):
    """Defaults for the command line, from environment variables BASE_IMAGE and IMAGE_TAG."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    base_image: str = "python:3.11-slim"
    image_tag: str = "mlpipeline-serve:latest"


@dataclass(frozen=True)
class SmokeReport:
    """What `smoke` measured and checked."""

    image: str
    image_mb: float
    base_image: str
    base_mb: float
    added_mb: float
    create_s: float
    ready_s: float
    rows: int
    max_abs_diff: float
    health: str
    user: str
    labels: dict[str, str]


def connect() -> docker.DockerClient:
    """A client for the daemon named by DOCKER_HOST (default: the local socket), checked
    with a ping; PipelineError in one line when none answers."""
    try:
        client = docker.from_env()
        client.ping()
    except DockerException as err:
        where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        reason = str(err).splitlines()[0][:200]
        raise PipelineError(
            f"no Docker daemon answers at {where} ({reason}); start one, e.g. with "
            "../shared/tools/local-base-image.sh, or set DOCKER_HOST"
        ) from None
    return client


def ensure_base_image(client: docker.DockerClient, base_image: str) -> Image:
    """The base image, pulled if it is not local yet."""
    try:
        return client.images.get(base_image)
    except ImageNotFound:
        pass
    try:
        return client.images.pull(base_image)
    except (APIError, ImageNotFound) as err:
        raise PipelineError(
            f"base image {base_image} is not local and cannot be pulled "
            f"({err.explanation or err}); set BASE_IMAGE, e.g. "
            "BASE_IMAGE=$(../shared/tools/local-base-image.sh | tail -1)"
        ) from None


def git_revision(root: Path) -> str:
    """HEAD's commit, with `-dirty` when tracked files differ from it; `unknown` outside git."""
    try:
        commit = _git(root, "rev-parse", "HEAD")
        dirty = _git(root, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def source_url(root: Path) -> str:
    """The `origin` remote as an https URL (OCI's image.source), else `unknown`."""
    try:
        url = _git(root, "remote", "get-url", "origin")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    if url.startswith("git@") and ":" in url:
        host, path = url[4:].split(":", 1)
        url = f"https://{host}/{path}"
    return url.removesuffix(".git")


def _git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=root, capture_output=True, text=True, check=True
    ).stdout.strip()


def build_image(
    client: docker.DockerClient,
    context: Path,
    tag: str,
    base_image: str,
    git_commit: str | None = None,
    quiet: bool = False,
) -> Image:
    """`docker build` of `context` (its Dockerfile and .dockerignore) with the classic
    builder on the host network; build log to stdout unless `quiet`."""
    model = context / "models" / "model.onnx"
    for needed in (context / "Dockerfile", model, context / "models" / "model_card.json"):
        if not needed.is_file():
            raise PipelineError(f"{needed} not found: run `dvc repro` first (it exports the model)")
    ensure_base_image(client, base_image)
    buildargs = {
        "BASE_IMAGE": base_image,
        "GIT_COMMIT": git_commit or git_revision(context),
        "MODEL_MD5": md5_file(model),
        "SOURCE_URL": source_url(context),
    }
    log: list[str] = []
    try:
        # the low-level call streams the log; network_mode host: daemons without a bridge
        # network give build containers no network otherwise, and pip must reach PyPI
        for chunk in client.api.build(
            path=str(context),
            tag=tag,
            buildargs=buildargs,
            network_mode="host",
            rm=True,
            forcerm=True,
            pull=False,
            decode=True,
        ):
            if "error" in chunk:
                tail = "".join(log[-5:]).strip().replace("\n", " | ")
                raise PipelineError(f"docker build failed: {chunk['error'].strip()} ({tail})")
            text = chunk.get("stream", "")
            log.append(text)
            if text and not quiet:
                print(text, end="", flush=True)
    except APIError as err:
        raise PipelineError(f"docker build failed: {err.explanation or err}") from None
    return client.images.get(tag)


def free_port() -> int:
    """A TCP port nothing listens on now (the kernel picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def create_container(
    client: docker.DockerClient, tag: str, port: int, env: dict[str, str] | None = None
) -> Container:
    """Create (not start) a container of `tag` on the host network, serving `port`."""
    if not port_is_free(port):
        raise PipelineError(f"port {port} is in use on this host; pick another with --port")
    return client.containers.create(
        tag, network_mode="host", environment={"PORT": str(port), **(env or {})}, detach=True
    )


def wait_ready(container: Container, url: str, timeout_s: float = 60.0) -> None:
    """Poll `url`/ready until it answers 200; PipelineError with the container's last log
    lines if it exits or `timeout_s` passes."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=1.0) as http:
        while time.monotonic() < deadline:
            try:
                if http.get(f"{url}/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            container.reload()
            if container.status in ("exited", "dead"):
                raise PipelineError(f"container exited before ready: {log_tail(container)}")
            time.sleep(0.02)
    raise PipelineError(f"{url}/ready did not answer within {timeout_s:g} s: {log_tail(container)}")


def wait_healthy(container: Container, timeout_s: float = 60.0) -> str:
    """Wait for Docker's HEALTHCHECK verdict; returns `healthy` or raises PipelineError."""
    deadline = time.monotonic() + timeout_s
    status = "none"
    while time.monotonic() < deadline:
        container.reload()
        health = container.attrs["State"].get("Health") or {}
        status = health.get("Status", "none")
        if status == "healthy":
            return status
        if status == "unhealthy" or status == "none":
            log = (health.get("Log") or [{}])[-1].get("Output", "").strip()
            raise PipelineError(f"container health is {status}: {log or 'no HEALTHCHECK'}")
        time.sleep(0.2)
    raise PipelineError(f"container still {status} after {timeout_s:g} s")


def stop_container(container: Container) -> None:
    """Stop (SIGTERM, then SIGKILL after 5 s) and remove; quietly if already gone."""
    with contextlib.suppress(DockerException):
        container.stop(timeout=5)
    with contextlib.suppress(DockerException):
        container.remove(force=True)


def log_tail(container: Container, lines: int = 5) -> str:
    try:
        text = container.logs(tail=lines).decode(errors="replace").strip()
    except DockerException:
        return "(no log)"
    return text.replace("\n", " | ") or "(empty log)"


def predict_all(url: str, x: np.ndarray, batch: int) -> tuple[np.ndarray, list[str]]:
    """POST `x` in batches of `batch` rows; the probabilities and classes the service returns."""
    probs: list[np.ndarray] = []
    classes: list[str] = []
    with httpx.Client(base_url=url, timeout=30) as http:
        for start in range(0, len(x), batch):
            answer = http.post("/predict", json={"inputs": x[start : start + batch].tolist()})
            if answer.status_code != 200:
                raise PipelineError(f"/predict answered {answer.status_code}: {answer.text[:200]}")
            body = answer.json()
            probs.append(np.asarray(body["probabilities"], dtype=np.float32))
            classes += body["classes"]
    return np.concatenate(probs), classes


def compare(
    probs: np.ndarray, classes: list[str], reference: np.ndarray, labels: list[str]
) -> float:
    """Max abs difference to the reference; PipelineError unless it is within ATOL and every
    class agrees."""
    if probs.shape != reference.shape:
        raise PipelineError(f"service returned shape {probs.shape}, reference {reference.shape}")
    diff = float(np.abs(probs - reference).max())
    expected = [labels[i] for i in reference.argmax(axis=1)]
    mismatched = sum(a != b for a, b in zip(classes, expected, strict=True))
    if diff > ATOL or mismatched:
        raise PipelineError(
            f"service disagrees with the reference outputs: max |Δp| {diff:.1e} (limit {ATOL:g}), "
            f"{mismatched} different classes"
        )
    return diff


@dataclass(frozen=True)
class Running:
    """A started container, the URL it serves on, and how long it took: creating it (the
    storage driver preparing its file system) and from the start call to a ready answer."""

    container: Container
    url: str
    create_s: float
    ready_s: float


@contextlib.contextmanager
def running(
    client: docker.DockerClient, tag: str, port: int, env: dict[str, str] | None = None
) -> Iterator[Running]:
    """Create and start a container and wait until it is ready; on leaving the block, stop
    and remove it whatever happened."""
    created = time.perf_counter()
    container = create_container(client, tag, port, env)
    try:
        started = time.perf_counter()
        container.start()
        url = f"http://127.0.0.1:{port}"
        wait_ready(container, url)
        yield Running(container, url, started - created, time.perf_counter() - started)
    finally:
        stop_container(container)


def smoke(
    client: docker.DockerClient,
    tag: str,
    base_image: str,
    x: np.ndarray,
    reference: np.ndarray,
    port: int | None = None,
) -> SmokeReport:
    """Run the image, check it against the reference outputs, and measure it."""
    try:
        image = client.images.get(tag)
    except ImageNotFound:
        raise PipelineError(f"image {tag} not found: build it first (make image)") from None
    base = ensure_base_image(client, base_image)
    with running(client, tag, port or free_port()) as run:
        with httpx.Client(base_url=run.url, timeout=10) as http:
            meta = http.get("/metadata").json()
        probs, classes = predict_all(run.url, x, int(meta["serving"]["max_batch"]))
        diff = compare(probs, classes, reference, [str(c) for c in meta["classes"]])
        health = wait_healthy(run.container)
    return SmokeReport(
        image=tag,
        image_mb=image.attrs["Size"] / MB,
        base_image=base_image,
        base_mb=base.attrs["Size"] / MB,
        added_mb=(image.attrs["Size"] - base.attrs["Size"]) / MB,
        create_s=run.create_s,
        ready_s=run.ready_s,
        rows=len(x),
        max_abs_diff=diff,
        health=health,
        user=image.attrs["Config"].get("User") or "root",
        labels=image.labels,
    )


def describe(report: SmokeReport) -> str:
    """The report as a few lines of text, with the issue's goals beside the figures."""
    labels = report.labels
    return "\n".join(
        [
            f"image {report.image}: {report.image_mb:.1f} MB; base {report.base_image} "
            f"{report.base_mb:.1f} MB; added {report.added_mb:.1f} MB (goal ≤ {SIZE_GOAL_MB} MB)",
            f"ready {report.ready_s:.2f} s after container start (goal ≤ {READY_GOAL_S:g} s); "
            f"creating the container took {report.create_s:.2f} s before that",
            f"test split: {report.rows} rows, classes identical, max |Δp| "
            f"{report.max_abs_diff:.1e} vs reference (limit {ATOL:g})",
            f"healthcheck {report.health}; runs as {report.user}; revision "
            f"{labels.get('org.opencontainers.image.revision')}; model md5 "
            f"{labels.get('io.mlpipeline.model.md5')}",
        ]
    )


def add_check_inputs(parser: argparse.ArgumentParser) -> None:
    """The options of a smoke check (here and in mlpipeline.stack): inputs, reference, --json."""
    parser.add_argument(
        "--x", type=Path, default=Path("data/prepared/test/x.npy"), help="test split inputs"
    )
    parser.add_argument(
        "--reference",
        type=Path,
        default=Path("models/reference.npy"),
        help="the export stage's ONNX probabilities on those inputs",
    )
    parser.add_argument("--json", type=Path, help="also write the report here as JSON")


def load_check_inputs(x: Path, reference: Path) -> tuple[np.ndarray, np.ndarray]:
    """The smoke check's inputs and reference outputs; PipelineError if the pipeline has not
    written them."""
    for path in (x, reference):
        if not path.is_file():
            raise PipelineError(f"{path} not found: run `dvc repro` first")
    return np.load(x), np.load(reference)


def main(argv: list[str] | None = None) -> None:
    """Command line: `build` and `smoke`; PipelineError becomes one line and exit status 1."""
    try:
        settings = ImageSettings()
    except ValidationError as err:
        print(f"error: bad setting: {err.errors()[0]['msg']}", file=sys.stderr)
        sys.exit(2)
    parser = argparse.ArgumentParser(
        prog="python -m mlpipeline.image",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--tag", default=settings.image_tag, help="image tag (env IMAGE_TAG)")
    common.add_argument(
        "--base-image", default=settings.base_image, help="base image (env BASE_IMAGE)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", parents=[common], help="build the serving image")
    build.add_argument("--context", type=Path, default=Path("."), help="repository root")
    build.add_argument("--quiet", action="store_true", help="no build log")
    check = commands.add_parser(
        "smoke", parents=[common], help="run the image and check it on the test split"
    )
    check.add_argument("--port", type=int, help="port for the container (default: a free one)")
    add_check_inputs(check)
    args = parser.parse_args(argv)
    with exit_on_error("interrupted"):
        if args.command == "build":
            client = connect()
            image = build_image(client, args.context, args.tag, args.base_image, quiet=args.quiet)
            print(f"built {args.tag} ({image.short_id}, {image.attrs['Size'] / MB:.1f} MB)")
            return
        x, reference = load_check_inputs(args.x, args.reference)
        client = connect()
        report = smoke(client, args.tag, args.base_image, x, reference, args.port)
        print(describe(report))
        if args.json:
            args.json.write_text(json.dumps(asdict(report), indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
