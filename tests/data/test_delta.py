"""A Delta Lake table as the source (`data.source.kind: delta`), on the local engine: the snapshot
Delta's log names, not every Parquet file in the folder; a version pinned; a partitioned table's
values from its log; what the kit cannot read refused in one line. tests/data/test_spark.py runs
the same tables through Spark."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import delta_table, mixed_table, partitioned_delta_table

from mlpipeline.errors import PipelineError
from mlpipeline.stages.ingest import ingest

deltalake = pytest.importorskip("deltalake", reason="deltalake is not installed: make install-dev")


def landed(cfg) -> pd.DataFrame:
    """The ingested table, ordered by id."""
    return pq.read_table(cfg.paths.ingested / "table.parquet").to_pandas().sort_values("id")


def delta_cfg(make_cfg, tmp_path: Path, *overrides: str):
    folder = tmp_path / "raw" / "events"
    if not folder.exists():
        delta_table(folder)
    return make_cfg(
        "data=tabular",
        "model=mlp",
        "data.source.kind=delta",
        f"data.source.path={folder}",
        "data.source.label=target",
        *overrides,
    )


def test_the_latest_snapshot_is_read_not_every_file_in_the_folder(make_cfg, tmp_path) -> None:
    cfg = delta_cfg(make_cfg, tmp_path)
    ingest(cfg)
    rows = landed(cfg)
    expected = deltalake.DeltaTable(cfg.data.source.kwargs()["path"]).to_pandas()
    assert len(list(Path(cfg.data.source.kwargs()["path"]).glob("*.parquet"))) > 3
    assert list(rows["id"]) == list(range(100, 800))  # no deleted row, none twice
    assert rows["weight"].isna().sum() == 500  # the new column is missing in the older rows
    expected = expected.sort_values("id")[list(rows.columns)]
    pd.testing.assert_frame_equal(
        rows.reset_index(drop=True), expected.reset_index(drop=True), check_dtype=False
    )


def test_a_pinned_version_is_read_as_it_was(make_cfg, tmp_path) -> None:
    cfg = delta_cfg(make_cfg, tmp_path, "data.source.version=1")
    ingest(cfg)
    rows = landed(cfg)
    assert list(rows["id"]) == list(range(600)) and "weight" not in rows.columns


def test_a_partitioned_tables_columns_come_from_its_log(make_cfg, tmp_path) -> None:
    folder = tmp_path / "raw" / "events"
    partitioned_delta_table(folder)
    cfg = delta_cfg(make_cfg, tmp_path)
    ingest(cfg)
    rows = landed(cfg).reset_index(drop=True)
    expected = deltalake.DeltaTable(folder).to_pandas().sort_values("id").reset_index(drop=True)
    assert rows["code"].tolist()[:5] == ["007", "x y", "a/b", "é", None]
    pd.testing.assert_frame_equal(rows, expected[list(rows.columns)], check_dtype=False)


@pytest.mark.parametrize(
    ("make", "overrides", "expected"),
    [
        (None, ["data.source.version=9"], "data.source.version 9 is not a version of the Delta "
         "table {path}, whose versions run from 0 to 3: set one of those, or null for the latest"),
        ("parquet", [], "{path} is not a Delta table (no _delta_log/ there): point "
         "data.source.path at the table's folder, or set data.source.kind: parquet for plain "
         "Parquet files"),
        ("parquet", ["data.source.kind=parquet", "data.source.version=1"],
         "data.source.version is a Delta table's version, and data.source.kind is parquet: "
         "set data.source.kind=delta, or data.source.version=null"),
        ("empty", [], "the Delta table {path} has no rows at version 0: point "
         "data.source.version or data.source.path at one that has"),
    ],
)  # fmt: skip
def test_what_cannot_be_read_is_refused_in_one_line(
    make_cfg, tmp_path, make: str | None, overrides: list[str], expected: str
) -> None:
    path = tmp_path / "raw" / "events"
    frame = pa.Table.from_pandas(mixed_table(50), preserve_index=False)
    if make == "parquet":
        path.mkdir(parents=True)
        pq.write_table(frame, path / "part-0.parquet")
    elif make == "empty":
        deltalake.write_deltalake(path, frame.slice(0, 0))
    cfg = delta_cfg(make_cfg, tmp_path, *overrides)
    with pytest.raises(PipelineError) as refusal:
        ingest(cfg)
    assert str(refusal.value) == expected.format(path=path)
