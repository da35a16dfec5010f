"""Where the data comes from, and the data kind as one object: `data.source._target_` names a
`Source` class (checked against its signature before any work, as every `_target_` is), and
that object holds everything that differs by kind of data: how ingest reads and writes, how
prepare splits, how the features are built, the exported model's input and its checks, what
the profile bins, and the registered model's signature. The stages call its methods and never
test which kind they run (tests/test_architecture.py). The kit's kinds: image arrays
(`Digits`, scikit-learn's bundled digits) and tables (`TableFile`, a CSV or Parquet file, a
Delta table). A new kind is one `Source` subclass (in any package of `allowed_targets`) and
one conf/data/ file.
"""

from __future__ import annotations

import gzip
import importlib.util
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv
from pydantic import Field

from mlpipeline.artifacts import (
    TABLE_BATCH_ROWS,
    atomic_path,
    load_array,
    parquet_reader,
    parquet_writer,
    read_json,
    save_arrays,
    write_json,
)
from mlpipeline.config import Config, locate
from mlpipeline.config.schema import suggest
from mlpipeline.data.delta import read_local, snapshot
from mlpipeline.data.report import Scan, image_scan, scans_of, table_scan
from mlpipeline.data.spark import SparkTables
from mlpipeline.data.splits import (
    SPLITS,
    prepare_arrays,
    prepare_table,
    read_meta,
    read_rows,
    read_split,
    split_table,
    write_prepared,
    write_prepared_table,
)
from mlpipeline.errors import PipelineError
from mlpipeline.explain import ColumnAblation, Explainer, RegionOcclusion
from mlpipeline.plots import LARGEST_LOSS, largest_loss_grid

PARQUET_MAGIC = b"PAR1"
GZIP_MAGIC = b"\x1f\x8b"
# the usual field separators, as data.source.delimiter spells them: a header read with another
# delimiter is one column whose name holds them
DELIMITERS = {";": "';'", "\t": "'\\t'", "|": "'|'", ",": "','"}


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

    def batches(
        self, columns: list[str] | None = None, rows: int = TABLE_BATCH_ROWS
    ) -> Iterator[Any]:
        """pyarrow.RecordBatch of `columns` (the features, then the label), in file order."""
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
        field = self.schema([name]).field(0)
        return pa.chunked_array([b.column(0) for b in self.batches([name])], type=field.type)

    def read(self) -> Any:
        """The whole table in memory (pyarrow.Table): the features, then the label."""
        return pa.Table.from_batches(list(self.batches()), schema=self.schema())

    def schema(self, columns: list[str] | None = None) -> Any:
        """The Arrow schema of `columns` (the features, then the label)."""
        full = self.source.schema if isinstance(self.source, pa.Table) else self.source.schema_arrow
        return pa.schema([full.field(n) for n in columns or [*self.features, self.label]])

    def meta(self, kind: str) -> dict[str, Any]:
        """The ingested meta.json for a table, which `prepare` reads."""
        full = self.source.schema if isinstance(self.source, pa.Table) else self.source.schema_arrow
        return {
            "source": kind,
            "label": self.label,
            "feature_names": self.features,
            # every column of the file: a client may send a row as the file holds it
            "file_columns": list(full.names),
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


def load_digits(_source: Any, _raw_dir: Path) -> Dataset:
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


def load_table(source: TableFile, raw_dir: Path) -> Table:
    """A CSV or Parquet file, or a Delta table's snapshot: the label column and the feature
    columns, read column by column into Arrow (no row objects, no pandas copy); a Parquet file
    is read in batches of rows as it is used, never whole. Rows without a label are refused, or
    dropped with data.source.drop_missing_label."""
    path = source.path
    if not path.resolve().is_relative_to(raw_dir.resolve()):
        raise PipelineError(
            f"data.source.path {path} is outside {raw_dir}/: move the file there "
            f"(and `dvc add` it) so DVC tracks it as a dependency of ingest"
        )
    if source.kind == "delta":
        table = read_local(snapshot(str(path), source.version))
    elif path.is_dir():
        raise PipelineError(
            f"data.source.path {path} is a folder, not a file: a table source reads one "
            f"{source.kind.upper()} file; point data.source.path at it"
            + (f", e.g. {path / held[0]}" if (held := _files_in(path)) else "")
        )
    elif not path.is_file():
        raise PipelineError(
            f"data.source.path {path} not found: put your {source.kind.upper()} file there "
            "or point data.source.path at it"
        )
    else:
        table = _open_table(path, source.kind, csv_delimiter(source))
    columns = table.column_names if isinstance(table, pa.Table) else table.schema_arrow.names
    features = table_features(source, path, columns)
    data = Table(table, path, source.label, list(features), 0)
    rows = table.num_rows if isinstance(table, pa.Table) else table.metadata.num_rows
    unlabelled = data.column(source.label).null_count
    if unlabelled and not source.drop_missing_label:
        raise PipelineError(
            f"{unlabelled} of {rows} rows of {path} have no '{source.label}': fill "
            "them, or drop them with data.source.drop_missing_label=true"
        )
    return Table(table, path, source.label, list(features), rows - unlabelled, unlabelled > 0)


def table_features(source: TableFile, path: Path, columns: list[str]) -> list[str]:
    """The feature columns of a table with `columns` (both engines' check): PipelineError
    when the label or a configured feature column is not among them."""
    delimiter = csv_delimiter(source)
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
    return list(features)


def _files_in(folder: Path) -> list[str]:
    """The names of the data files in `folder`, for the message that it is not one: neither
    DVC's nor git's own files."""
    skip = (".dvc", ".gitignore")
    return sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.endswith(skip))


def csv_delimiter(source: TableFile) -> str:
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


def nonempty(data: Any) -> Any:
    """`data` (a Dataset or Table), refused when it has no rows."""
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


class Source:
    """A kind of data source: a `data.source._target_` class, built with the section's other
    keys. Subclasses load the data and say how each stage treats it."""

    kind: str  # how ingest's meta.json and the stages' lines name it: digits, csv, parquet
    input_kind: ClassVar[str]  # what the exported model takes: tensor or records
    network_input: ClassVar[str]  # the network's input inside the exported model
    tasks: ClassVar[tuple[str, ...]] = ("classification", "regression")  # what it can feed
    figures: ClassVar[tuple[str, ...]] = ()  # the PNGs (by name) `draw_figures` writes
    report_kind: ClassVar[str]  # the data report's "kind": table or images

    def load(self, raw_dir: Path) -> Dataset | Table:
        """The data in memory (or opened to be read in batches)."""
        raise NotImplementedError

    def ingest(self, raw_dir: Path, directory: Path) -> tuple[Dataset | Table, str]:
        """Load, refuse an empty source, and write the ingested format to `directory`; the data
        and a one-line summary (`describe`)."""
        data = nonempty(self.load(raw_dir))
        write_ingested(data, directory, self.kind)
        return data, self.describe(data)

    def describe(self, data: Any) -> str:
        """What `load` gave, for ingest's line."""
        raise NotImplementedError

    def prepare(self, cfg: Config, task: Any) -> tuple[Any, str]:
        """Split `paths.ingested` into `paths.prepared`; the result and what it holds."""
        raise NotImplementedError

    def write_features(self, cfg: Config) -> tuple[dict[str, Any], str]:
        """Write `paths.features` from `paths.prepared`; its meta.json and a summary."""
        raise NotImplementedError

    def model_input(self, meta: dict[str, Any]) -> dict[str, Any]:
        """The model card's `input`: what a client sends."""
        raise NotImplementedError

    def preprocessing(self, meta: dict[str, Any]) -> dict[str, Any]:
        """The model card's `preprocessing`."""
        raise NotImplementedError

    def finish_onnx(self, network: Path, out: Path, features_dir: Path) -> None:
        """The exported model at `out` from the network's ONNX file (which it may consume)."""
        network.replace(out)

    def export_checks(
        self, cfg: Config, meta: dict[str, Any], x: np.ndarray, rows: int
    ) -> list[tuple[str, np.ndarray, Iterator[dict[str, np.ndarray]]]]:
        """The export check's cases: (what the rows are, the network's input, the exported
        model's inputs for the same rows in batches of at most `rows`); the first is the test
        split."""
        return [
            (
                "test split",
                x,
                ({self.network_input: x[i : i + rows]} for i in range(0, len(x), rows)),
            )
        ]

    def draw_figures(self, x: Any, worst: list[tuple[int, str, str]], out_dir: Path) -> list[Path]:
        """The data kind's own PNGs of the test split in `out_dir`, named as `figures` says:
        `x` is the test features, `worst` the task's `largest_losses` rows. A table: none."""
        return []

    def profile_columns(
        self,
        profile: Any,
        cfg: Config,
        meta: dict[str, Any],
        rows: np.ndarray,
        sample: np.ndarray,
    ) -> list[Any]:
        """The profile's input bins of the sampled training rows (`rows`, whose network
        inputs are `sample`), built with `profile`, the service's profile module (passed in,
        so that the data stages do not depend on the service's code)."""
        raise NotImplementedError

    def profile_summary(self, columns: list[Any]) -> str:
        """What the profile's input bins are, for the stage's line."""
        raise NotImplementedError

    def report_scans(
        self, cfg: Config, profile: Any, batch_rows: int = TABLE_BATCH_ROWS
    ) -> dict[str, Scan]:
        """The data report's reading of each prepared split (mlpipeline.data.report.Scan),
        `batch_rows` rows at a time where the kind reads rows; `profile` is the service's
        profile module (passed in, as for `profile_columns`)."""
        raise NotImplementedError

    def explainer(self, meta: dict[str, Any]) -> Explainer:
        """How the explain stage perturbs this kind's inputs and names their parts
        (`meta`: features/meta.json)."""
        raise NotImplementedError

    def test_feeds(self, cfg: Config, card: dict[str, Any]) -> Iterator[dict[str, np.ndarray]]:
        """The exported model's inputs for the prepared test split, in batches."""
        raise NotImplementedError

    def signature(self, cfg: Config, card: dict[str, Any]) -> tuple[Any, Any]:
        """The registered model's input example and MLflow input schema."""
        raise NotImplementedError


class ImageArrays(Source):
    """What every kind of image source shares once ingest has made arrays (N, C, H, W): the
    features are the prepared arrays as they are (the network normalises its own input), the
    profile bins per-channel image statistics, evaluate draws the largest-loss grid, and the
    exported model takes the arrays' dtype."""

    figures = (LARGEST_LOSS,)
    report_kind = "images"

    def write_features(self, cfg: Config) -> tuple[dict[str, Any], str]:
        """The prepared arrays as they are: the network normalises its own input."""
        source = cfg.paths.prepared
        meta = read_meta(source)
        with atomic_path(cfg.paths.features, is_dir=True) as out:
            for split in SPLITS:
                shutil.copytree(source / split, out / split)
            write_json(out / "meta.json", meta)
        return meta, f"images as prepared -> {cfg.paths.features}"

    def profile_columns(
        self,
        profile: Any,
        cfg: Config,
        meta: dict[str, Any],
        rows: np.ndarray,
        sample: np.ndarray,
    ) -> list[Any]:
        """Per channel, the binned mean and standard deviation of each image."""
        return list(profile.image_columns(np.asarray(sample), cfg.monitoring.profile.bins))

    def profile_summary(self, columns: list[Any]) -> str:
        return f"{len(columns)} image statistics"

    def report_scans(
        self, cfg: Config, profile: Any, batch_rows: int = TABLE_BATCH_ROWS
    ) -> dict[str, Scan]:
        """Per channel, each image's mean and standard deviation, as numeric columns."""
        return scans_of(
            cfg.paths.prepared, lambda d, split: image_scan(d, split, profile.image_statistics)
        )

    def explainer(self, meta: dict[str, Any]) -> Explainer:
        """Occlusion of square windows; attributions per region of a 3x3 grid."""
        channels, height, width = meta["input_shape"]
        return RegionOcclusion((channels, height, width))

    def draw_figures(self, x: Any, worst: list[tuple[int, str, str]], out_dir: Path) -> list[Path]:
        """The test images with the largest loss, labelled."""
        return [largest_loss_grid(x, worst, out_dir)]

    def test_feeds(self, cfg: Config, card: dict[str, Any]) -> Iterator[dict[str, np.ndarray]]:
        """The test split, about 64 MiB of images at a time, as the exported model takes them."""
        x, _ = read_split(cfg.paths.prepared, "test", mmap=True)
        batch = max(1, (64 << 20) // max(1, int(np.prod(x.shape[1:])) * x.itemsize))
        for start in range(0, len(x), batch):
            yield {card["input"]["name"]: np.asarray(x[start : start + batch])}

    def signature(self, cfg: Config, card: dict[str, Any]) -> tuple[Any, Any]:
        # MLflow takes seconds to import, and only the register stage asks for a signature
        from mlflow.types import Schema, TensorSpec

        x, _ = read_split(cfg.paths.prepared, "test", mmap=True)
        example = np.asarray(x[:2])
        name = card["input"]["name"]
        return example, Schema([TensorSpec(example.dtype, (-1, *example.shape[1:]), name)])


class Digits(ImageArrays):
    """scikit-learn's bundled 8x8 digit images, as image tensors (a classification)."""

    input_kind = "tensor"
    network_input = "input"
    tasks = ("classification",)

    def __init__(self, kind: Literal["digits"] = "digits") -> None:
        self.kind = kind

    def load(self, raw_dir: Path) -> Dataset:
        return load_digits(self, raw_dir)

    def describe(self, data: Dataset) -> str:
        return (
            f"{len(data.y)} samples of shape {tuple(data.x.shape[1:])}, "
            f"{len(data.classes)} classes from {self.kind}"
        )

    def prepare(self, cfg: Config, task: Any) -> tuple[Any, str]:
        """Check and split the arrays; fit the normalisation constants on train."""

        data, meta = read_ingested(cfg.paths.ingested)
        result = prepare_arrays(data.x, data.y, meta, cfg.data.split, cfg.seed, task)
        write_prepared(result, cfg.paths.prepared)
        return result, f"{len(meta['classes'])} classes"

    def model_input(self, meta: dict[str, Any]) -> dict[str, Any]:
        return {
            "kind": self.input_kind,
            "name": self.network_input,
            "dtype": "float32",
            "shape": [None, *meta["input_shape"]],
        }

    def preprocessing(self, meta: dict[str, Any]) -> dict[str, Any]:
        return {
            "applied_inside_model": True,
            "note": "send raw pixels; the model subtracts mean and divides by std itself",
            "normalization": meta["normalization"],
        }


class LocalTables:
    """The table data stages in this process (`engine: local`): pyarrow and scikit-learn."""

    def ingest(self, source: TableFile, raw_dir: Path, directory: Path) -> Table:
        data = nonempty(load_table(source, raw_dir))
        write_ingested(data, directory, source.kind)
        return data

    def prepare(self, data: Table, ingested: dict[str, Any], cfg: Config, task: Any) -> Any:
        result = prepare_table(data, task, cfg.data.split, cfg.seed)
        result = replace(result, meta={**result.meta, "file_columns": ingested["file_columns"]})
        write_prepared_table(result, cfg.paths.prepared)
        return result

    def write_features(self, cfg: Config) -> tuple[dict[str, Any], str]:
        # the table features import scikit-learn (seconds); digits never need them
        from mlpipeline.data.features import write_table_features

        return write_table_features(cfg)


def engine_for(cfg: Config) -> Any:
    """The engine of the table data stages that `cfg.engine` names."""
    if cfg.engine == "spark":
        return SparkTables(cfg.spark, cfg.seed)
    return LocalTables()


class TableFile(Source):
    """A CSV or Parquet file or a Delta table under `paths.raw`: a label column and feature
    columns of numbers, text and booleans, with missing values. The exported model takes named
    records and runs the preprocessing fitted on the training split itself."""

    input_kind = "records"
    network_input = "features"  # mlpipeline.data.features.OUTPUT
    report_kind = "table"

    def __init__(
        self,
        path: Path,
        label: Annotated[str, Field(min_length=1)],
        kind: Literal["csv", "parquet", "delta"] = "csv",
        features: list[str] | None = None,
        drop_missing_label: bool = False,
        delimiter: Annotated[str, Field(min_length=1)] = ",",
        version: Annotated[int, Field(ge=0)] | None = None,
    ) -> None:
        self.path, self.label, self.kind = Path(path), label, kind
        self.location = str(path)  # as written: a URL the Spark engine reads (s3a://...)
        self.engine: Any = LocalTables()  # source_for sets the configured one
        self.features = None if features is None else list(features)
        # rows without a label are dropped instead of refused
        self.drop_missing_label = drop_missing_label
        # CSV: the one character between fields; `\t`, as a command line spells it, is a tab
        self.delimiter = delimiter
        # delta: the table's version to read (Delta's time travel); None reads the latest
        self.version = version

    def load(self, raw_dir: Path) -> Table:
        return load_table(self, raw_dir)

    def ingest(self, raw_dir: Path, directory: Path) -> tuple[Table, str]:
        """Read and land the table with the configured engine (`engine`); the Spark engine's
        table is then read where it landed."""
        if self.version is not None and self.kind != "delta":
            raise PipelineError(
                f"data.source.version is a Delta table's version, and data.source.kind is "
                f"{self.kind}: set data.source.kind=delta, or data.source.version=null"
            )
        data = self.engine.ingest(self, raw_dir, directory) or read_ingested(directory)[0]
        return data, self.describe(data)

    def separator(self) -> str:
        """The CSV field separator, checked (`csv_delimiter`)."""
        return csv_delimiter(self)

    def check_columns(self, columns: list[str]) -> list[str]:
        """The feature columns of a table with `columns` (the header), refused in one line
        when names repeat or are empty, or the label or a configured feature is missing."""
        check_column_names(columns, self.path)
        return table_features(self, self.path, columns)

    def describe(self, data: Table) -> str:
        return (
            f"{data.num_rows} rows, {len(data.features)} feature columns and label "
            f"'{data.label}' from {self.path} ({self.kind})"
        )

    def prepare(self, cfg: Config, task: Any) -> tuple[Any, str]:
        """Encode the label as the task says and split the rows; the columns stay as read."""
        data, ingested = read_ingested(cfg.paths.ingested)
        result = self.engine.prepare(data, ingested, cfg, task)
        classes = result.meta["classes"]
        return result, f"{len(classes)} classes" if classes else "a target"

    def write_features(self, cfg: Config) -> tuple[dict[str, Any], str]:
        """Column kinds, the preprocessing fitted on train (also as ONNX), the feature rows."""
        return self.engine.write_features(cfg)

    def model_input(self, meta: dict[str, Any]) -> dict[str, Any]:
        """The columns the model takes, and the file's others (the label, the columns dropped
        by data.source.features or kind=drop), which a record may hold and the service ignores."""
        taken = {c["name"] for c in meta["columns"]}
        return {
            "kind": self.input_kind,
            "columns": meta["columns"],
            "ignored_columns": [c for c in meta["file_columns"] if c not in taken],
            "note": "send raw columns by name; missing keys and nulls are missing values; the "
            "file's other columns are ignored",
        }

    def preprocessing(self, meta: dict[str, Any]) -> dict[str, Any]:
        return {
            "applied_inside_model": True,
            "note": "the fitted preprocessing (features/schema.json) runs inside the model",
        }

    def finish_onnx(self, network: Path, out: Path, features_dir: Path) -> None:
        """The fitted preprocessing (features/preprocess.onnx) in front of the network."""
        # the table features import scikit-learn (seconds); digits never need them
        from mlpipeline.data.features import with_preprocessing

        with_preprocessing(features_dir / "preprocess.onnx", network, out)
        network.unlink()

    def export_checks(
        self, cfg: Config, meta: dict[str, Any], x: np.ndarray, rows: int
    ) -> list[tuple[str, np.ndarray, Iterator[dict[str, np.ndarray]]]]:
        """The raw test rows, then the probe rows with missing values and unseen categories
        (features/probes.json)."""
        # the table features import scikit-learn (seconds); digits never need them
        from mlpipeline.data.features import onnx_feeds

        columns = meta["columns"]
        parquet = split_table(cfg.paths.prepared, "test")
        names = [c["name"] for c in columns]
        feeds = (
            onnx_feeds(b, columns) for b in parquet.iter_batches(batch_size=rows, columns=names)
        )
        probes = read_json(cfg.paths.features / "probes.json")
        probe_x = load_array(cfg.paths.features / "probes.npy")
        probe_feeds = iter([onnx_feeds(probes, columns)])
        return [("test split", x, feeds), ("probe rows", probe_x, probe_feeds)]

    def profile_columns(
        self,
        profile: Any,
        cfg: Config,
        meta: dict[str, Any],
        rows: np.ndarray,
        sample: np.ndarray,
    ) -> list[Any]:
        """The raw training columns the model takes (meta.json's), binned: quantiles and a
        missing slot for numbers, the most frequent values for categories."""
        # the table features import scikit-learn (seconds); digits never need them
        from mlpipeline.data.features import number_values, text_values

        settings = cfg.monitoring.profile
        names = [c["name"] for c in meta["columns"]]
        train = read_rows(split_table(cfg.paths.prepared, "train"), rows, names)
        columns: list[Any] = []
        for column in meta["columns"]:
            data = train.column(column["name"])
            if column["kind"] == "numeric":
                columns.append(
                    profile.numeric_column(column["name"], number_values(data), settings.bins)
                )
            else:
                columns.append(
                    profile.categorical_column(
                        column["name"],
                        text_values(data),
                        settings.top_values,
                        settings.known_values,
                    )
                )
        return columns

    def profile_summary(self, columns: list[Any]) -> str:
        kinds = {k: sum(c.kind == k for c in columns) for k in ("numeric", "categorical")}
        return f"{kinds['numeric']} numeric and {kinds['categorical']} categorical columns"

    def report_scans(
        self, cfg: Config, profile: Any, batch_rows: int = TABLE_BATCH_ROWS
    ) -> dict[str, Scan]:
        """The columns as prepared (those the features stage may drop too): numbers numeric,
        everything else categorical."""
        return scans_of(cfg.paths.prepared, lambda d, split: table_scan(d, split, batch_rows))

    def explainer(self, meta: dict[str, Any]) -> Explainer:
        """Ablation of whole source columns: their inputs grouped by features/meta.json."""
        if "feature_columns" not in meta:
            raise PipelineError(
                "features/meta.json does not say which column each input came from (written "
                "by an older kit): run the features stage again (dvc repro --force -s features)"
            )
        return ColumnAblation([c["name"] for c in meta["columns"]], meta["feature_columns"])

    def test_feeds(self, cfg: Config, card: dict[str, Any]) -> Iterator[dict[str, np.ndarray]]:
        # the table features import scikit-learn (seconds); digits never need them
        from mlpipeline.data.features import onnx_feeds

        columns = card["input"]["columns"]
        parquet = split_table(cfg.paths.prepared, "test")
        names = [c["name"] for c in columns]
        for batch in parquet.iter_batches(batch_size=65_536, columns=names):
            yield onnx_feeds(batch, columns)

    def signature(self, cfg: Config, card: dict[str, Any]) -> tuple[Any, Any]:
        """Each named column optional (a missing value is an input the model takes): built
        here, since MLflow's own inference drops a signature whose example has missing values."""
        # MLflow takes seconds to import, and only the register stage asks for a signature
        from mlflow.types import ColSpec, Schema

        columns = card["input"]["columns"]
        names = [c["name"] for c in columns]
        batches = split_table(cfg.paths.prepared, "test").iter_batches(
            batch_size=65_536, columns=names
        )
        test = pa.Table.from_batches([next(batches)])
        complete = test.drop_null()  # an example ONNX Runtime runs as MLflow feeds it
        example = (complete if complete.num_rows else test).slice(0, 2).to_pandas()
        inputs = Schema(
            [
                ColSpec("double" if c["kind"] == "numeric" else "string", c["name"], required=False)
                for c in columns
            ]
        )
        return example, inputs


def build_source(section: Any) -> Source:
    """The `Source` that a `data.source` config section names, built with its other keys."""
    target = locate(section.target)
    if not (isinstance(target, type) and issubclass(target, Source)):
        raise PipelineError(
            f"data.source._target_: {section.target!r} is not a "
            "mlpipeline.data.sources.Source class, which data.source must name"
        )
    try:
        return target(**section.kwargs())
    except TypeError as err:
        raise PipelineError(f"data.source: {section.target}: {err}") from None


def source_for(cfg: Config) -> Source:
    """The configured data source, once it is known to feed the configured task."""
    source = build_source(cfg.data.source)
    if cfg.task not in source.tasks:
        raise PipelineError(
            f"task {cfg.task} needs a data source that feeds it ({type(source).__name__} "
            f"feeds {', '.join(source.tasks)}): for a numeric label set data=tabular and "
            "data.source.label"
        )
    if isinstance(source, TableFile):
        source.engine = engine_for(cfg)
    elif cfg.engine != "local":
        raise PipelineError(
            f"engine: {cfg.engine} runs the table data stages only, and data.source is "
            f"{type(source).__name__} ({source.report_kind}): set engine=local"
        )
    return source
