"""Where the data comes from: one registry of source kinds, each a function from its config
section to a `Dataset` in memory. A new kind is a loader here, a schema class in
`mlpipeline.config.schema` and a file in conf/data/."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlpipeline.artifacts import atomic_path, load_array, read_json, save_arrays, write_json
from mlpipeline.config import DigitsSource, TableSource
from mlpipeline.config.schema import suggest
from mlpipeline.errors import PipelineError

PARQUET_MAGIC = b"PAR1"


@dataclass(frozen=True)
class Dataset:
    """Features, integer labels and what they mean."""

    x: np.ndarray  # float32, (N, *input_shape)
    y: np.ndarray  # int64 class indices, (N,)
    classes: list[str]
    feature_names: list[str] | None  # None for images

    def meta(self, kind: str) -> dict[str, Any]:
        """What the arrays mean: the ingested meta.json, which `prepare` reads."""
        return {
            "source": kind,
            "classes": self.classes,
            "feature_names": self.feature_names,
            "input_shape": list(self.x.shape[1:]),
            "rows": len(self.y),
        }


def load_digits(_source: DigitsSource, _raw_dir: Path) -> Dataset:
    """scikit-learn's 8x8 digits as (N, 1, 8, 8) images with pixel values 0..16.

    Read from the file that scikit-learn ships, as its `load_digits` reads it, without
    importing scikit-learn, whose import is a large part of a short stage's start-up
    (tests/data/test_sources.py checks both give the same arrays).
    """
    import gzip
    import importlib.util

    spec = importlib.util.find_spec("sklearn")  # locates the package without running it
    if spec is None or not spec.submodule_search_locations:
        raise PipelineError("scikit-learn is not installed: run `make install`")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    with gzip.open(path, "rt") as handle:
        table = np.loadtxt(handle, delimiter=",")
    x = table[:, :-1].reshape(-1, 1, 8, 8).astype(np.float32)
    return Dataset(x, table[:, -1].astype(np.int64), [str(c) for c in range(10)], None)


def load_table(source: TableSource, raw_dir: Path) -> Dataset:
    """A CSV or Parquet file with one label column and numeric feature columns."""
    path = source.path
    if not path.resolve().is_relative_to(raw_dir.resolve()):
        raise PipelineError(
            f"data.source.path {path} is outside {raw_dir}/: move the file there "
            f"(and `dvc add` it) so DVC tracks it as a dependency of ingest"
        )
    if not path.is_file():
        raise PipelineError(
            f"data.source.path {path} not found: put your {source.kind.upper()} file there "
            "or point data.source.path at it"
        )
    frame = _read_frame(path, source.kind)
    columns = [str(c) for c in frame.columns]
    if source.label not in frame.columns:
        raise PipelineError(
            f"label column '{source.label}' not in {path}; {suggest(source.label, columns)}"
            f"set data.source.label to one of: {', '.join(columns)}"
        )
    features = source.features or [c for c in frame.columns if c != source.label]
    missing = [c for c in features if c not in frame.columns]
    if missing:
        raise PipelineError(
            f"data.source.features names {missing}, not columns of {path}; "
            f"{suggest(str(missing[0]), columns)}columns: {', '.join(columns)}"
        )
    if not features:
        raise PipelineError(f"{path} has no feature columns besides '{source.label}'")
    import pandas as pd

    text = [c for c in features if not pd.api.types.is_numeric_dtype(frame[c])]
    if text:
        raise PipelineError(
            f"feature columns {text} in {path} are not numeric: encode them as numbers "
            "or leave them out with data.source.features"
        )
    labels = frame[source.label]
    if labels.isna().any():
        rows = labels.index[labels.isna()].tolist()[:5]
        raise PipelineError(
            f"{int(labels.isna().sum())} rows of {path} have no '{source.label}' "
            f"(first rows: {rows}): fill or drop them"
        )
    classes = sorted({str(v) for v in labels})
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[str(v)] for v in labels], dtype=np.int64)
    x = frame[features].to_numpy(dtype=np.float32)
    return Dataset(x, y, classes, [str(c) for c in features])


def _read_frame(path: Path, kind: str) -> Any:
    """The file as a DataFrame; a CSV configured as Parquet (or the reverse) says so."""
    import pandas as pd

    with path.open("rb") as handle:
        is_parquet = handle.read(4) == PARQUET_MAGIC
    if kind == "parquet" and not is_parquet:
        raise PipelineError(
            f"{path} is not a Parquet file (no PAR1 header); if it is CSV, set "
            "data.source.kind: csv"
        )
    if kind == "csv" and is_parquet:
        raise PipelineError(f"{path} is a Parquet file, not CSV: set data.source.kind: parquet")
    try:
        return pd.read_csv(path) if kind == "csv" else pd.read_parquet(path)
    except Exception as err:  # pandas raises many types for unreadable files
        reason = " ".join(str(err).split())[:200]
        raise PipelineError(f"cannot read {path} as {kind}: {reason}") from None


# kind (data.source.kind) -> loader; each takes its config section and the raw-data folder
SOURCES: dict[str, Callable[[Any, Path], Dataset]] = {
    "digits": load_digits,
    "csv": load_table,
    "parquet": load_table,
}


def load_source(source: DigitsSource | TableSource, raw_dir: Path) -> Dataset:
    """Load the configured source."""
    dataset = SOURCES[source.kind](source, raw_dir)
    if len(dataset.y) == 0:
        raise PipelineError("the source has no rows; point data.source at a non-empty file")
    return dataset


def write_dataset(dataset: Dataset, directory: Path, kind: str) -> None:
    """The ingested format: x.npy, y.npy and meta.json in `directory`, replaced atomically."""
    with atomic_path(directory, is_dir=True) as out:
        save_arrays(out, x=dataset.x, y=dataset.y)
        write_json(out / "meta.json", dataset.meta(kind))


def read_dataset(directory: Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Features, labels and meta.json of an ingested dataset."""
    if not (directory / "meta.json").is_file():
        raise PipelineError(f"{directory}/meta.json not found: run the ingest stage first")
    meta = read_json(directory / "meta.json")
    return load_array(directory / "x.npy"), load_array(directory / "y.npy"), meta
