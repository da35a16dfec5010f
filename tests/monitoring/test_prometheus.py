"""A real Prometheus scraping the real model server (two workers) on loopback, with the rules
of mlpipeline.ops.rules: in-distribution traffic keeps every drift score under the warning
threshold; traffic with one column shifted (a table model) or one class only (the digits CNN)
raises that score above critical and its alert fires; the counts Prometheus reads are the
records sent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from helpers import export_image_model, export_table_model, mixed_table
from scraped import Monitored, monitored
from test_dashboard import expressions

from mlpipeline.data.splits import read_split
from mlpipeline.serving import profile as bins

pytestmark = pytest.mark.slow
BATCH = 64


def send(url: str, bodies: list[dict[str, Any]]) -> None:
    """POST each body to /predict; every one must be answered 200."""
    with httpx.Client(base_url=url, timeout=30) as http:
        for body in bodies:
            answer = http.post("/predict", json=body)
            assert answer.status_code == 200, answer.text


def record_batches(frame: Any) -> list[dict[str, Any]]:
    """The table's rows as /predict bodies of BATCH records, missing values as null."""
    records = json.loads(frame.drop(columns="target").to_json(orient="records"))
    return [{"records": records[i : i + BATCH]} for i in range(0, len(records), BATCH)]


def tensor_batches(x: np.ndarray) -> list[dict[str, Any]]:
    return [{"inputs": x[i : i + BATCH].tolist()} for i in range(0, len(x), BATCH)]


def drift_alerts(running: Monitored) -> list[dict[str, str]]:
    return [a["labels"] for a in running.alerts() if "Drift" in a["labels"]["alertname"]]


def check_counts(running: Monitored, rows: int, requests: int, columns: list[str]) -> None:
    """What Prometheus read equals what was sent, summed over both workers."""
    assert running.values('sum(model_prediction_total{job="model"})') == {(): rows}
    per_column = running.values('sum by (column) (model_input_bin_total{job="model"})', "column")
    assert per_column == {(c,): rows for c in columns}
    served = 'sum(http_requests_total{job="model", route="/predict", status="200"})'
    assert running.values(served) == {(): requests}


def check_psi_is_the_offline_definition(running: Monitored, profile: bins.Profile) -> None:
    """Each recorded PSI equals serving.profile.psi of the recorded bin counts."""
    counts = running.values("model:input_bin:increase", "column", "bin")
    scores = running.values("model:input_psi", "column")
    epsilon = running.monitoring.drift.epsilon
    for column in profile.columns:
        observed = [counts[(column.name, b)] for b in column.bins()]
        offline = bins.psi(observed, column.shares, epsilon)
        assert scores[(column.name,)] == pytest.approx(offline, rel=1e-9, abs=1e-12)
    predicted = running.values("model:prediction_bin:increase", "bin")
    observed = [predicted[(b,)] for b in profile.prediction.bins()]
    offline = bins.psi(observed, profile.prediction.shares, epsilon)
    assert running.values("model:prediction_psi") == {(): pytest.approx(offline, rel=1e-9)}


@pytest.fixture(scope="module")
def table_model(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A table model trained on 2000 rows of mixed_table (its config)."""
    return export_table_model(tmp_path_factory.mktemp("table"), "classification", 2000)


def test_a_shifted_column_of_a_table_model_fires_its_alert_and_only_its_own(
    prometheus_binary: str, tmp_path: Path, table_model: Any
) -> None:
    cfg = table_model
    profile = bins.read_profile(cfg.paths.profile)
    columns = [c.name for c in profile.columns]
    warning, critical = 0.1, 0.25
    with monitored(prometheus_binary, cfg.paths.onnx, tmp_path / "monitoring") as running:
        assert (running.monitoring.drift.warning, running.monitoring.drift.critical) == (
            warning,
            critical,
        )
        # in distribution: new rows from the same generator as the training data
        usual = record_batches(mixed_table(2000, seed=1))
        send(running.model_url, usual)
        running.settle()
        check_counts(running, 2000, len(usual), columns)
        scores = running.values("model:input_psi", "column")
        assert set(scores) == {(c,) for c in columns}
        assert all(0 <= s < warning for s in scores.values()), scores
        (prediction,) = running.values("model:prediction_psi").values()
        assert 0 <= prediction < warning
        check_psi_is_the_offline_definition(running, profile)
        assert drift_alerts(running) == []

        # one column moved far past its training range, the others as before
        moved = mixed_table(4000, seed=2)
        moved["width"] = moved["width"] + 30
        shifted = record_batches(moved)
        send(running.model_url, shifted)
        running.settle()
        check_counts(running, 6000, len(usual) + len(shifted), columns)
        scores = running.values("model:input_psi", "column")
        assert scores[("width",)] > critical, scores
        assert all(s < warning for (c,), s in scores.items() if c != "width"), scores
        check_psi_is_the_offline_definition(running, profile)
        alert = running.firing("ModelInputDriftCritical", column="width")
        assert alert["labels"]["severity"] == "critical"
        assert float(alert["value"]) > critical
        running.firing("ModelInputDriftWarning", column="width")
        assert {a.get("column") for a in drift_alerts(running)} <= {"width", None}


def test_one_class_of_images_fires_the_prediction_drift_alert_of_the_digits_cnn(
    prometheus_binary: str, tmp_path: Path
) -> None:
    cfg = export_image_model(tmp_path / "model")
    profile = bins.read_profile(cfg.paths.profile)
    x = np.concatenate([read_split(cfg.paths.features, s)[0] for s in ("val", "test")])
    y = np.concatenate([read_split(cfg.paths.features, s)[1] for s in ("val", "test")])
    critical, warning = 0.25, 0.1
    with monitored(prometheus_binary, cfg.paths.onnx, tmp_path / "monitoring") as running:
        # in distribution: the validation and test digits, which training never saw
        usual = tensor_batches(x)
        send(running.model_url, usual)
        running.settle()
        statistics = [c.name for c in profile.columns]
        check_counts(running, len(x), len(usual), statistics)
        scores = running.values("model:input_psi", "column")
        assert len(scores) == len(statistics) and all(s < warning for s in scores.values())
        (prediction,) = running.values("model:prediction_psi").values()
        assert 0 <= prediction < warning
        check_psi_is_the_offline_definition(running, profile)
        assert drift_alerts(running) == []

        # then only images of zeros, each sent 30 times: the predicted classes move
        zeros = np.concatenate([x[y == 0]] * 30)
        send(running.model_url, tensor_batches(zeros))
        running.settle()
        (prediction,) = running.values("model:prediction_psi").values()
        assert prediction > critical
        check_psi_is_the_offline_definition(running, profile)
        alert = running.firing("ModelPredictionDriftCritical")
        assert float(alert["value"]) > critical


def test_every_dashboard_panel_query_returns_a_series_after_traffic(
    prometheus_binary: str, tmp_path: Path, table_model: Any
) -> None:
    with monitored(prometheus_binary, table_model.paths.onnx, tmp_path / "monitoring") as running:
        frame = mixed_table(600, seed=3)
        frame.loc[:5, "color"] = "a colour never seen"
        send(running.model_url, record_batches(frame))
        with httpx.Client(base_url=running.model_url) as http:  # an error, and a refusal
            assert (
                http.post(
                    "/predict", content=b"{", headers={"content-type": "application/json"}
                ).status_code
                == 400
            )
        running.settle()
        running.settle()  # two scrapes after the refusal: a rate over its new series
        for expr in expressions():
            # Grafana's $__rate_interval: at least four scrape intervals
            query = expr.replace("$__rate_interval", "30s")
            assert running.query(query), f"no series: {query}"
