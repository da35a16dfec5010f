"""What a smoke check of a running model server sends and compares: the test split (named
records for a table model, tensors for an image model) against the export stage's reference
outputs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from mlpipeline.errors import PipelineError

ATOL = 1e-5  # probabilities; a regression's values are held to ATOL + RTOL * |value|
RTOL = 1e-5


def predict_all(url: str, rows: Any, batch: int) -> tuple[np.ndarray, list[str]]:
    """POST `rows` (a float32 array of examples, or a list of records) in batches of `batch`;
    the outputs the service returns (probabilities in the order of /metadata's classes, or a
    regression's values) and the predicted classes (empty for a regression)."""
    outputs: list[np.ndarray] = []
    classes: list[str] = []
    records = isinstance(rows, list)
    with httpx.Client(base_url=url, timeout=30) as http:
        labels = [str(c) for c in http.get("/metadata").json().get("classes") or []]
        for start in range(0, len(rows), batch):
            part = rows[start : start + batch]
            body = {"records": part} if records else {"inputs": part.tolist()}
            answer = http.post("/predict", json=body)
            if answer.status_code != 200:
                raise PipelineError(f"/predict answered {answer.status_code}: {answer.text[:200]}")
            got = answer.json()
            if "probabilities" in got:  # a classification; a regression has the values alone
                probs = [[p[c] for c in labels] for p in got["probabilities"]]
                outputs.append(np.asarray(probs, dtype=np.float32))
                classes += got["predictions"]
            else:
                outputs.append(np.asarray(got["predictions"], dtype=np.float32))
    return np.concatenate(outputs), classes


def compare(
    outputs: np.ndarray, classes: list[str], reference: np.ndarray, labels: list[str]
) -> float:
    """Max abs difference to the reference; PipelineError unless it is within the tolerance
    and every class agrees (a classification's `labels` name the reference's columns)."""
    if outputs.shape != reference.shape:
        raise PipelineError(f"service returned shape {outputs.shape}, reference {reference.shape}")
    diff = np.abs(outputs - reference)
    beyond = int((diff > ATOL + (RTOL * np.abs(reference) if reference.ndim == 1 else 0)).sum())
    mismatched = 0
    if reference.ndim == 2:
        expected = [labels[i] for i in reference.argmax(axis=1)]
        mismatched = sum(a != b for a, b in zip(classes, expected, strict=True))
    if beyond or mismatched:
        raise PipelineError(
            f"service disagrees with the reference outputs: {beyond} values beyond the "
            f"tolerance (max difference {diff.max():.1e}, limit {ATOL:g}), {mismatched} "
            "different classes"
        )
    return float(diff.max()) if diff.size else 0.0


def add_check_inputs(parser: argparse.ArgumentParser) -> None:
    """The options of a smoke check (the image's and the stack's): inputs, reference, --json."""
    parser.add_argument(
        "--test",
        type=Path,
        default=Path("data/prepared/test"),
        help="the prepared test split (x.parquet of a table, or x.npy)",
    )
    parser.add_argument(
        "--reference",
        type=Path,
        default=Path("models/reference.npy"),
        help="the export stage's reference outputs on those rows",
    )
    parser.add_argument("--json", type=Path, help="also write the report here as JSON")


def load_check_inputs(test: Path, reference: Path) -> tuple[Any, np.ndarray]:
    """The smoke check's rows (a table's records, with None for missing values, or an array)
    and the reference outputs; PipelineError if the pipeline has not written them."""
    table, array = test / "x.parquet", test / "x.npy"
    rows_path = table if table.is_file() else array
    for path in (rows_path, reference):
        if not path.is_file():
            raise PipelineError(f"{path} not found: run `dvc repro` first")
    if rows_path == table:
        import pyarrow.parquet as pq  # a second to import, and only a table model needs it

        records = [
            {k: None if isinstance(v, float) and np.isnan(v) else v for k, v in row.items()}
            for row in pq.read_table(table).to_pylist()
        ]  # a NaN stored as such is a missing value too, and JSON has no NaN
        return records, np.load(reference)
    return np.load(array), np.load(reference)
