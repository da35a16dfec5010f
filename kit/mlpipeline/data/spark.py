"""The Spark engine of the table data stages (`engine: spark`, docs/spark.md): ingest, prepare
and features run on Apache Spark (PySpark) and land the same outputs as the local engine
(`mlpipeline.data.sources.LocalTables`) on the machine that runs the stage, so that every later
stage reads them unchanged.

Spark reads the source (any path or URL it reads: a CSV or Parquet file or folder, `s3a://`, a
Delta table's snapshot as `mlpipeline.data.delta` lists its files), checks its columns, numbers
its rows in source order, applies the split and runs the fitted preprocessing on its executors.
The driver makes the decisions the local engine makes with the kit's own functions on bounded
data (the labels, a sample of at most `features.fit_rows` rows), so the splits and the fitted
preprocessing are the same by construction. pyspark is imported here only: the local engine
never pays for it.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from mlpipeline.artifacts import (
    TABLE_BATCH_ROWS,
    atomic_path,
    json_text,
    parquet_reader,
    parquet_writer,
    save_arrays,
    write_json,
    write_rows,
)
from mlpipeline.config import Config
from mlpipeline.config.schema import Spark
from mlpipeline.data.delta import snapshot, values_by_path
from mlpipeline.data.splits import SPLITS, prepare_table, read_meta, read_rows, split_table
from mlpipeline.determinism import sample_rows
from mlpipeline.errors import PipelineError, first_line

# pyarrow's CSV reader: these spellings are missing values (pyarrow.csv.ConvertOptions())
NULL_VALUES = (
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "N/A", "NA", "NULL", "NaN", "n/a", "nan", "null",
)  # fmt: skip
# pyarrow's type inference for CSV, in its order: integers, then floats, then booleans, else text
INTEGER = r"^[ \t]*-?[0-9]+[ \t]*$"
FLOAT = r"^[ \t]*[+-]?(([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|(?i:inf|infinity))[ \t]*$"
TRUE, FALSE = ("1", "True", "TRUE", "true"), ("0", "False", "FALSE", "false")
ROW = "_mlpipeline_row"  # each row's index in source order
# Spark's log on this process's stderr: warnings only, without the start-up banner and the
# warnings every local start gives (loopback host name, no native Hadoop library)
LOG4J2 = """\
rootLogger.level = warn
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n
logger.utils.name = org.apache.spark.util.Utils
logger.utils.level = error
logger.native.name = org.apache.hadoop.util.NativeCodeLoader
logger.native.level = error
"""
JAVA_HINT = (
    "engine: spark needs Java 17 or newer: install openjdk-17-jre-headless (Debian/Ubuntu) "
    "or set JAVA_HOME"
)


def spark_session(settings: Spark) -> Any:
    """The Spark session `settings` describe (one per process, reused), its log kept to
    warnings; PipelineError when pyspark or Java is missing or Spark does not start."""
    try:
        # pyspark: seconds to import, and an optional extra; the local engine never needs it
        from pyspark.sql import SparkSession
    except ImportError:
        raise PipelineError(
            "engine: spark needs pyspark: install the spark extra (`uv sync --extra spark` or "
            "`pip install -e '.[spark]'`)"
        ) from None
    remote = settings.master.startswith("sc://")
    if not remote:
        _check_java()
    builder = SparkSession.builder.appName(settings.app_name)
    builder = builder.remote(settings.master) if remote else builder.master(settings.master)
    log_conf = Path(tempfile.gettempdir()) / "mlpipeline-spark-log4j2.properties"
    log_conf.write_text(LOG4J2, encoding="utf-8")
    defaults = {
        "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile={log_conf.as_uri()}",
        "spark.ui.showConsoleProgress": "false",
        # a wide table's plan is logged truncated, with a warning, past 25 columns
        "spark.sql.debug.maxToStringFields": "10000",
        "spark.log.level": "WARN",
        "spark.sql.session.timeZone": "UTC",
    }
    # the executors' Python: PySpark takes it from PYSPARK_PYTHON when the session starts, and
    # reads spark.pyspark.python only under spark-submit, so the setting is passed on here;
    # local executors are this machine's processes: this Python, with the kit's packages
    if python := settings.conf.get("spark.pyspark.python"):
        os.environ["PYSPARK_PYTHON"] = str(python)
    elif settings.master.startswith("local"):
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    for key, value in {**defaults, **settings.conf}.items():
        builder = builder.config(key, str(value).lower() if isinstance(value, bool) else value)
    try:
        return builder.getOrCreate()
    except Exception as err:  # py4j's and Spark's own errors: the first line says what failed
        raise PipelineError(
            f"Spark did not start on spark.master={settings.master}: {_first_line(err)}"
        ) from None


def _check_java() -> None:
    """Refuse a machine without Java 17 or newer, before Spark fails with a long trace."""
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        raise PipelineError(JAVA_HINT)
    try:
        shown = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        raise PipelineError(JAVA_HINT) from None
    found = re.search(r'version "(\d+)', shown.stderr + shown.stdout)
    if not found or int(found.group(1)) < 17:
        raise PipelineError(f"{JAVA_HINT} (found: {(shown.stderr or '?').splitlines()[0]})")


def _first_line(err: Exception) -> str:
    """An error from Spark or an executor as one line: a PipelineError raised in a task is
    its own message."""
    if found := re.search(r"PipelineError: (.*)", str(err)):
        return found.group(1).strip()
    return first_line(err)


@contextmanager
def spark_errors() -> Iterator[None]:
    """Spark's errors (Java's, the executors') as one PipelineError line each."""
    try:
        yield
    except PipelineError:
        raise
    except Exception as err:
        if type(err).__module__.split(".")[0] not in ("pyspark", "py4j"):
            raise
        raise PipelineError(_first_line(err)) from None


def location(source: Any) -> str:
    """The source's path as Spark reads it: a URL as written, a local path made absolute."""
    text = source.location
    return text if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text) else str(Path(text).resolve())


def is_url(text: str) -> bool:
    """Whether Spark reads `text` from elsewhere than this machine's file system."""
    return bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text)) and not text.startswith("file:")


def with_row_index(frame: Any) -> Any:
    """`frame` (read from files, `_metadata` still available) with ROW, each row's index in
    source order (files by path, rows in file order), without a global sort: within a task,
    the rows of one block of a file come in order and `monotonically_increasing_id` counts
    them; the blocks' row counts give each block's first index."""
    # pyspark: seconds to import; SparkSession's import above has started the engine
    from pyspark.sql import functions as F

    frame = frame.select(
        "*",
        F.col("_metadata.file_path").alias("_file"),
        F.col("_metadata.file_block_start").alias("_block"),
        F.monotonically_increasing_id().alias("_id"),
    )
    blocks = (
        frame.groupBy("_file", "_block")
        .agg(F.count(F.lit(1)).alias("_rows"), F.min("_id").alias("_first"))
        .orderBy("_file", "_block")
        .collect()
    )
    start, bases = 0, []
    for block in blocks:
        bases.append((block["_file"], block["_block"], start - block["_first"]))
        start += block["_rows"]
    spark = frame.sparkSession
    base = spark.createDataFrame(bases, "_file string, _block long, _base long")
    indexed = frame.join(F.broadcast(base), ["_file", "_block"])
    return indexed.withColumn(ROW, F.col("_id") + F.col("_base")).drop(
        "_file", "_block", "_id", "_base", "_metadata"
    )


def csv_header(spark: Any, path: str, delimiter: str) -> list[str]:
    """The first line of a CSV file (or of the first file of a folder), parsed as pyarrow
    does: Spark itself renames columns named twice, which the local engine refuses."""
    line = spark.read.text(path).first()
    if line is None:
        return []
    return next(csv.reader(io.StringIO(line[0]), delimiter=delimiter, quotechar='"'))


def read_csv(spark: Any, path: str, delimiter: str) -> Any:
    """A CSV file or folder as the local engine reads it (pyarrow): the spellings of missing
    values null, each column typed integer, float, boolean or text by pyarrow's rules."""
    # pyspark: seconds to import; SparkSession's import above has started the engine
    from pyspark.sql import functions as F

    raw = spark.read.csv(
        path, header=True, sep=delimiter, quote='"', escape='"', inferSchema=False, mode="FAILFAST"
    )
    raw = raw.select("*", "_metadata")
    names = [c for c in raw.columns if c != "_metadata"]
    nulled = raw.select(
        *(
            F.when(F.col(f"`{n}`").isin(*NULL_VALUES), None).otherwise(F.col(f"`{n}`")).alias(n)
            for n in names
        ),
        "_metadata",
    )
    checks = []
    for i, n in enumerate(names):
        value = F.col(f"`{n}`")
        present = value.isNotNull()
        whole = value.rlike(INTEGER) & F.expr(f"try_cast(trim(`{n}`) as bigint)").isNotNull()
        checks += [
            F.sum(F.when(present & ~whole, 1).otherwise(0)).alias(f"i{i}"),
            F.sum(F.when(present & ~value.rlike(FLOAT), 1).otherwise(0)).alias(f"f{i}"),
            F.sum(F.when(present & ~value.isin(*TRUE, *FALSE), 1).otherwise(0)).alias(f"b{i}"),
            F.count(value).alias(f"n{i}"),
        ]
    counts = nulled.agg(*checks).first() if names else None
    typed = []
    for i, n in enumerate(names):
        value = F.col(f"`{n}`")
        if counts[f"n{i}"] == 0:
            typed.append(value.alias(n))  # no values: text (pyarrow: the null type)
        elif counts[f"i{i}"] == 0:
            typed.append(F.trim(value).cast("bigint").alias(n))
        elif counts[f"f{i}"] == 0:
            typed.append(F.trim(value).cast("double").alias(n))
        elif counts[f"b{i}"] == 0:
            typed.append(value.isin(*TRUE).alias(n))
        else:
            typed.append(value.alias(n))
    return nulled.select(*typed, "_metadata")


@dataclass
class SparkTables:
    """The table data stages on Spark, as the settings `spark` and the seed say."""

    settings: Spark
    seed: int

    def ingest(self, source: Any, raw_dir: Path, directory: Path) -> None:
        """Read the source with Spark, check its columns as the local engine does, number its
        rows, sample them when `spark.sample_rows` says, and land `directory` (table.parquet,
        meta.json) as the local engine writes it."""
        path = location(source)
        if not is_url(path):
            _check_local(source, raw_dir)
        spark = spark_session(self.settings)
        with spark_errors():
            if source.kind == "csv":
                delimiter = source.separator()
                source.check_columns(csv_header(spark, path, delimiter))
                frame = read_csv(spark, path, delimiter)
            elif source.kind == "delta":
                frame = read_delta(spark, source, path)
            else:
                frame = spark.read.parquet(path).select("*", "_metadata")
            columns = [c for c in frame.columns if c != "_metadata"]
            features = source.check_columns(columns)
            frame = with_row_index(frame)
            total = frame.count()
            label = frame[f"`{source.label}`"]
            missing = np.array(
                sorted(r[ROW] for r in frame.filter(label.isNull()).select(ROW).collect()),
                dtype=np.int64,
            )
            if len(missing) and not source.drop_missing_label:
                raise PipelineError(
                    f"{len(missing)} of {total} rows of {source.path} have no "
                    f"'{source.label}': fill them, or drop them with "
                    "data.source.drop_missing_label=true"
                )
            keep = np.setdiff1d(np.arange(total, dtype=np.int64), missing)
            if self.settings.sample_rows and self.settings.sample_rows < len(keep):
                keep = keep[sample_rows(len(keep), self.settings.sample_rows, self.seed)]
            if len(keep) < total:
                frame = _take(frame, keep)
            rows = len(keep)
            if not rows:
                raise PipelineError("the source has no rows; point data.source at a non-empty file")
            order = [*features, source.label]
            with atomic_path(directory, is_dir=True) as out:
                _land(frame.select(*(f"`{c}`" for c in order), ROW), out / "table.parquet")
                meta = {
                    "source": source.kind,
                    "label": source.label,
                    "feature_names": features,
                    "file_columns": columns,
                    "rows": rows,
                }
                write_json(out / "meta.json", meta)

    def prepare(self, data: Any, ingested: dict[str, Any], cfg: Config, task: Any) -> Any:
        """The labels of the landed table `data` (mlpipeline.data.sources.Table; `ingested`:
        its meta.json) encoded, checked and split on the driver by the kit's own functions (one
        column); Spark applies the split to the rows and the driver lands each split."""
        result = prepare_table(data, task, cfg.data.split, cfg.seed)
        result = replace(result, meta={**result.meta, "file_columns": ingested["file_columns"]})
        spark = spark_session(self.settings)
        schema = data.schema(data.features)
        with spark_errors(), atomic_path(cfg.paths.prepared, is_dir=True) as out:
            frame = with_row_index(_read_landed(spark, cfg.paths.ingested / "table.parquet"))
            frame = frame.select(*(f"`{c}`" for c in data.features), ROW)
            for name in SPLITS:
                (out / name).mkdir()
                # the split's rows are numbered again from 0, as the local engine's x.parquet
                split_rows = _take(frame, result.rows[name])
                _land(split_rows, out / name / "x.parquet", schema)
                save_arrays(out / name, y=result.labels[name])
            write_json(out / "meta.json", result.meta)
        return result

    def write_features(self, cfg: Config) -> tuple[dict[str, Any], str]:
        """Column kinds and the preprocessing fitted on the driver by the kit's own functions
        (on a sample of at most `features.fit_rows` training rows); Spark runs the fitted
        preprocessing on every split's rows and the driver lands them as x.npy."""
        # the table features import scikit-learn (seconds), as the local engine's do
        from mlpipeline.data import features as table

        source = cfg.paths.prepared
        meta = read_meta(source)
        train = split_table(source, "train")
        columns = table.infer_columns(train, cfg.features)
        preprocessor = table.fit(train, columns, cfg.features, cfg.seed)
        names = table.feature_names(preprocessor)
        spark = spark_session(self.settings)
        with spark_errors(), atomic_path(cfg.paths.features, is_dir=True) as out:
            for split in SPLITS:
                (out / split).mkdir()
                frame = with_row_index(_read_landed(spark, source / split / "x.parquet"))
                frame = frame.select(*(f"`{c.name}`" for c in columns), ROW)
                rows = split_table(source, split).metadata.num_rows
                x = frame.mapInArrow(
                    _transform(preprocessor, columns), f"{ROW} long, x array<float>"
                )
                write_rows(out / split / "x.npy", _landed_rows(x, len(names)), rows, len(names))
                shutil.copy2(source / split / "y.npy", out / split / "y.npy")
            test = split_table(source, "test")
            first = np.arange(min(4, test.metadata.num_rows))
            probes = table.probe_rows(read_rows(test, first, [c.name for c in columns]), columns)
            probe_x = preprocessor.transform(table.record_frame(probes, columns))
            (out / "probes.json").write_text(json_text(probes), encoding="utf-8")
            save_arrays(out, probes=np.asarray(probe_x, dtype=np.float32))
            model = table.to_onnx(preprocessor, columns, cfg.export.opset)
            (out / "preprocess.onnx").write_bytes(model.SerializeToString())
            write_json(out / "schema.json", table.schema(columns, preprocessor))
            out_meta = {
                **meta,
                "input_shape": [len(names)],
                "columns": [{"name": c.name, "kind": c.kind, "type": c.type} for c in columns],
                "feature_names": names,
                "feature_columns": table.feature_columns(preprocessor),
                "normalization": {"mean": [0.0] * len(names), "std": [1.0] * len(names)},
            }
            write_json(out / "meta.json", out_meta)
        kinds = {k: sum(c.kind == k for c in columns) for k in ("numeric", "categorical")}
        fitted = min(train.metadata.num_rows, cfg.features.fit_rows)
        return out_meta, (
            f"{kinds['numeric']} numeric and {kinds['categorical']} categorical columns -> "
            f"{len(names)} inputs, fitted on {fitted} training rows, transformed on Spark -> "
            f"{cfg.paths.features}"
        )


def read_delta(spark: Any, source: Any, path: str) -> Any:
    """The snapshot of the Delta table at `path` (`data.source.version`, else the latest): its
    files as delta-rs lists them, read as Parquet in the table's column order; a column that
    some files lack (added later) is null in their rows, and a partition column holds its
    file's value from the table's log, as the local engine reads them."""
    # pyspark: seconds to import; SparkSession's import above has started the engine
    from pyspark.sql import functions as F

    snap = snapshot(path, source.version)
    # delta-rs names S3 objects s3://, which Spark's Hadoop connector reads as s3a://
    files = [re.sub(r"^s3://", "s3a://", f) for f in snap.files]
    frame = spark.read.option("mergeSchema", "true").parquet(*files).select("*", "_metadata")
    if snap.partitions:
        # the values from the log, not from the folders' names, whose escaping writers differ on
        names = [r[0] for r in frame.select("_metadata.file_path").distinct().collect()]
        values = values_by_path(snap, names)
        columns = ", ".join(f"`{c}` {kind}" for c, kind in snap.partitions.items())
        table = spark.createDataFrame(
            [(n, *(v.get(c) for c in snap.partitions)) for n, v in zip(names, values, strict=True)],
            f"_file string, {columns}",
        )
        file = F.col("_metadata.file_path")
        # a writer may also have kept a partition column in the files: the log's value wins
        frame = frame.drop(*(c for c in snap.partitions if c in frame.columns))
        frame = frame.join(F.broadcast(table), file == table["_file"]).drop("_file")
    return frame.select(*(f"`{c}`" for c in snap.schema.names), "_metadata")


def _check_local(source: Any, raw_dir: Path) -> None:
    """A local source, as the local engine checks it: under `paths.raw` (DVC tracks it), and
    there (a file, or a folder of files Spark reads together)."""
    path = source.path
    if not path.resolve().is_relative_to(raw_dir.resolve()):
        raise PipelineError(
            f"data.source.path {path} is outside {raw_dir}/: move it there (and `dvc add` "
            "it) so DVC tracks it as a dependency of ingest"
        )
    if not path.exists():
        raise PipelineError(
            f"data.source.path {path} not found: put your {source.kind.upper()} file (or "
            "folder of files) there or point data.source.path at it"
        )


def _read_landed(spark: Any, path: Path) -> Any:
    """A Parquet file this machine landed, read by Spark with its rows' `_metadata`."""
    return spark.read.parquet(str(path.resolve())).select("*", "_metadata")


def _take(frame: Any, keep: np.ndarray) -> Any:
    """The rows of `frame` whose ROW is in `keep` (sorted), renumbered 0.. in order."""
    schema = frame.schema

    def select(batches: Iterator[Any]) -> Iterator[Any]:
        for batch in batches:
            rows = batch.column(ROW).to_numpy()
            where = np.searchsorted(keep, rows)
            hit = (where < len(keep)) & (keep[np.minimum(where, len(keep) - 1)] == rows)
            batch = batch.filter(pa.array(hit))
            new = pa.array(where[hit].astype(np.int64))
            yield batch.set_column(batch.schema.get_field_index(ROW), ROW, new)

    return frame.mapInArrow(select, schema)


def _transform(preprocessor: Any, columns: list[Any]) -> Any:
    """A mapInArrow function: each batch's rows through the fitted preprocessing (which
    travels with the function to the executors), as float32 vectors beside their ROW."""
    # as write_features: scikit-learn, seconds to import
    from mlpipeline.data.features import transform

    def run(batches: Iterator[Any]) -> Iterator[Any]:
        for batch in batches:
            (x,) = transform(preprocessor, iter([batch]), columns)
            width = x.shape[1]
            offsets = pa.array(np.arange(0, (len(x) + 1) * width, width, dtype=np.int32))
            vectors = pa.ListArray.from_arrays(offsets, pa.array(x.ravel(), pa.float32()))
            yield pa.RecordBatch.from_arrays([batch.column(ROW), vectors], [ROW, "x"])

    return run


def _ordered_parts(frame: Any) -> Iterator[Any]:
    """`frame`'s rows in ROW order as pyarrow.RecordBatch, a part file at a time: Spark sorts
    them into part files in a temporary folder (removed after), read here in order."""
    scratch = Path(tempfile.mkdtemp(prefix="mlpipeline-spark-"))
    try:
        frame.orderBy(ROW).write.parquet(str(scratch / "rows"))
        for part in sorted((scratch / "rows").glob("part-*.parquet")):
            yield from parquet_reader(part).iter_batches(batch_size=TABLE_BATCH_ROWS)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _landed_rows(frame: Any, width: int) -> Iterator[np.ndarray]:
    """The feature vectors of `frame` (ROW, x) in ROW order, as float32 arrays of rows."""
    for batch in _ordered_parts(frame):
        values = batch.column("x").flatten().to_numpy(zero_copy_only=False)
        yield np.asarray(values, dtype=np.float32).reshape(-1, width)


def _land(frame: Any, path: Path, schema: Any = None) -> Any:
    """Write `frame`'s columns but ROW, in ROW order, to the Parquet file `path` as the local
    engine writes a table (parquet_writer, row groups of TABLE_BATCH_ROWS); `schema`: the
    Arrow types to write, else those Spark gives (every column nullable, no Spark metadata)."""
    writer, pending, held = None, [], 0
    try:
        for batch in _ordered_parts(frame):
            batch = batch.drop_columns([ROW]) if hasattr(batch, "drop_columns") else batch
            if schema is None:
                schema = pa.schema([pa.field(f.name, f.type) for f in batch.schema])
            batch = pa.RecordBatch.from_arrays(
                [batch.column(f.name).cast(f.type) for f in schema], schema=schema
            )
            if writer is None:
                writer = parquet_writer(path, schema)
            pending.append(batch)
            held += batch.num_rows
            while held >= TABLE_BATCH_ROWS:
                whole = pa.Table.from_batches(pending, schema=schema)
                writer.write_table(whole.slice(0, TABLE_BATCH_ROWS))
                rest = whole.slice(TABLE_BATCH_ROWS)
                pending, held = rest.to_batches(), rest.num_rows
        if writer is None:  # no rows: the columns Spark gives
            names = [f.name for f in frame.schema if f.name != ROW]
            schema = schema or pa.schema([pa.field(n, pa.string()) for n in names])
            writer = parquet_writer(path, schema)
        if held:
            writer.write_table(pa.Table.from_batches(pending, schema=schema).combine_chunks())
    finally:
        if writer is not None:
            writer.close()
    return schema
