"""Where the data comes from: one registry of source kinds, each a function from its config
section to the data in memory: image arrays (`Dataset`) or a table's columns (`Table`). A new
kind is a loader here, a schema class in `mlpipeline.config.schema` and a file in conf/data/."""

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
class Table:
    """A table as read: Arrow columns, the feature columns' names and the label's."""

    table: Any  # pyarrow.Table: the feature columns, then the label
    label: str
    features: list[str]

    def meta(self, kind: str) -> dict[str, Any]:
        """The ingested meta.json for a table, which `prepare` reads."""
        return {
            "source": kind,
            "label": self.label,
            "feature_names": self.features,
            "rows": self.table.num_rows,
        }


@dataclass(frozen=True)
class Dataset:
    """Image arrays, integer labels and what they mean."""

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


def load_table(source: TableSource, raw_dir: Path) -> Table:
    """A CSV or Parquet file: the label column and the feature columns, read column by column
    into Arrow (no row objects, no pandas copy). Rows without a label are refused, or dropped
    with data.source.drop_missing_label."""
    import pyarrow.compute as pc

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
    table = _read_table(path, source.kind)
    columns = table.column_names
    if source.label not in columns:
        raise PipelineError(
            f"label column '{source.label}' not in {path}; {suggest(source.label, columns)}"
            f"set data.source.label to one of: {', '.join(columns)}"
        )
    features = source.features or [c for c in columns if c != source.label]
    missing = [c for c in features if c not in columns]
    if missing:
        raise PipelineError(
            f"data.source.features names {missing}, not columns of {path}; "
            f"{suggest(str(missing[0]), columns)}columns: {', '.join(columns)}"
        )
    if not features:
        raise PipelineError(f"{path} has no feature columns besides '{source.label}'")
    table = table.select([*features, source.label])
    unlabelled = table.column(source.label).null_count
    if unlabelled and not source.drop_missing_label:
        raise PipelineError(
            f"{unlabelled} of {table.num_rows} rows of {path} have no '{source.label}': fill "
            "them, or drop them with data.source.drop_missing_label=true"
        )
    if unlabelled:
        table = table.filter(pc.is_valid(table.column(source.label)))
    return Table(table, source.label, list(features))


def _read_table(path: Path, kind: str) -> Any:
    """The file as an Arrow table; a CSV configured as Parquet (or the reverse) says so.
    Empty fields and the usual spellings of missing (NA, NaN, null) are missing values."""
    import pyarrow as pa
    import pyarrow.csv as pv
    import pyarrow.parquet as pq

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
        if kind == "parquet":
            return pq.read_table(path)
        options = pv.ConvertOptions(strings_can_be_null=True)
        return pv.read_csv(path, convert_options=options)
    except (pa.ArrowException, OSError) as err:
        reason = " ".join(str(err).split())[:200]
        raise PipelineError(f"cannot read {path} as {kind}: {reason}") from None


# kind (data.source.kind) -> loader; each takes its config section and the raw-data folder
SOURCES: dict[str, Callable[[Any, Path], Dataset | Table]] = {
    "digits": load_digits,
    "csv": load_table,
    "parquet": load_table,
}


def load_source(source: DigitsSource | TableSource, raw_dir: Path) -> Dataset | Table:
    """Load the configured source."""
    data = SOURCES[source.kind](source, raw_dir)
    rows = data.table.num_rows if isinstance(data, Table) else len(data.y)
    if rows == 0:
        raise PipelineError("the source has no rows; point data.source at a non-empty file")
    return data


def write_ingested(data: Dataset | Table, directory: Path, kind: str) -> None:
    """The ingested format, replaced atomically: images as x.npy and y.npy, tables as
    table.parquet; meta.json beside either."""
    import pyarrow.parquet as pq

    with atomic_path(directory, is_dir=True) as out:
        if isinstance(data, Table):
            pq.write_table(data.table, out / "table.parquet")
        else:
            save_arrays(out, x=data.x, y=data.y)
        write_json(out / "meta.json", data.meta(kind))


def read_ingested(directory: Path) -> tuple[Dataset | Table, dict[str, Any]]:
    """What `write_ingested` wrote, and its meta.json."""
    import pyarrow.parquet as pq

    if not (directory / "meta.json").is_file():
        raise PipelineError(f"{directory}/meta.json not found: run the ingest stage first")
    meta = read_json(directory / "meta.json")
    if "label" in meta:
        table = pq.read_table(directory / "table.parquet", memory_map=True)
        return Table(table, meta["label"], meta["feature_names"]), meta
    x, y = load_array(directory / "x.npy"), load_array(directory / "y.npy")
    return Dataset(x, y, meta["classes"], None), meta
