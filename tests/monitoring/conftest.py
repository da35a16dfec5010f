"""The Prometheus binaries the monitoring tests run: Debian's `prometheus` package ships both.
Without them the tests skip, saying so; `.ci/run` installs the package
(scripts/install-test-tools.sh) and sets MLPIPELINE_REQUIRE_PROMETHEUS=1, so there they fail
instead."""

from __future__ import annotations

import os
import shutil

import pytest


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} not found: scripts/install-test-tools.sh prometheus (Debian's package)"
        if os.environ.get("MLPIPELINE_REQUIRE_PROMETHEUS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def promtool() -> str:
    """The path of promtool."""
    return _binary("promtool")


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    """The path of the Prometheus server."""
    return _binary("prometheus")
