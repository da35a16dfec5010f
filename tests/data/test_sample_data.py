"""The sample a new project gets for its first run (kit/mlpipeline/sample_data.py, which
`copier copy` runs with the standard library alone): the kit ingests it as the user's data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT

from mlpipeline.stages.ingest import ingest

SCRIPT = ROOT / "kit" / "mlpipeline" / "sample_data.py"


def write_sample(*args: str) -> subprocess.CompletedProcess:
    """Run the script as copier's task does, as a file; -S -I: without site-packages, so an
    import beyond the standard library fails."""
    return subprocess.run(
        [sys.executable, "-S", "-I", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("task", "label_type"), [("classification", "string"), ("regression", "double")]
)
def test_the_table_sample_is_a_mixed_table_the_kit_ingests(
    make_cfg, tmp_path: Path, task: str, label_type: str
) -> None:
    path = tmp_path / "raw" / "table.csv"
    assert (
        "wrote a sample"
        in write_sample("table", str(path), "--label=target", f"--task={task}").stdout
    )
    data = ingest(
        make_cfg(
            "data=tabular", f"task={task}", f"data.source.path={path}", "data.source.label=target"
        )
    )
    table = data.read()
    assert data.num_rows == 300
    assert str(table.schema.field("target").type) == label_type
    types = {str(table.schema.field(c).type) for c in data.features}
    assert {"double", "int64", "string", "bool"} <= types  # numbers, a category, a boolean
    assert table.column("weight").null_count > 0  # and a few values missing
    if task == "classification":
        assert sorted(set(table.column("target").to_pylist())) == ["alpha", "beta", "gamma"]


def test_the_image_sample_is_a_class_folder_the_kit_ingests(make_cfg, tmp_path: Path) -> None:
    path = tmp_path / "raw" / "images"
    write_sample("images", str(path))
    assert sorted(p.name for p in path.iterdir()) == ["circle", "square", "stripes"]
    cfg = make_cfg("data=images", f"data.source.path={path}")
    data = ingest(cfg)
    assert data.rows == 60 and data.skipped == []
    meta = json.loads((cfg.paths.ingested / "meta.json").read_text())
    assert meta["classes"] == ["circle", "square", "stripes"]
    assert meta["input_shape"] == [3, 64, 64]


def test_a_file_already_there_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "raw" / "table.csv"
    path.parent.mkdir()
    path.write_text("mine\n1\n")
    assert "no sample written" in write_sample("table", str(path)).stdout
    assert path.read_text() == "mine\n1\n"
    assert list(path.parent.iterdir()) == [path]  # nothing beside it either


def test_a_parquet_path_gets_no_sample_and_says_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "raw" / "table.parquet"
    assert "put your table there" in write_sample("table", str(path)).stdout
    assert not path.exists()
