"""The Docker daemon through its Python SDK: settings, connecting, base images, builds, and
containers that are always removed."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import docker
from docker.errors import APIError, DockerException, ImageNotFound
from docker.models.containers import Container
from docker.models.images import Image
from pydantic_settings import BaseSettings, SettingsConfigDict

from mlpipeline.config import load_config
from mlpipeline.errors import PipelineError
from mlpipeline.ops.wait import answers, wait_until

MB = 1e6


class DockerSettings(BaseSettings):
    """From environment variables BASE_IMAGE, IMAGE_TAG and DOCKER_NETWORK."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    # None: the Dockerfile's own default, pinned by digest
    base_image: str | None = None
    # None: `<project>-serve:latest`, the project of params.yaml (serve_image_tag)
    image_tag: str | None = None
    # the network of builds and smoke containers: Docker's default bridge with a published
    # port, or the host's network (then the container listens on the host's port itself)
    docker_network: Literal["bridge", "host"] = "bridge"

    def base(self, root: Path = Path(".")) -> str:
        """The base image: BASE_IMAGE, else the default of the Dockerfile at `root`."""
        return self.base_image or dockerfile_base(root / "Dockerfile")


def serve_image_tag(settings: DockerSettings, params: Path = Path("params.yaml")) -> str:
    """The serving image's tag: IMAGE_TAG, else `<project>-serve:latest` from params.yaml."""
    if settings.image_tag:
        return settings.image_tag
    if not params.is_file():
        raise PipelineError(f"{params} not found: run `dvc repro` first, or set IMAGE_TAG")
    # the validated config: `project: null` there is the data's name
    return f"{load_config(params).project}-serve:latest"


def dockerfile_base(dockerfile: Path) -> str:
    """The default of the Dockerfile's `ARG BASE_IMAGE=...`: the one place the base is named."""
    for line in dockerfile.read_text(encoding="utf-8").splitlines():
        if line.startswith("ARG BASE_IMAGE="):
            return line.split("=", 1)[1].strip()
    raise PipelineError(f"{dockerfile} declares no ARG BASE_IMAGE=<image> default")


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
            f"no Docker daemon answers at {where} ({reason}): start Docker, or point "
            "DOCKER_HOST at a running daemon"
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
            f"({err.explanation or err}): check the registry login, or set BASE_IMAGE to an "
            "image this daemon has"
        ) from None


def build(
    client: docker.DockerClient,
    context: Path,
    dockerfile: str,
    tag: str,
    buildargs: dict[str, str],
    network: str,
    quiet: bool = False,
) -> Image:
    """`docker build` of `context` with the classic builder; the log goes to stdout unless
    `quiet`, and a failure is one line with the log's last lines."""
    log: list[str] = []
    try:
        # the low-level call streams the log
        for chunk in client.api.build(
            path=str(context),
            dockerfile=dockerfile,
            tag=tag,
            buildargs=buildargs,
            network_mode=network,
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


def log_tail(container: Container, lines: int = 5) -> str:
    """The container's last log lines on one line."""
    try:
        text = container.logs(tail=lines).decode(errors="replace").strip()
    except DockerException:
        return "(no log)"
    return text.replace("\n", " | ") or "(empty log)"


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
    client: docker.DockerClient,
    tag: str,
    port: int,
    network: str = "bridge",
    env: dict[str, str] | None = None,
    container_port: int = 8080,
) -> Iterator[Running]:
    """Start a container of `tag` serving on 127.0.0.1:`port` (published from
    `container_port`, or on the host network the service's own PORT) and wait until its
    /ready answers; on leaving the block stop and remove it, whatever happened."""
    if network == "host":
        options = {"network_mode": "host", "environment": {"PORT": str(port), **(env or {})}}
    else:
        options = {"ports": {f"{container_port}/tcp": ("127.0.0.1", port)}, "environment": env}
    created = time.perf_counter()
    try:
        container = client.containers.create(tag, detach=True, **options)
    except APIError as err:
        raise PipelineError(f"cannot create a container of {tag}: {err.explanation}") from None
    try:
        started = time.perf_counter()
        try:
            container.start()
        except APIError as err:
            raise PipelineError(f"cannot start {tag}: {err.explanation}") from None
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool | None:
            if answers(f"{url}/ready"):
                return True
            container.reload()
            if container.status in ("exited", "dead"):
                raise PipelineError(f"container exited before ready: {log_tail(container)}")
            return None

        try:
            wait_until(ready, 60, f"{url}/ready did not answer", interval_s=0.02)
        except PipelineError as err:
            raise PipelineError(f"{err}: {log_tail(container)}") from None
        yield Running(container, url, started - created, time.perf_counter() - started)
    finally:
        with contextlib.suppress(DockerException):
            container.stop(timeout=5)
        with contextlib.suppress(DockerException):
            container.remove(force=True)


def health(container: Container, timeout_s: float = 60.0) -> str:
    """Wait for Docker's HEALTHCHECK verdict; returns `healthy` or raises PipelineError."""

    def verdict() -> str | None:
        container.reload()
        state = container.attrs["State"].get("Health") or {}
        status = state.get("Status", "none")
        if status in ("unhealthy", "none"):
            log = (state.get("Log") or [{}])[-1].get("Output", "").strip()
            raise PipelineError(f"container health is {status}: {log or 'no HEALTHCHECK'}")
        return status if status == "healthy" else None

    return wait_until(verdict, timeout_s, "container not healthy", interval_s=0.2)
