"""A Delta Lake table as a source (`data.source.kind: delta`): its snapshot at a version, read
through Delta's transaction log with delta-rs (the `deltalake` package), so both engines read
the same Parquet files in the same order and no Spark jars are needed. Reading the folder as
plain Parquet would also read the files that later versions removed."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

import pyarrow as pa
import pyarrow.parquet as pq

from mlpipeline.errors import PipelineError, first_line

# reader features whose files do not hold the rows as the snapshot has them: deleted rows
# still there (deletion vectors), columns stored under other names (column mapping)
UNREADABLE = {
    "deletionVectors": "deletion vectors (rows deleted without rewriting their files)",
    "columnMapping": "column mapping (columns stored under other names)",
}


@dataclass(frozen=True)
class Snapshot:
    """The data files of a Delta table at one version, and its columns."""

    root: str  # the table's folder: a path, or a URL
    files: list[str]  # sorted by path, the rows' order on both engines
    schema: Any  # pyarrow.Schema of the table, its columns in the table's order
    # a partitioned table: each partition column's Delta type, and each file's values
    partitions: dict[str, str] = field(default_factory=dict)
    values: list[dict[str, Any]] = field(default_factory=list)  # as `files`


def snapshot(location: str, version: int | None = None) -> Snapshot:
    """The snapshot of the Delta table at `location` at `version` (the latest when None), or
    PipelineError in one line: deltalake missing, no Delta table there, no such version, no
    rows, or files that do not hold the rows as read (deletion vectors, column mapping)."""
    if importlib.util.find_spec("deltalake") is None:
        raise PipelineError(
            "reading a Delta table needs deltalake: run `uv sync --extra delta` "
            "(or `pip install -e '.[delta]'`; `make install-dev` has it)"
        )
    # deltalake: a Rust extension, loaded only by a Delta source
    from deltalake import DeltaTable
    from deltalake.exceptions import DeltaError, TableNotFoundError

    try:
        table = DeltaTable(location, version=version)
    except TableNotFoundError:
        raise PipelineError(
            f"{location} is not a Delta table (no _delta_log/ there): point data.source.path at "
            "the table's folder, or set data.source.kind: parquet for plain Parquet files"
        ) from None
    except (DeltaError, OSError) as err:
        raise PipelineError(_unreadable(location, version, err)) from None
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
    # nullable as Spark reads every column, so that both engines land the same schema
    schema = pa.schema([f.with_nullable(True) for f in pa.schema(table.schema().to_arrow())])
    partitioned = table.metadata().partition_columns
    types = {f.name: f.type.type for f in table.schema().fields if f.name in partitioned}
    root = _folder(table.table_uri)
    # the log's paths are URL-encoded relative paths (absolute URLs for a shallow clone's)
    actions = pa.table(table.get_add_actions(flatten=True))
    files = [p if "://" in p else root + unquote(p) for p in actions.column("path").to_pylist()]
    if not files:
        raise PipelineError(
            f"the Delta table {location} has no rows at version {table.version()}: point "
            "data.source.version or data.source.path at one that has"
        )
    values = [
        dict(zip(partitioned, row, strict=True))
        for row in zip(
            *(actions.column(f"partition.{c}").to_pylist() for c in partitioned), strict=True
        )
    ] or [{} for _ in files]
    order = sorted(range(len(files)), key=files.__getitem__)
    return Snapshot(root, [files[i] for i in order], schema, types, [values[i] for i in order])


def read_local(snap: Snapshot) -> Any:
    """The snapshot's rows as one pyarrow.Table in the table's column order, its files read in
    order; a column a file lacks (added to the table later) is null in that file's rows, and a
    partition column holds its file's value."""
    parts = []
    for path, values in zip(snap.files, snap.values, strict=True):
        part = pq.read_table(path)
        rows = part.num_rows
        columns = {}
        for column in snap.schema:
            if column.name in values:
                value = values[column.name]
                columns[column.name] = (
                    pa.nulls(rows, column.type)
                    if value is None
                    else pa.repeat(pa.scalar(value, column.type), rows)
                )
            elif column.name in part.column_names:
                columns[column.name] = part.column(column.name).cast(column.type)
            else:
                columns[column.name] = pa.nulls(rows, column.type)
        parts.append(pa.table(columns, schema=snap.schema))
    # one chunk: the landed file's row groups are then those the Spark engine writes
    return pa.concat_tables(parts).combine_chunks()


def values_by_path(snap: Snapshot, paths: list[str]) -> list[dict[str, Any]]:
    """The partition values of the files another reader names by `paths` (URLs whose percent
    escapes decode to the files' own paths, as Spark's `_metadata.file_path`), in that order;
    PipelineError for a path that is none of the snapshot's files."""
    by_relative = {
        path[len(snap.root) :]: values
        for path, values in zip(snap.files, snap.values, strict=True)
        if path.startswith(snap.root)
    }
    found = []
    for path in paths:
        parts = unquote(path).split("/")
        # the table's files lie at some depth below its folder: the longest known tail
        tails = ("/".join(parts[i:]) for i in range(len(parts)))
        value = next((by_relative[t] for t in tails if t in by_relative), None)
        if value is None:
            raise PipelineError(f"{path} is not a file of the Delta table {snap.root}")
        found.append(value)
    return found


def _folder(uri: str) -> str:
    """The table's folder from delta-rs's table URI: a local path for `file://`, else the URL;
    ending in `/`."""
    parsed = urlparse(uri)
    folder = url2pathname(parsed.path) if parsed.scheme == "file" else uri
    return folder if folder.endswith("/") else folder + "/"


def _unreadable(location: str, version: int | None, err: Exception) -> str:
    """Why the Delta table at `location` cannot be read at `version`: a version it does not
    have (its range named), else delta-rs's own first line."""
    # deltalake: loaded by `snapshot` already, which failed
    from deltalake import DeltaTable
    from deltalake.exceptions import DeltaError

    if version is not None:
        try:
            latest = DeltaTable(location).version()
        except (DeltaError, OSError):  # the table itself is unreadable: delta-rs's line says why
            latest = None
        if latest is not None and not 0 <= version <= latest:
            return (
                f"data.source.version {version} is not a version of the Delta table {location}, "
                f"whose versions run from 0 to {latest}: set one of those, or null for the latest"
            )
        if latest is not None:
            return (
                f"cannot read version {version} of the Delta table {location} (its log may have "
                f"been cleaned up by VACUUM or checkpointing): {first_line(err)}"
            )
    return f"cannot read the Delta table {location}: {first_line(err)}"
