"""The service under hostile clients, as `python -m mlpipeline.serving` over loopback: clients
that leave mid-upload. Each bound is checked by what the client sees and by what the server's
process shows (its output, /metrics)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers import export_tiny_model, free_port, stop, wait_for_server
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.slow  # each test starts a server of its own


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny_model(tmp_path_factory.mktemp("served"))


@contextlib.contextmanager
def server(model_dir: Path, tmp_path: Path, **env: str) -> Iterator[tuple[int, int, Path]]:
    """The service on a free loopback port with `env` set; yields its port, its pid and the
    file that receives its stderr."""
    port = free_port()
    full_env = {
        **os.environ,
        "MODEL_PATH": str(model_dir / "model.onnx"),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "REQUEST_LOG": "false",
        **env,
    }
    full_env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    stderr = tmp_path / "stderr.log"
    with open(stderr, "wb") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlpipeline.serving"],
            env=full_env,
            stdout=subprocess.DEVNULL,
            stderr=handle,
            start_new_session=True,
        )
    try:
        wait_for_server(proc, f"http://127.0.0.1:{port}/ready", 60, stderr.read_text)
        yield port, proc.pid, stderr
    finally:
        stop(proc)


def sample(port: int, name: str, **labels: str) -> float:
    """One sample of the server's /metrics (0 when absent)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def test_a_client_leaving_mid_upload_is_no_server_error(model_dir: Path, tmp_path: Path) -> None:
    head = (
        b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000\r\n\r\n"
    )
    with server(model_dir, tmp_path) as (port, _pid, stderr):
        for _ in range(5):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(head + b'{"inputs": [' + b"0, " * 1000)
        gone = "http_client_disconnects_total"
        deadline = time.monotonic() + 20  # the server notices each departure on its own time
        while sample(port, gone, route="/predict") < 5 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert sample(port, gone, route="/predict") == 5
        assert sample(port, "http_request_errors_total", status="500") == 0
        assert sample(port, "http_requests_total", route="/predict", status="500") == 0
    assert "Traceback" not in stderr.read_text()
