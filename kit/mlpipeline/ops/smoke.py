"""What a smoke check of a running model server sends and compares: the test split (named
records for a table model, tensors for the digits, the image files themselves for a model of
an image source) against the export stage's reference outputs."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

from mlpipeline.errors import PipelineError

ATOL = 1e-5  # probabilities; a regression's values are held to ATOL + RTOL * |value|
RTOL = 1e-5


def predict_all(url: str, rows: Any, batch: int) -> tuple[np.ndarray, list[str]]:
    """POST `rows` (a float32 array of examples, a list of records, or a list of image file
    paths, sent as multipart fields `file` within the service's body limit) in batches of at
    most `batch`; the outputs the service returns (probabilities in the order of /metadata's
    classes, or a regression's values) and the predicted classes (empty for a regression)."""
    outputs: list[np.ndarray] = []
    classes: list[str] = []
    with httpx.Client(base_url=url, timeout=30) as http:
        metadata = http.get("/metadata").json()
        labels = [str(c) for c in metadata.get("classes") or []]
        limit = int((metadata.get("serving") or {}).get("max_body_bytes") or 4 * 1024 * 1024)
        for request in _requests(rows, batch, limit):
            answer = http.post("/predict", **request)
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


def _requests(rows: Any, batch: int, limit: int) -> Iterator[dict[str, Any]]:
    """httpx's arguments of each request that sends `rows`, in order."""
    if len(rows) and isinstance(rows[0], Path):
        for part in _file_batches(rows, batch, limit):
            yield {"files": [("file", (p.name, p.read_bytes())) for p in part]}
        return
    for start in range(0, len(rows), batch):
        part = rows[start : start + batch]
        yield {"json": {"records": part} if isinstance(rows, list) else {"inputs": part.tolist()}}


# room for each multipart part's headers and boundary, which count towards the body limit
PART_OVERHEAD = 512


def _file_batches(paths: Sequence[Path], batch: int, limit: int) -> Iterator[list[Path]]:
    """`paths` in order, in batches of at most `batch` files and `limit` bytes of body."""
    part: list[Path] = []
    size = 0
    for path in paths:
        grown = size + path.stat().st_size + PART_OVERHEAD
        if part and (len(part) == batch or grown > limit):
            yield part
            part, grown = [], path.stat().st_size + PART_OVERHEAD
        part.append(path)
        size = grown
    if part:
        yield part


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
    parser.add_argument(
        "--images",
        type=Path,
        help="an image source: the folder its files are relative to (default: params.yaml's "
        "data.source.path, or that file's folder)",
    )
    parser.add_argument("--json", type=Path, help="also write the report here as JSON")


def load_check_inputs(
    test: Path, reference: Path, images: Path | None = None
) -> tuple[Any, np.ndarray]:
    """The smoke check's rows (a table's records, with None for missing values; the image
    files of an image source, which the prepared meta.json lists per split, relative to
    `images`; or an array) and the reference outputs; PipelineError if the pipeline has not
    written them."""
    if files := _split_files(test):
        root = images or image_root(Path("params.yaml"))
        paths = [root / name for name in files]
        if missing := [p for p in paths if not p.is_file()]:
            raise PipelineError(
                f"{len(missing)} test images not found, the first {missing[0]}: run "
                "`dvc pull` or `dvc checkout`, or pass --images"
            )
        if not reference.is_file():
            raise PipelineError(f"{reference} not found: run `dvc repro` first")
        return paths, np.load(reference)
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


def _split_files(test: Path) -> list[str] | None:
    """The files of the split at `test` as the prepared meta.json beside it lists them (an
    image source's), or None."""
    meta = test.parent / "meta.json"
    if not meta.is_file():
        return None
    files = json.loads(meta.read_text(encoding="utf-8")).get("files")
    return files.get(test.name) if isinstance(files, dict) else None


def image_root(params: Path) -> Path:
    """The folder an image source's files are relative to: `data.source.path` in `params`
    (the composed config), or its folder when it is a label file."""
    try:
        source = Path(yaml.safe_load(params.read_text(encoding="utf-8"))["data"]["source"]["path"])
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        raise PipelineError(
            f"{params} names no data.source.path: run `dvc repro`, or pass --images"
        ) from None
    # relative to the repository (the folder params.yaml is in), whatever the working directory
    return source if (params.parent / source).is_dir() else source.parent
