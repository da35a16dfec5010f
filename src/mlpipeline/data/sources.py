"""Where the data comes from: one registry of source kinds, each a function from its config
section to the data in memory: image arrays (`Dataset`) or a table's columns (`Table`). A new
kind is a loader here, a schema class in `mlpipeline.config.schema` and a file in conf/data/."""

from __future__ import annotations

import gzip
import importlib.util
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlpipeline.artifacts import (
    atomic_path,
    load_array,
    parquet_reader,
    parquet_writer,
    read_json,
    save_arrays,
    write_json,
)
from mlpipeline.config import DigitsSource, TableSource
from mlpipeline.config.schema import suggest
from mlpipeline.errors import PipelineError

PARQUET_MAGIC = b"PAR1"
GZIP_MAGIC = b"\x1f\x8b"
# the usual field separators, as data.source.delimiter spells them: a header read with another
# delimiter is one column whose name holds them
DELIMITERS = {";": "';'", "\t": "'\\t'", "|": "'|'", ",": "','"}
BATCH_ROWS = 262_144  # rows read and written at a time: bounds the memory a large table takes


@dataclass(frozen=True)
class Table:
    """A table read column-wise: a Parquet file read in batches of rows, never whole, or Arrow
    columns in memory (a CSV file); the feature columns' names and the label's."""

    source: Any  # pyarrow.parquet.ParquetFile, or a pyarrow.Table
    path: Path  # the file read, for messages
    label: str
    features: list[str]
    num_rows: int  # those with a label, when `drop_unlabelled`
    drop_unlabelled: bool = False  # rows without a label are skipped as they are read

    def batches(self, columns: list[str] | None = None, rows: int = BATCH_ROWS) -> Iterator[Any]:
        """pyarrow.RecordBatch of `columns` (the features, then the label), in file order."""
        import pyarrow as pa  # pyarrow: a second to import, and only tables use it
        import pyarrow.compute as pc

        names = list(columns or [*self.features, self.label])
        drop = self.drop_unlabelled and self.label not in names
        read = [*names, self.label] if drop else names
        if isinstance(self.source, pa.Table):
            batches = self.source.select(read).to_batches(max_chunksize=rows)
        else:
            batches = self.source.iter_batches(batch_size=rows, columns=read)
        try:
            for batch in batches:
                if self.drop_unlabelled:
                    batch = batch.filter(pc.is_valid(batch.column(self.label))).select(names)
                yield batch
        except (pa.ArrowException, OSError) as err:
            raise _unreadable(self.path, "parquet", err) from None

    def column(self, name: str) -> Any:
        """One column, whole (pyarrow.ChunkedArray)."""
        import pyarrow as pa  # pyarrow: a second to import, and only tables use it

        field = self.schema([name]).field(0)
        return pa.chunked_array([b.column(0) for b in self.batches([name])], type=field.type)

    def read(self) -> Any:
        """The whole table in memory (pyarrow.Table): the features, then the label."""
        import pyarrow as pa  # pyarrow: a second to import, and only tables use it

        return pa.Table.from_batches(list(self.batches()), schema=self.schema())

    def schema(self, columns: list[str] | None = None) -> Any:
        """The Arrow schema of `columns` (the features, then the label)."""
        import pyarrow as pa  # pyarrow: a second to import, and only tables use it

        full = self.source.schema if isinstance(self.source, pa.Table) else self.source.schema_arrow
        return pa.schema([full.field(n) for n in columns or [*self.features, self.label]])

    def meta(self, kind: str) -> dict[str, Any]:
        """The ingested meta.json for a table, which `prepare` reads."""
        return {
            "source": kind,
            "label": self.label,
            "feature_names": self.features,
            "rows": self.num_rows,
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
    into Arrow (no row objects, no pandas copy); Parquet is read in batches of rows as it is
    used, never whole. Rows without a label are refused, or dropped with
    data.source.drop_missing_label."""
    import pyarrow as pa  # pyarrow: a second to import, and only tables use it

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
    delimiter = csv_delimiter(source)
    table = _open_table(path, source.kind, delimiter)
    columns = table.column_names if isinstance(table, pa.Table) else table.schema_arrow.names
    if source.label not in columns:
        if source.kind == "csv" and (other := _header_delimiter(columns, delimiter)):
            raise PipelineError(
                f"label column '{source.label}' not in {path}, whose header looks separated "
                f"by {DELIMITERS[other]}, not {DELIMITERS.get(delimiter, repr(delimiter))}: "
                f"set data.source.delimiter={DELIMITERS[other]}"
            )
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
    data = Table(table, path, source.label, list(features), 0)
    rows = table.num_rows if isinstance(table, pa.Table) else table.metadata.num_rows
    unlabelled = data.column(source.label).null_count
    if unlabelled and not source.drop_missing_label:
        raise PipelineError(
            f"{unlabelled} of {rows} rows of {path} have no '{source.label}': fill "
            "them, or drop them with data.source.drop_missing_label=true"
        )
    return Table(table, path, source.label, list(features), rows - unlabelled, unlabelled > 0)


def csv_delimiter(source: TableSource) -> str:
    """data.source.delimiter as the character it names: `\\t` spelled out is a tab."""
    delimiter = "\t" if source.delimiter == "\\t" else source.delimiter
    if len(delimiter) != 1 or delimiter in '"\r\n':
        raise PipelineError(
            f"data.source.delimiter {source.delimiter!r} is not a field separator: set the one "
            "character between a CSV file's fields, e.g. ';', or '\\t' for a tab"
        )
    return delimiter


def _header_delimiter(columns: list[str], delimiter: str) -> str | None:
    """The separator a header seems to use instead of `delimiter`: the commonest of the
    usual ones found inside its column names, if any."""
    counts = {d: sum(c.count(d) for c in columns) for d in DELIMITERS if d != delimiter}
    found = max(counts, key=lambda d: counts[d])
    return found if counts[found] else None


def check_column_names(columns: list[str], path: Path) -> None:
    """Refuse a header whose columns cannot be told apart by name: names given twice, or none.
    Any other name is valid, whatever its characters."""
    if duplicated := sorted({c for c in columns if columns.count(c) > 1}):
        names = ", ".join(f"'{c}'" for c in duplicated)
        raise PipelineError(
            f"{path} has more than one column named {names}: rename them so that each column's "
            "name is its own"
        )
    if "" in columns:
        raise PipelineError(
            f"column {columns.index('') + 1} of {path} has no name: name it in the header"
        )


def _open_table(path: Path, kind: str, delimiter: str = ",") -> Any:
    """A Parquet file opened for reading in batches (pyarrow.parquet.ParquetFile), or a CSV
    file read into Arrow, gzip-compressed or not (told by its first bytes, whatever its
    name); a CSV configured as Parquet (or the reverse) says so, and so do columns without a
    name of their own. In CSV, empty fields and the usual spellings of missing (NA, NaN,
    null) are missing values."""
    import pyarrow as pa  # pyarrow: a second to import, and only tables use it
    import pyarrow.csv as pv

    with path.open("rb") as handle:
        head = handle.read(4)
    compressed = head[:2] == GZIP_MAGIC
    if compressed:
        try:
            with gzip.open(path) as inner:
                head = inner.read(4)
        except (OSError, EOFError) as err:  # a truncated or damaged archive
            raise _unreadable(path, "gzip", err) from None
    is_parquet = head == PARQUET_MAGIC
    if kind == "parquet" and compressed:
        raise PipelineError(
            f"{path} is gzip-compressed Parquet: decompress it (gunzip), as Parquet compresses "
            "its own columns"
            if is_parquet
            else f"{path} is gzip-compressed, not a Parquet file; if it is CSV, set "
            "data.source.kind: csv (compressed CSV is read as it is)"
        )
    if kind == "parquet" and not is_parquet:
        raise PipelineError(
            f"{path} is not a Parquet file (no PAR1 header); if it is CSV, set "
            "data.source.kind: csv"
        )
    if kind == "csv" and is_parquet:
        raise PipelineError(
            f"{path} is a Parquet file, not CSV: "
            f"{'decompress it (gunzip) and ' if compressed else ''}set data.source.kind: parquet"
        )
    try:
        if kind == "parquet":
            table = parquet_reader(path)
        else:
            source = pa.input_stream(str(path), compression="gzip" if compressed else None)
            table = pv.read_csv(
                source,
                parse_options=pv.ParseOptions(delimiter=delimiter),
                convert_options=pv.ConvertOptions(strings_can_be_null=True),
            )
    except (pa.ArrowException, OSError) as err:
        raise _unreadable(path, kind, err) from None
    check_column_names(table.schema_arrow.names if kind == "parquet" else table.column_names, path)
    return table


def read_table(path: Path, kind: str, delimiter: str = ",") -> Any:
    """A whole CSV or Parquet file as a pyarrow.Table (a batch of new data to check)."""
    import pyarrow as pa  # pyarrow: a second to import, and only tables use it

    table = _open_table(path, kind, delimiter)
    if isinstance(table, pa.Table):
        return table
    try:
        return table.read()
    except (pa.ArrowException, OSError) as err:
        raise _unreadable(path, kind, err) from None


def _unreadable(path: Path, kind: str, err: Exception) -> PipelineError:
    # a parser quotes the bytes it choked on: binary ones would garble the line
    text = "".join(
        c if c.isprintable() and c != "\ufffd" else "?" for c in " ".join(str(err).split())
    )
    return PipelineError(f"cannot read {path} as {kind}: {text[:200]}")


# kind (data.source.kind) -> loader; each takes its config section and the raw-data folder
SOURCES: dict[str, Callable[[Any, Path], Dataset | Table]] = {
    "digits": load_digits,
    "csv": load_table,
    "parquet": load_table,
}


def load_source(source: DigitsSource | TableSource, raw_dir: Path) -> Dataset | Table:
    """Load the configured source."""
    data = SOURCES[source.kind](source, raw_dir)
    rows = data.num_rows if isinstance(data, Table) else len(data.y)
    if rows == 0:
        raise PipelineError("the source has no rows; point data.source at a non-empty file")
    return data


def write_ingested(data: Dataset | Table, directory: Path, kind: str) -> None:
    """The ingested format, replaced atomically: images as x.npy and y.npy, tables as
    table.parquet; meta.json beside either."""
    with atomic_path(directory, is_dir=True) as out:
        if isinstance(data, Table):
            # a row group per batch read: the table is never held whole
            with parquet_writer(out / "table.parquet", data.schema()) as writer:
                for batch in data.batches():
                    writer.write_batch(batch)
        else:
            save_arrays(out, x=data.x, y=data.y)
        write_json(out / "meta.json", data.meta(kind))


def read_ingested(directory: Path) -> tuple[Dataset | Table, dict[str, Any]]:
    """What `write_ingested` wrote, and its meta.json."""
    if not (directory / "meta.json").is_file():
        raise PipelineError(f"{directory}/meta.json not found: run the ingest stage first")
    meta = read_json(directory / "meta.json")
    if "label" in meta:
        path = directory / "table.parquet"
        table = parquet_reader(path)
        rows = table.metadata.num_rows
        return Table(table, path, meta["label"], meta["feature_names"], rows), meta
    x, y = load_array(directory / "x.npy"), load_array(directory / "y.npy")
    return Dataset(x, y, meta["classes"], None), meta
