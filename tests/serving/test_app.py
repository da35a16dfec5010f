"""The model service in-process (FastAPI TestClient) and as `python -m mlpipeline.serving`, on a
small CNN exported to ONNX by the export stage's own function."""

from __future__ import annotations

import gzip
import json
import os
import random
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from helpers import (
    MAX_BATCH,
    MAX_BODY,
    ROW,
    bad_requests,
    export_tiny_model,
    free_port,
    serving,
    wait_for_server,
)
from prometheus_client.parser import text_string_to_metric_families

from mlpipeline.ops import smoke as checks
from mlpipeline.serving.app import create_app
from mlpipeline.serving.model import ModelError, load_model
from mlpipeline.serving.settings import Settings

with warnings.catch_warnings():
    # Starlette 1.x suggests httpx2 for its TestClient; the pinned httpx works
    warnings.simplefilter("ignore", UserWarning)
    from fastapi.testclient import TestClient

BAD = bad_requests()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny_model(tmp_path_factory.mktemp("served"))


@pytest.fixture(scope="module")
def settings(model_dir: Path) -> Settings:
    return Settings(
        model_path=model_dir / "model.onnx",
        max_batch=MAX_BATCH,
        max_body_bytes=MAX_BODY,
        git_commit="0123abc",
    )


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def metric(client: TestClient, name: str, **labels: str) -> float:
    """The value of one sample of /metrics (0 when absent)."""
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def test_predict_matches_onnx_runtime_on_every_row(client: TestClient, model_dir: Path) -> None:
    x, reference = np.load(model_dir / "x.npy"), np.load(model_dir / "reference.npy")
    for start in range(0, len(x), MAX_BATCH):
        batch = x[start : start + MAX_BATCH]
        answer = client.post("/predict", json={"inputs": batch.tolist()})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        # the one answer shape of every model: per input, a class and its probabilities by class
        assert set(body) == {"predictions", "probabilities", "model_version"}
        classes = [str(c) for c in range(10)]
        assert all(list(p) == classes for p in body["probabilities"])
        probs = np.asarray([[p[c] for c in classes] for p in body["probabilities"]])
        expected = reference[start : start + MAX_BATCH]
        assert probs.shape == expected.shape
        assert np.abs(probs - expected).max() <= 1e-6
        assert body["predictions"] == [str(c) for c in expected.argmax(1)]
        assert body["model_version"] == "0123456789ab"


def test_the_smoke_check_reads_the_answers_of_a_running_service(
    model_dir: Path, tmp_path: Path
) -> None:
    """make smoke's check of an image model, against `python -m mlpipeline.serving`."""
    shutil.copytree(model_dir, tmp_path / "models")
    x, reference = np.load(model_dir / "x.npy"), np.load(model_dir / "reference.npy")
    with serving(tmp_path) as url:
        outputs, predicted = checks.predict_all(url, x, MAX_BATCH)
    assert checks.compare(outputs, predicted, reference, [str(c) for c in range(10)]) <= 1e-6


def test_predict_takes_integers_and_a_charset(client: TestClient) -> None:
    body = json.dumps({"inputs": [np.ones(ROW, dtype=int).tolist()] * 3})
    answer = client.post(
        "/predict", content=body, headers={"content-type": "application/json; charset=utf-8"}
    )
    assert answer.status_code == 200 and len(answer.json()["predictions"]) == 3


def test_health_and_ready(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "model_version": "0123456789ab"}


def test_metadata_is_the_card_with_commit_and_limits(client: TestClient, model_dir: Path) -> None:
    card = json.loads((model_dir / "model_card.json").read_text())
    meta = client.get("/metadata").json()
    assert {k: meta[k] for k in card} == card
    assert meta["git_commit"] == "0123abc"
    assert meta["serving"] == {
        "max_batch": MAX_BATCH,
        "max_body_bytes": MAX_BODY,
        "drift_metrics": True,
    }


def test_metrics_count_requests_errors_latency_and_batch_sizes(client: TestClient) -> None:
    before_ok = metric(client, "http_requests_total", route="/predict", status="200")
    before_415 = metric(client, "http_request_errors_total", route="/predict", status="415")
    before_timed = metric(client, "http_request_duration_seconds_count", route="/predict")
    before_rows = metric(client, "predict_batch_size_sum")
    for size in (1, 3):
        client.post("/predict", json={"inputs": [np.zeros(ROW).tolist()] * size})
    client.post("/predict", content=b"{}", headers={"content-type": "text/plain"})
    client.get("/no-such-page")

    assert metric(client, "http_requests_total", route="/predict", status="200") == before_ok + 2
    assert metric(client, "http_request_errors_total", route="/predict", status="415") == (
        before_415 + 1
    )
    assert metric(client, "http_request_duration_seconds_count", route="/predict") == (
        before_timed + 3
    )
    assert metric(client, "predict_batch_size_sum") == before_rows + 4
    assert metric(client, "predict_rejected_total", reason="content_type") >= 1
    # unknown paths share one label value, so they cannot grow the metric without bound
    assert metric(client, "http_request_errors_total", route="other", status="404") >= 1
    text = client.get("/metrics")
    assert text.headers["content-type"].startswith("text/plain")
    assert 'http_requests_total{method="GET",route="/metrics",status="200"}' in text.text


@pytest.mark.parametrize(("body", "content_type", "status", "message"), [b[1:] for b in BAD])
def test_bad_request_gets_a_4xx_that_says_what_is_wrong(
    client: TestClient, body: bytes, content_type: str | None, status: int, message: str
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    answer = client.post("/predict", content=body, headers=headers)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert message in answer.json()["error"]
    # and the service keeps serving
    assert client.post("/predict", json={"inputs": [np.zeros(ROW).tolist()]}).status_code == 200


def test_bad_requests_cover_every_case_the_issue_lists() -> None:
    ids = {b[0] for b in BAD}
    assert len(ids) == len(BAD)
    assert ids >= {
        "malformed-json",
        "text-plain",
        "flat-features",
        "feature-count",
        "string",
        "nan",
        "infinity",
        "empty-batch",
        "batch-over-limit",
        "body-over-limit",
    }


def test_streamed_body_over_the_limit_gets_413(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: the server counts as it reads
        yield b'{"inputs": ['
        for _ in range(MAX_BODY // 1000 + 1):
            yield b"0" * 1000
        yield b"]}"

    answer = client.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert answer.status_code == 413
    assert "over the limit" in answer.json()["error"]


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br"])
def test_compressed_body_gets_415_naming_the_encoding(client: TestClient, encoding: str) -> None:
    body = json.dumps({"inputs": [np.zeros(ROW).tolist()]}).encode()
    headers = {"content-type": "application/json", "content-encoding": encoding}
    answer = client.post("/predict", content=gzip.compress(body, mtime=0), headers=headers)
    assert answer.status_code == 415
    error = answer.json()["error"]
    assert f"Content-Encoding {encoding!r}" in error and "send the body uncompressed" in error


@pytest.mark.parametrize("body", ['{"inputs": []}'.encode("utf-16"), gzip.compress(b"{}", mtime=0)])
def test_body_not_in_utf8_says_json_must_be_utf8(client: TestClient, body: bytes) -> None:
    answer = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 400
    assert answer.json()["error"].endswith("JSON must be UTF-8")


def test_api_pages_are_served_unless_turned_off(client: TestClient, model_dir: Path) -> None:
    pages = ("/docs", "/redoc", "/openapi.json")
    assert all(client.get(page).status_code == 200 for page in pages)
    settings = Settings(model_path=model_dir / "model.onnx", api_docs=False)
    with TestClient(create_app(settings)) as quiet:
        assert [quiet.get(page).status_code for page in pages] == [404] * 3


def test_openapi_describes_the_answer_and_the_refusals(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    responses = spec["paths"]["/predict"]["post"]["responses"]
    answer = responses["200"]["content"]["application/json"]["schema"]["$ref"]
    assert answer == "#/components/schemas/ClassificationAnswer"
    fields = spec["components"]["schemas"]["ClassificationAnswer"]["properties"]
    assert set(fields) == {"predictions", "probabilities", "model_version"}
    assert fields["probabilities"]["items"]["additionalProperties"] == {"type": "number"}
    refused = responses["422"]["content"]["application/json"]["schema"]["$ref"]
    assert refused == "#/components/schemas/ErrorAnswer"


def test_wrong_method_and_unknown_path_answer_json(client: TestClient) -> None:
    assert client.get("/predict").status_code == 405
    assert client.get("/predict").json() == {"error": "Method Not Allowed"}
    assert client.get("/nothing").json() == {"error": "Not Found"}


def test_mutated_bodies_never_cause_a_5xx(client: TestClient) -> None:
    good = json.dumps({"inputs": [np.arange(64).reshape(ROW).tolist()] * 2}).encode()
    rng = random.Random(0)
    alphabet = b'[]{},:."-+eE0123456789 aNIntrufl\\\x00\xff'
    for _ in range(300):
        mutated = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(len(mutated))
            action = rng.random()
            if action < 0.4:
                mutated[pos] = rng.choice(alphabet)
            elif action < 0.7:
                del mutated[pos : pos + rng.randint(1, 20)]
            else:
                mutated[pos:pos] = bytes(rng.choices(alphabet, k=rng.randint(1, 5)))
        answer = client.post(
            "/predict", content=bytes(mutated), headers={"content-type": "application/json"}
        )
        assert answer.status_code < 500, (bytes(mutated), answer.text)
        if answer.status_code >= 400:
            assert answer.json()["error"]


def test_settings_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, model_dir: Path
) -> None:
    monkeypatch.setenv("MODEL_PATH", str(model_dir / "model.onnx"))
    monkeypatch.setenv("PORT", "9123")
    monkeypatch.setenv("MAX_BATCH", "5")
    monkeypatch.setenv("MAX_BODY_BYTES", "1000")
    monkeypatch.setenv("WORKERS", "3")
    monkeypatch.setenv("GIT_COMMIT", "feed")
    settings = Settings()
    assert settings.model_path == model_dir / "model.onnx"
    assert settings.card_file == model_dir / "model_card.json"
    assert (settings.port, settings.max_batch, settings.max_body_bytes) == (9123, 5, 1000)
    assert (settings.workers, settings.git_commit) == (3, "feed")


def test_model_and_card_problems_are_one_line_errors(tmp_path: Path, model_dir: Path) -> None:
    with pytest.raises(ModelError, match="model not found"):
        load_model(Settings(model_path=tmp_path / "none.onnx"))
    (tmp_path / "model.onnx").write_bytes(b"not onnx")
    with pytest.raises(ModelError, match="model card not found"):
        load_model(Settings(model_path=tmp_path / "model.onnx"))
    card = json.loads((model_dir / "model_card.json").read_text())
    (tmp_path / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="not a loadable ONNX model"):
        load_model(Settings(model_path=tmp_path / "model.onnx"))
    (tmp_path / "model.onnx").write_bytes((model_dir / "model.onnx").read_bytes())
    for change, expected in (
        ({"classes": ["a", "b"]}, r"returns outputs of shape \[1, 10\] but .* implies \[1, 2\]"),
        ({"input": {**card["input"], "shape": [None, 64]}}, "rejects inputs as its card"),
        ({"input": {**card["input"], "name": "x"}}, r"names inputs \['x'\]"),
        ({"input": {}}, r"is not a model card \(input: Unable to extract tag"),
        ({"classes": None}, "classification's card without its classes"),
    ):
        (tmp_path / "model_card.json").write_text(json.dumps({**card, **change}))
        with pytest.raises(ModelError, match=expected):
            load_model(Settings(model_path=tmp_path / "model.onnx"))


def run_cli(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlpipeline.serving"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("env", "status", "message"),
    [
        ({"MODEL_PATH": "/nonexistent/model.onnx"}, 1, "error: model not found at"),
        ({"PORT": "http"}, 2, "error: bad setting PORT='http'"),
        ({"MAX_BATCH": "0"}, 2, "error: bad setting MAX_BATCH='0'"),
    ],
)
def test_cli_reports_bad_settings_in_one_line(
    env: dict[str, str], status: int, message: str, model_dir: Path
) -> None:
    proc = run_cli({"MODEL_PATH": str(model_dir / "model.onnx"), **env})
    assert proc.returncode == status
    assert proc.stderr.startswith(message) and proc.stderr.count("\n") == 1, proc.stderr


@pytest.mark.parametrize("workers", [1, 2])
def test_python_m_serve_runs_uvicorn(workers: int, model_dir: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "MODEL_PATH": str(model_dir / "model.onnx"),
        "PORT": str(port),
        "WORKERS": str(workers),
        "DRIFT_FLUSH_SECONDS": "0.2",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlpipeline.serving"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_server(proc, f"{url}/ready", 60)
        with httpx.Client(base_url=url, timeout=10) as http:
            rows = np.zeros((2, *ROW)).tolist()
            for _ in range(10):
                assert http.post("/predict", json={"inputs": rows}).status_code == 200
            # a worker adds its queued drift counts every DRIFT_FLUSH_SECONDS: read until all
            # are in, as a scrape would
            deadline = time.monotonic() + 30
            while True:
                families = {
                    f.name: f for f in text_string_to_metric_families(http.get("/metrics").text)
                }
                predicted = sum(
                    s.value
                    for s in families["model_prediction"].samples
                    if s.name.endswith("_total")
                )
                if predicted >= 20 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
        # with several workers /metrics sums over all of them, whichever one answers
        served = [
            s.value
            for s in families["http_requests"].samples
            if s.name == "http_requests_total" and s.labels["route"] == "/predict"
        ]
        assert served == [10.0]
        # the drift counters too: 20 rows, each counted once per column and once predicted
        for family, per in (("model_prediction", 1), ("model_input_bin", 2)):
            rows = [s.value for s in families[family].samples if s.name == f"{family}_total"]
            assert sum(rows) == 20 * per, family
        # gauges every worker sets appear once
        (info,) = families["model_info"].samples
        assert info.value == 1 and info.labels["version"] == "0123456789ab"
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    # stdout: the request log, one JSON object per line, one line per request
    entries = [json.loads(line) for line in out.splitlines()]
    assert [e["route"] for e in entries].count("/predict") == 10
    assert {e["status"] for e in entries if e["route"] == "/predict"} == {200}
