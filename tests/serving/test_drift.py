"""Drift counting in the service (per column and bin, predictions, unseen categories, the
reference shares, model_info), the profile's checks at start, the JSON request log, and the
PSI definition itself."""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers import MAX_BATCH, ROW, export_table_model, export_tiny_model
from prometheus_client.parser import text_string_to_metric_families

from mlpipeline.serving import profile as bins
from mlpipeline.serving.app import create_app
from mlpipeline.serving.model import ModelError
from mlpipeline.serving.settings import Settings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)  # Starlette 1.x's httpx2 hint
    from fastapi.testclient import TestClient


def samples(client: TestClient, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample of one metric in /metrics, keyed by its sorted labels."""
    found = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def by(found: dict, *keys: str) -> dict:
    """Samples keyed by the values of `keys` alone."""
    return {tuple(dict(k)[key] for key in keys): v for k, v in found.items()}


@pytest.fixture(scope="module")
def image_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny_model(tmp_path_factory.mktemp("image"))


@pytest.fixture(scope="module")
def table_cfg(tmp_path_factory: pytest.TempPathFactory):
    return export_table_model(tmp_path_factory.mktemp("table"), "classification")


def test_an_image_models_statistics_and_predictions_are_counted_by_bin(image_model: Path) -> None:
    client = TestClient(create_app(Settings(model_path=image_model / "model.onnx")))
    reference = bins.read_profile(image_model / "profile.json")
    x = np.load(image_model / "x.npy")
    # every series is there, at 0, before any request: the rules can score empty bins
    before = by(samples(client, "model_input_bin_total"), "column", "bin")
    assert set(before) == {(c.name, b) for c in reference.columns for b in c.bins()}
    assert set(before.values()) == {0.0}
    for start in range(0, len(x), MAX_BATCH):
        assert client.post("/predict", json={"inputs": x[start : start + MAX_BATCH].tolist()})

    counted = by(samples(client, "model_input_bin_total"), "column", "bin")
    stats = bins.image_statistics(x)
    for column in reference.columns:
        expected = bins.NumericBinner(column).counts(stats[(column.statistic, column.channel)])
        assert [counted[(column.name, b)] for b in column.bins()] == expected.tolist()
    outputs = np.load(image_model / "reference.npy")
    predicted = by(samples(client, "model_prediction_total"), "bin")
    expected = np.bincount(outputs.argmax(1), minlength=10)
    assert [predicted[(str(c),)] for c in range(10)] == expected.tolist()
    shares = by(samples(client, "model_input_reference_share"), "column", "bin")
    column = reference.columns[0]
    assert [shares[(column.name, b)] for b in column.bins()] == column.shares
    (info,) = samples(client, "model_info")
    assert dict(info) | {"profile_md5": ""} == {
        "name": "tiny-test-model",
        "version": "0123456789ab",
        "task": "classification",
        "data_md5": "",
        "model_md5": "",
        "onnx_md5": "0123456789abcdef",
        "profile_md5": "",
        "git_commit": "",
    }
    assert len(dict(info)["profile_md5"]) == 32


def test_a_table_models_columns_missing_values_and_unseen_categories_are_counted(
    table_cfg,
) -> None:
    client = TestClient(create_app(Settings(model_path=table_cfg.paths.onnx, max_batch=64)))
    records = [
        {"width": 9.5, "color": "red", "flag": True, "count": 2},
        {"width": None, "color": "a colour never seen", "flag": None},
        {"color": "another one", "count": 1},
        {"color": None},
    ]
    assert client.post("/predict", json={"records": records}).status_code == 200
    counted = by(samples(client, "model_input_bin_total"), "column", "bin")
    assert counted[("width", "missing")] == 3  # null, and absent twice
    assert counted[("color", "red")] == 1
    assert counted[("color", "(other)")] == 2 and counted[("color", "(missing)")] == 1
    assert counted[("flag", "true")] == 1 and counted[("flag", "(missing)")] == 3
    for name in ("width", "color", "flag", "count"):
        assert sum(v for (c, _), v in counted.items() if c == name) == len(records)
    unseen = by(samples(client, "model_input_unseen_total"), "column")
    assert unseen == {("color",): 2.0, ("flag",): 0.0}  # numeric columns have none
    assert sum(samples(client, "model_prediction_total").values()) == len(records)


def test_whatever_requests_hold_the_series_stay_those_of_the_profile(table_cfg) -> None:
    client = TestClient(create_app(Settings(model_path=table_cfg.paths.onnx, max_batch=64)))
    names = ("model_input_bin_total", "model_input_unseen_total", "model_prediction_total")
    series = {name: set(samples(client, name)) for name in names}
    rng = np.random.default_rng(0)
    for _ in range(5):
        records = [
            {
                "width": float(rng.normal(0, 1e6)),
                "color": "".join(rng.choice(list("abcdefgh"), 12)),
                "count": int(rng.integers(-1000, 1000)),
            }
            for _ in range(64)
        ]
        assert client.post("/predict", json={"records": records}).status_code == 200
    assert {name: set(samples(client, name)) for name in names} == series
    assert sum(samples(client, "model_input_unseen_total").values()) == 5 * 64


def test_refused_requests_count_nothing(image_model: Path) -> None:
    client = TestClient(create_app(Settings(model_path=image_model / "model.onnx")))
    assert client.post("/predict", json={"inputs": [[[[0.0]]]]}).status_code == 422
    assert set(samples(client, "model_prediction_total").values()) == {0.0}


def test_a_missing_or_foreign_profile_stops_the_service_in_one_line(
    image_model: Path, tmp_path: Path
) -> None:
    with pytest.raises(ModelError, match=r"drift profile not found at .*DRIFT_METRICS=false"):
        create_app(Settings(model_path=image_model / "model.onnx", profile_path=tmp_path / "x"))
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ModelError, match=r"bad.json is not a drift profile \(input: Field"):
        create_app(
            Settings(model_path=image_model / "model.onnx", profile_path=tmp_path / "bad.json")
        )
    reference = json.loads((image_model / "profile.json").read_text())
    reference["prediction"]["classes"] = list("abcdefghij")
    (tmp_path / "other.json").write_text(json.dumps(reference))
    with pytest.raises(ModelError, match=r"does not fit .*profiled classes \['a'"):
        create_app(
            Settings(model_path=image_model / "model.onnx", profile_path=tmp_path / "other.json")
        )
    reference["prediction"]["shares"] = [0.5, 0.5]
    (tmp_path / "short.json").write_text(json.dumps(reference))
    with pytest.raises(ModelError, match=r"prediction: 2 shares for 10 bins"):
        create_app(
            Settings(model_path=image_model / "model.onnx", profile_path=tmp_path / "short.json")
        )


def test_without_drift_metrics_the_service_needs_no_profile(
    image_model: Path, tmp_path: Path
) -> None:
    settings = Settings(
        model_path=image_model / "model.onnx", profile_path=tmp_path / "none", drift_metrics=False
    )
    client = TestClient(create_app(settings))
    assert client.post("/predict", json={"inputs": [np.zeros(ROW).tolist()]}).status_code == 200
    assert samples(client, "model_prediction_total") == {}
    assert dict(*samples(client, "model_info"))["profile_md5"] == ""
    assert client.get("/metadata").json()["serving"]["drift_metrics"] is False


class Lines(logging.Handler):
    """Collects the request log's lines."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def request_lines() -> Iterator[list[str]]:
    handler = Lines()
    logger = logging.getLogger("mlpipeline.serving.requests")
    logger.addHandler(handler)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)


@pytest.mark.parametrize("payload", [False, True])
def test_each_request_is_one_json_line_without_its_body_unless_configured(
    image_model: Path, request_lines: list[str], payload: bool
) -> None:
    settings = Settings(model_path=image_model / "model.onnx", log_payload=payload)
    client = TestClient(create_app(settings))
    body = {"inputs": np.full((3, *ROW), 7.0).tolist()}
    ok = client.post("/predict", json=body, headers={"x-request-id": "caller-42"})
    refused = client.post("/predict", content=b"{", headers={"content-type": "application/json"})
    client.get("/health")
    assert ok.headers["x-request-id"] == "caller-42"
    assert len(refused.headers["x-request-id"]) == 32  # none given: a new one
    entries = [json.loads(line) for line in request_lines]
    assert [(e["route"], e["status"]) for e in entries] == [
        ("/predict", 200),
        ("/predict", 400),
        ("/health", 200),
    ]
    first, second, _ = entries
    assert (
        first["request_id"] == "caller-42"
        and second["request_id"] == refused.headers["x-request-id"]
    )
    assert first["batch_size"] == 3 and "batch_size" not in second
    assert second["rejected"] == "json"
    assert all(e["model_version"] == "0123456789ab" and e["latency_ms"] > 0 for e in entries)
    assert set(first) >= {"time", "request_id", "method", "route", "status", "latency_ms"}
    if payload:
        assert json.loads(first["payload"]) == body and second["payload"] == "{"
    else:
        assert not any("payload" in e for e in entries)
        assert not any("inputs" in line for line in request_lines)


def test_a_request_id_that_is_not_a_plain_token_is_replaced(image_model: Path) -> None:
    client = TestClient(create_app(Settings(model_path=image_model / "model.onnx")))
    answer = client.get("/health", headers={"x-request-id": 'a"b\\n' + "x" * 200})
    assert len(answer.headers["x-request-id"]) == 32


def test_without_the_request_log_nothing_is_logged(
    image_model: Path, request_lines: list[str]
) -> None:
    settings = Settings(model_path=image_model / "model.onnx", request_log=False)
    client = TestClient(create_app(settings))
    assert "x-request-id" not in client.get("/health").headers
    assert request_lines == []


# The PSI: sum of (a - r) ln(a / r) over bins, shares floored at epsilon.


def test_psi_is_zero_for_the_reference_itself_and_grows_with_the_shift() -> None:
    reference = [0.25, 0.25, 0.5]
    assert bins.psi([25, 25, 50], reference, 1e-4) == 0
    small, large = bins.psi([30, 25, 45], reference, 1e-4), bins.psi([60, 20, 20], reference, 1e-4)
    assert 0 < small < large
    expected = (0.6 - 0.25) * math.log(0.6 / 0.25) + (0.2 - 0.25) * math.log(0.2 / 0.25)
    expected += (0.2 - 0.5) * math.log(0.2 / 0.5)
    assert large == pytest.approx(expected, rel=1e-12)


def test_psi_floors_empty_bins_at_epsilon_and_is_nan_without_counts() -> None:
    # the reference never saw bin 2, traffic never reaches bin 0: finite, large
    got = bins.psi([0, 50, 50], [0.5, 0.5, 0.0], 1e-4)
    expected = (1e-4 - 0.5) * math.log(1e-4 / 0.5) + 0 + (0.5 - 1e-4) * math.log(0.5 / 1e-4)
    assert got == pytest.approx(expected, rel=1e-12) and math.isfinite(got)
    assert math.isnan(bins.psi([0, 0, 0], [0.5, 0.5, 0.0], 1e-4))


def test_numeric_bins_put_edges_in_the_upper_bin_and_nan_in_missing() -> None:
    column = bins.numeric_column("x", np.array([1.0, 2.0, 3.0, 4.0, np.nan]), bins=4)
    assert column.edges == [1.75, 2.5, 3.25] and column.bins()[-1] == "missing"
    binner = bins.NumericBinner(column)
    got = binner.codes(np.array([-1.0, 1.75, 2.0, 3.25, 99.0, np.nan], dtype=np.float32))
    assert got.tolist() == [0, 1, 1, 3, 3, 4]
    assert column.shares == [0.2, 0.2, 0.2, 0.2, 0.2]


def test_categorical_bins_keep_the_most_frequent_values_and_fold_the_rest() -> None:
    texts = ["b"] * 5 + ["a"] * 5 + ["c"] * 2 + ["d"] + [""] * 2
    column = bins.categorical_column("x", texts, top_values=2, known_values=10)
    assert column.bins() == ["a", "b", "(other)", "(missing)"]  # ties by value
    assert column.known == ["a", "b", "c", "d"]
    counts, unseen = bins.CategoricalBinner(column).counts(["a", "c", "z", "", "y"])
    assert counts.tolist() == [1, 0, 3, 1] and unseen == 2
    forgetful = bins.categorical_column("x", texts, top_values=2, known_values=3)
    assert forgetful.known is None
    assert bins.CategoricalBinner(forgetful).counts(["c", "z"])[1] == 0  # unseen not counted


def _counted(registry) -> dict:
    from prometheus_client import generate_latest

    found = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            if sample.name.endswith("_total"):
                found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


@pytest.mark.parametrize("kind", ["image", "table", "regression"])
def test_requests_queued_and_flushed_count_what_one_whole_batch_counts(
    kind: str, image_model: Path, table_cfg, tmp_path: Path
) -> None:
    from prometheus_client import CollectorRegistry

    from mlpipeline.serving.drift import DriftCounters
    from mlpipeline.serving.model import load_model

    if kind == "image":
        profile = bins.read_profile(image_model / "profile.json")
        x = np.load(image_model / "x.npy")
        x[3] = np.nan  # NaN statistics: past the last bin, as searchsorted puts them
        feeds, outputs = {"input": x}, np.load(image_model / "reference.npy")
    else:
        cfg = table_cfg if kind == "table" else export_table_model(tmp_path, "regression")
        profile = bins.read_profile(cfg.paths.profile)
        model = load_model(Settings(model_path=cfg.paths.onnx, max_batch=64))
        records = [
            {"width": 9.5, "color": "red", "flag": True, "count": 2},
            {"width": None, "color": "a colour never seen", "flag": None},
            {"color": "blue", "count": 1, "width": 1e9},
            {"color": None, "width": 10.0},
        ] * 5
        from mlpipeline.serving.parsing import parse_records

        feeds = parse_records(json.dumps({"records": records}).encode(), model.columns, 64)
        outputs = model.predict(feeds)
    whole_registry, rows_registry = CollectorRegistry(), CollectorRegistry()
    whole = DriftCounters(profile, whole_registry)
    whole.count(feeds, outputs)
    whole.flush()
    rows = DriftCounters(profile, rows_registry)
    for start in range(0, len(outputs), 3):
        part = {k: v[start : start + 3] for k, v in feeds.items()}
        rows.count(part, outputs[start : start + 3])
    assert not any(_counted(rows_registry).values())  # queued, not counted yet
    rows.flush()
    counted = _counted(rows_registry)
    assert counted == _counted(whole_registry)
    assert sum(v for (name, _), v in counted.items() if name == "model_prediction_total") == len(
        outputs
    )
