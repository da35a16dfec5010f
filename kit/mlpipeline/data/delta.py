"""A Delta Lake table as a source (`data.source.kind: delta`): its snapshot at a version, read
through Delta's transaction log with delta-rs (the `deltalake` package), so both engines read
the same Parquet files in the same order and no Spark jars are needed. Reading the folder as
plain Parquet would also read the files that later versions removed."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mlpipeline.errors import PipelineError

# reader features whose files do not hold the rows as the snapshot has them: deleted rows
# still there (deletion vectors), columns stored under other names (column mapping)
UNREADABLE = {
    "deletionVectors": "deletion vectors (rows deleted without rewriting their files)",
    "columnMapping": "column mapping (columns stored under other names)",
}


@dataclass(frozen=True)
class Snapshot:
    """The data files of a Delta table at one version, and its columns."""

    version: int
    files: list[str]  # paths or URLs as delta-rs gives them, sorted: the tables' row order
    columns: list[str]  # in the table's schema order
    schema: Any  # pyarrow.Schema of the table


def snapshot(location: str, version: int | None = None) -> Snapshot:
    """The snapshot of the Delta table at `location` at `version` (the latest when None), or
    PipelineError in one line: deltalake missing, no Delta table there, no such version, or
    files that do not hold the rows as read (partitions, deletion vectors, column mapping)."""
    if importlib.util.find_spec("deltalake") is None:
        raise PipelineError(
            "reading a Delta table needs deltalake: run `uv sync --extra delta` "
            "(or `pip install -e '.[delta]'`; `make install-dev` has it)"
        )
    # deltalake: a Rust extension, loaded only by a Delta source
    from deltalake import DeltaTable
    from deltalake.exceptions import DeltaError, TableNotFoundError

    try:
        latest = DeltaTable(location)
    except TableNotFoundError:
        raise PipelineError(
            f"{location} is not a Delta table (no _delta_log/ there): point data.source.path at "
            "the table's folder, or set data.source.kind: parquet for plain Parquet files"
        ) from None
    except (DeltaError, OSError) as err:
        raise PipelineError(f"cannot read the Delta table {location}: {_line(err)}") from None
    if version is not None and version != latest.version():
        if not 0 <= version <= latest.version():
            raise PipelineError(
                f"data.source.version {version} is not a version of the Delta table {location}, "
                f"whose versions run from 0 to {latest.version()}: set one of those, or null "
                "for the latest"
            )
        try:
            table = DeltaTable(location, version=version)
        except (DeltaError, OSError) as err:
            raise PipelineError(
                f"cannot read version {version} of the Delta table {location} (its log may have "
                f"been cleaned up by VACUUM or checkpointing): {_line(err)}"
            ) from None
    else:
        table = latest
    protocol = table.protocol()
    features = set(protocol.reader_features or [])
    if protocol.min_reader_version == 2:
        features.add("columnMapping")
    if unreadable := [UNREADABLE[f] for f in sorted(features) if f in UNREADABLE]:
        raise PipelineError(
            f"the Delta table {location} uses {' and '.join(unreadable)}, which the kit does not "
            "read: write a copy without them (e.g. Spark's REORG TABLE ... APPLY (PURGE)) and "
            "point data.source.path at it"
        )
    if partitions := table.metadata().partition_columns:
        raise PipelineError(
            f"the Delta table {location} is partitioned by {', '.join(partitions)}, whose values "
            "are not in its files: write an unpartitioned copy for training and point "
            "data.source.path at it"
        )
    # nullable as Spark reads every column, so that both engines land the same schema
    schema = pa.schema([f.with_nullable(True) for f in pa.schema(table.schema().to_arrow())])
    return Snapshot(table.version(), sorted(table.file_uris()), list(schema.names), schema)


def read_local(snap: Snapshot) -> Any:
    """The snapshot's rows as one pyarrow.Table in the table's column order, its files read in
    order; a column a file lacks (added to the table later) is null in that file's rows."""
    parts = []
    for path in snap.files:
        part = pq.read_table(path)
        parts.append(
            pa.table(
                {
                    field.name: part.column(field.name).cast(field.type)
                    if field.name in part.column_names
                    else pa.nulls(part.num_rows, field.type)
                    for field in snap.schema
                },
                schema=snap.schema,
            )
        )
    # one chunk: the landed file's row groups are then those the Spark engine writes
    return pa.concat_tables(parts).combine_chunks() if parts else snap.schema.empty_table()


def _line(err: Exception) -> str:
    return " ".join(str(err).split())[:300]
