"""The service under hostile clients, as `python -m mlpipeline.serving` over loopback: huge or
many headers, clients that send slowly or leave mid-upload. Each bound is checked by what the
client sees and by what the server's process shows (its memory peak, its output, /metrics)."""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
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


def status_line(port: int, request: bytes) -> bytes:
    """Send `request` on a new connection and return the first line of the answer (b"" when
    the server closed without one). The server may answer and close before the whole request
    is sent: the answer is still read."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(request)
        answer = b""
        with contextlib.suppress(OSError):
            while b"\r\n" not in answer and (chunk := sock.recv(65536)):
                answer += chunk
    return answer.split(b"\r\n")[0]


def read_response(sock: socket.socket) -> bytes:
    """Read one whole response (head and Content-Length body) from `sock`; its status line."""
    data = b""
    while b"\r\n\r\n" not in data and (chunk := sock.recv(4096)):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (int(line.split(b":")[1]) for line in head.split(b"\r\n")[1:]
         if line.lower().startswith(b"content-length:")),
        0,
    )  # fmt: skip
    while len(body) < length and (chunk := sock.recv(4096)):
        body += chunk
    return head.split(b"\r\n")[0]


def peak_memory_kib(pid: int) -> int:
    """The process's peak resident memory (VmHWM), which a request held only briefly still
    raises."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


def sample(port: int, name: str, **labels: str) -> float:
    """One sample of the server's /metrics (0 when absent)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def test_huge_or_many_headers_get_431_and_memory_stays_bounded(
    model_dir: Path, tmp_path: Path
) -> None:
    with server(model_dir, tmp_path) as (port, pid, stderr):
        head = b"GET /health HTTP/1.1\r\nHost: t\r\n"
        huge = head + b"X-Big: " + b"a" * (32 * 2**20) + b"\r\n\r\n"
        many = head + b"".join(b"X-%d: 1\r\n" % i for i in range(200)) + b"\r\n"
        before = peak_memory_kib(pid)
        # four at once: unbounded, the server would hold each 32 MiB header, and copies of it
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda r: status_line(port, r), [huge] * 4 + [many]))
        growth_mib = (peak_memory_kib(pid) - before) / 1024
        assert all(a.startswith(b"HTTP/1.1 431 ") for a in answers), answers
        assert growth_mib < 50, f"peak memory grew by {growth_mib:.0f} MiB"
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).status_code == 200
    assert "Traceback" not in stderr.read_text()


def test_slow_clients_are_cut_off_and_good_requests_still_served(
    model_dir: Path, tmp_path: Path
) -> None:
    clients = 50
    env = {"READ_TIMEOUT_SECONDS": "1", "MAX_CONNECTIONS": "10"}
    with server(model_dir, tmp_path, **env) as (port, pid, stderr):
        # an open-file limit that the slow clients' connections would exhaust if the server
        # held all of them
        own = len(os.listdir(f"/proc/{pid}/fd"))
        hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)[1]
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (own + clients // 2, hard))
        slow = []
        for _ in range(clients):  # all within the read timeout, not all in one accept
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: t\r\n")
            sock.setblocking(False)
            slow.append(sock)
            time.sleep(0.01)
        open_ = set(range(clients))
        served = False
        deadline = time.monotonic() + 30
        try:
            while (open_ or not served) and time.monotonic() < deadline:
                for i in list(open_):
                    try:
                        slow[i].send(b"X")  # a header byte now and then
                        if slow[i].recv(4096) == b"":
                            open_.discard(i)
                    except BlockingIOError:
                        pass
                    except OSError:  # reset or closed by the server
                        open_.discard(i)
                if not served:
                    with contextlib.suppress(httpx.HTTPError):
                        answer = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                        served = answer.status_code == 200
                time.sleep(0.2)
        finally:
            for sock in slow:
                sock.close()
        assert served, "no good request was served"
        assert not open_, f"{len(open_)} slow clients still connected after 30 s"
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).status_code == 200
    log = stderr.read_text()
    assert "Traceback" not in log
    # a few lines at start and stop, none per client
    assert len(log.splitlines()) < clients // 2, log


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


def test_the_read_timeout_counts_from_each_requests_first_byte(
    model_dir: Path, tmp_path: Path
) -> None:
    request = b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n"
    with (
        server(model_dir, tmp_path, READ_TIMEOUT_SECONDS="1") as (port, _pid, stderr),
        socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
    ):
        sock.sendall(request)
        assert read_response(sock).startswith(b"HTTP/1.1 200 ")
        time.sleep(0.8)
        # a second request on the connection, slow but under a second, that ends after
        # the first request's deadline
        for start in range(0, len(request), 12):
            sock.sendall(request[start : start + 12])
            time.sleep(0.25)
        assert read_response(sock).startswith(b"HTTP/1.1 200 ")
        # a third one that never finishes
        sock.sendall(request[:10])
        assert read_response(sock).startswith(b"HTTP/1.1 408 ")
        assert sock.recv(4096) == b""  # and closed
    assert "Traceback" not in stderr.read_text()
