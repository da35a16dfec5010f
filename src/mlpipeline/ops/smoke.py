"""What a smoke check of a running model server sends and compares: the test split against
the export stage's reference outputs."""

from __future__ import annotations

import argparse
from pathlib import Path

import httpx
import numpy as np

from mlpipeline.errors import PipelineError

ATOL = 1e-5


def predict_all(url: str, x: np.ndarray, batch: int) -> tuple[np.ndarray, list[str]]:
    """POST `x` in batches of `batch` rows; the probabilities and classes the service returns."""
    probs: list[np.ndarray] = []
    classes: list[str] = []
    with httpx.Client(base_url=url, timeout=30) as http:
        for start in range(0, len(x), batch):
            answer = http.post("/predict", json={"inputs": x[start : start + batch].tolist()})
            if answer.status_code != 200:
                raise PipelineError(f"/predict answered {answer.status_code}: {answer.text[:200]}")
            body = answer.json()
            probs.append(np.asarray(body["probabilities"], dtype=np.float32))
            classes += body["classes"]
    return np.concatenate(probs), classes


def compare(
    probs: np.ndarray, classes: list[str], reference: np.ndarray, labels: list[str]
) -> float:
    """Max abs difference to the reference; PipelineError unless it is within ATOL and every
    class agrees."""
    if probs.shape != reference.shape:
        raise PipelineError(f"service returned shape {probs.shape}, reference {reference.shape}")
    diff = float(np.abs(probs - reference).max())
    expected = [labels[i] for i in reference.argmax(axis=1)]
    mismatched = sum(a != b for a, b in zip(classes, expected, strict=True))
    if diff > ATOL or mismatched:
        raise PipelineError(
            f"service disagrees with the reference outputs: max |Δp| {diff:.1e} (limit {ATOL:g}), "
            f"{mismatched} different classes"
        )
    return diff


def add_check_inputs(parser: argparse.ArgumentParser) -> None:
    """The options of a smoke check (the image's and the stack's): inputs, reference, --json."""
    parser.add_argument(
        "--x", type=Path, default=Path("data/prepared/test/x.npy"), help="test split inputs"
    )
    parser.add_argument(
        "--reference",
        type=Path,
        default=Path("models/reference.npy"),
        help="the export stage's reference probabilities on those inputs",
    )
    parser.add_argument("--json", type=Path, help="also write the report here as JSON")


def load_check_inputs(x: Path, reference: Path) -> tuple[np.ndarray, np.ndarray]:
    """The smoke check's inputs and reference outputs; PipelineError if the pipeline has not
    written them."""
    for path in (x, reference):
        if not path.is_file():
            raise PipelineError(f"{path} not found: run `dvc repro` first")
    return np.load(x), np.load(reference)
