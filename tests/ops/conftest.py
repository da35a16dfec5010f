"""The Docker daemon for the image and stack tests, or a skip that says why. Where it is
required (MLPIPELINE_REQUIRE_DOCKER=1, as .ci/run sets it) a missing daemon fails them.

Settings a CI machine sets for an unusual daemon, read the same way the product reads them:
BASE_IMAGE (a base image already on the daemon), DOCKER_NETWORK=host (a daemon without a bridge
network, where published ports do not work: the stack then runs from a host-network variant of
docker-compose.yml, helpers.host_network_compose_file)."""

from __future__ import annotations

import docker
import pytest
from helpers import REQUIRED

from mlpipeline.errors import PipelineError
from mlpipeline.ops.docker import DockerSettings, connect, ensure_base_image


@pytest.fixture(scope="session")
def settings() -> DockerSettings:
    return DockerSettings()


@pytest.fixture(scope="session")
def client(settings: DockerSettings) -> docker.DockerClient:
    """A daemon that answers and has the base image (no registry may be reachable: a test
    builds only on a base image that is already there, unless Docker is required)."""
    try:
        docker_client = connect()
        if REQUIRED:
            ensure_base_image(docker_client, settings.base_image)
        else:
            docker_client.images.get(settings.base_image)
    except docker.errors.ImageNotFound:
        pytest.skip(f"base image {settings.base_image} is not on the daemon; set BASE_IMAGE")
    except PipelineError as err:
        if REQUIRED:
            pytest.fail(f"MLPIPELINE_REQUIRE_DOCKER=1 but {err}")
        pytest.skip(str(err))
    return docker_client
