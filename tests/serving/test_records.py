"""The model service on table models (named records in, predictions out), exported by the
pipeline's own stages from a generated table with every kind of column."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers import export_table_model, mixed_table, serving

from mlpipeline.artifacts import read_json
from mlpipeline.ops import smoke as checks
from mlpipeline.serving.app import create_app
from mlpipeline.serving.settings import Settings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)  # Starlette 1.x's httpx2 hint
    from fastapi.testclient import TestClient

ROW = {"width": 9.5, "color": "green", "flag": False, "count": 3}


@pytest.fixture(scope="module", params=["classification", "regression"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """A table model whose file also has a row-number column, dropped with kind=drop."""
    frame = mixed_table(400, request.param)
    frame.insert(0, "rownames", range(1, len(frame) + 1))
    base = tmp_path_factory.mktemp(request.param)
    drop = "+features.columns.rownames.kind=drop"
    cfg = export_table_model(base, request.param, 400, drop, frame=frame)
    settings = Settings(model_path=cfg.paths.onnx, max_batch=64)
    with TestClient(create_app(settings)) as client:
        yield cfg, client


def test_test_rows_as_records_match_the_reference_outputs(served) -> None:
    cfg, client = served
    rows = pq.read_table(cfg.paths.prepared / "test" / "x.parquet").to_pylist()
    assert "rownames" in rows[0]  # the prepared rows hold the dropped column, as smoke sends
    reference = np.load(cfg.paths.reference)
    body = client.post("/predict", json={"records": rows[:64]}).json()
    if cfg.task == "regression":
        assert set(body) == {"predictions", "model_version"}
        assert np.abs(np.asarray(body["predictions"]) - reference[:64]).max() < 1e-4
    else:
        classes = body["probabilities"][0].keys()
        assert list(classes) == ["high", "low", "mid"]  # labelled by class, sorted
        probs = np.array([[p[c] for c in classes] for p in body["probabilities"]])
        assert np.abs(probs - reference[:64]).max() < 1e-5
        assert body["predictions"] == [list(classes)[i] for i in reference[:64].argmax(1)]


def test_missing_keys_nulls_and_unseen_categories_are_taken(served) -> None:
    _, client = served
    records: list[dict[str, Any]] = [
        ROW,
        {**ROW, "color": None, "width": None},
        {"count": 1},  # every other column missing
        {**ROW, "color": "a colour never seen"},
        {},
    ]
    answer = client.post("/predict", json={"records": records})
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["predictions"]) == len(records)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({**ROW, "width": "9.5"}, "record 1: column 'width' takes a number or null, got \"9.5\""),
        ({**ROW, "width": True}, "record 1: column 'width' takes a number or null, got true"),
        ({**ROW, "color": 3}, "record 1: column 'color' takes a string or null, got 3"),
        ({**ROW, "flag": "yes"}, "record 1: column 'flag' takes true or false or null"),
        ({**ROW, "colour": "red"}, "record 1: unknown column 'colour'; did you mean 'color'?"),
        ({**ROW, "width": 1e39}, "record 1: column 'width' value 1e+39 is beyond float32"),
        ([1, 2], "record 1 is not an object"),
    ],
    ids=[
        "text-for-number",
        "bool-for-number",
        "number-for-text",
        "text-for-bool",
        "unknown-column",
        "overflow",
        "not-an-object",
    ],
)
def test_a_record_of_the_wrong_shape_gets_a_422_naming_it(served, record, message) -> None:
    _, client = served
    answer = client.post("/predict", json={"records": [ROW, record]})
    assert answer.status_code == 422
    assert answer.json()["error"].startswith(message), answer.json()


def test_the_columns_the_model_dropped_are_accepted_and_ignored(served) -> None:
    """A row as the training file holds it: the dropped id and the label are ignored; a column
    the file never had is still refused."""
    cfg, client = served
    card = client.get("/metadata").json()
    assert card["input"]["ignored_columns"] == ["rownames", "target"]
    label = 51.5 if cfg.task == "regression" else "low"
    whole = client.post("/predict", json={"records": [{"rownames": 7, "target": label, **ROW}]})
    assert whole.status_code == 200, whole.text
    assert whole.json() == client.post("/predict", json={"records": [ROW]}).json()
    answer = client.post("/predict", json={"records": [{"rownames": "any type", **ROW}]})
    assert answer.status_code == 200, answer.text
    answer = client.post("/predict", json={"records": [{**ROW, "rowname": 7}]})
    assert answer.status_code == 422
    assert answer.json()["error"].startswith("record 0: unknown column 'rowname'")


def test_the_smoke_check_passes_on_the_prepared_test_rows(served) -> None:
    """make smoke's check: the prepared test rows (the dropped column among them) sent to a
    running service agree with the export stage's reference outputs."""
    cfg, _ = served
    assert cfg.paths.onnx == cfg.paths.onnx.parents[1] / "models/model.onnx"
    rows, reference = checks.load_check_inputs(cfg.paths.prepared / "test", cfg.paths.reference)
    classes = read_json(cfg.paths.card)["classes"] or []
    with serving(cfg.paths.onnx.parents[1]) as url:
        outputs, predicted = checks.predict_all(url, rows, 32)
    assert checks.compare(outputs, predicted, reference, classes) <= 1e-4


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"inputs": [[1.0]]}, 'body must be a JSON object {"records"'),
        ({"records": []}, "records is empty"),
        ({"records": [ROW] * 65}, "batch of 65 records is over the limit of 64"),
        ({"records": [ROW], "extra": 1}, "unknown keys ['extra']"),
    ],
)
def test_bodies_that_are_not_records_are_refused(served, body, message) -> None:
    _, client = served
    answer = client.post("/predict", json=body)
    assert answer.status_code == 422 and message in answer.json()["error"]


def test_metadata_and_openapi_describe_the_columns(served) -> None:
    cfg, client = served
    card = client.get("/metadata").json()
    assert card["input"]["kind"] == "records" and card["task"] == cfg.task
    schema = client.get("/openapi.json").json()["paths"]["/predict"]["post"]["requestBody"]
    record = schema["content"]["application/json"]["schema"]["properties"]["records"]["items"]
    assert record["properties"]["color"] == {"type": ["string", "null"]}
    assert record["properties"]["width"] == {"type": ["number", "null"]}
    assert "ignored" in record["properties"]["rownames"]["description"]
    answer = client.get("/openapi.json").json()["paths"]["/predict"]["post"]["responses"]["200"]
    name = "RegressionAnswer" if cfg.task == "regression" else "ClassificationAnswer"
    assert answer["content"]["application/json"]["schema"]["$ref"].endswith(f"/{name}")
