"""The Spark engine of the table data stages (mlpipeline.data.spark) against the local engine,
on a real local Spark (`local[2]`): the same tables through both give the same bytes in
data/ingested, data/prepared and data/features (splits, labels, features, preprocess.onnx,
meta.json). Without Java or pyspark these tests skip, saying so; `.ci/run` installs Java
(scripts/install-test-tools.sh) and sets MLPIPELINE_REQUIRE_SPARK=1, so there they fail instead.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import CONF, delta_table, mixed_table, partitioned_delta_table, tiny

from mlpipeline.config import compose_config
from mlpipeline.data.sources import source_for
from mlpipeline.determinism import sample_rows
from mlpipeline.errors import PipelineError
from mlpipeline.stages.features import features
from mlpipeline.stages.ingest import ingest
from mlpipeline.stages.prepare import prepare

# spellings of a missing value that the local engine (pyarrow) reads as missing
MISSING = ["", "NA", "null", "N/A", "NaN", "NULL", "nan"]


@pytest.fixture(scope="module")
def spark() -> Iterator[None]:
    """A real local Spark for the module (one session, reused by every stage run here)."""
    reason = None
    if importlib.util.find_spec("pyspark") is None:
        reason = "pyspark is not installed: make install-dev (the spark extra)"
    elif not (shutil.which("java") or os.environ.get("JAVA_HOME")):
        reason = "no Java: scripts/install-test-tools.sh openjdk-17-jre-headless"
    if reason:
        if os.environ.get("MLPIPELINE_REQUIRE_SPARK") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    yield
    from pyspark.sql import SparkSession

    if (session := SparkSession.getActiveSession()) is not None:
        session.stop()


def config(base: Path, source: Path, label: str, *overrides: str, conf: dict | None = None):
    """The table config with paths under `base`, on `engine` as `overrides` say, Spark on
    two cores with `conf`."""
    (base / "raw").mkdir(parents=True, exist_ok=True)
    cfg = compose_config(
        CONF,
        [
            "data=tabular",
            "model=mlp",
            f"data.source.path={source}",
            f"data.source.label={label}",
            "spark.master='local[2]'",
            *overrides,
        ],
    )[1]
    cfg = tiny(cfg, base)
    spark = cfg.spark.model_copy(update={"conf": conf or {}})
    raw = cfg.paths.model_copy(update={"raw": source.parent})
    return cfg.model_copy(update={"spark": spark, "paths": raw})


def digests(directory: Path) -> dict[str, str]:
    """Every file under `directory` by relative path: its md5."""
    return {
        str(p.relative_to(directory)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def through_both(tmp_path: Path, source: Path, label: str, *overrides: str, conf=None) -> tuple:
    """The data stages on each engine; their outputs' digests (ingested, prepared, features)."""
    found = []
    for engine in ("local", "spark"):
        cfg = config(tmp_path / engine, source, label, f"engine={engine}", *overrides, conf=conf)
        ingest(cfg)
        prepare(cfg)
        features(cfg)
        paths = (cfg.paths.ingested, cfg.paths.prepared, cfg.paths.features)
        found.append({p.name: digests(p) for p in paths})
    return found[0], found[1], cfg


def messy_csv(path: Path, rows: int = 600) -> Path:
    """mixed_table as CSV (floats, text, booleans, small integers, missing values in each)
    with its missing values spelled in every way pyarrow reads as missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = mixed_table(rows).astype(object)
    rng = np.random.default_rng(1)
    frame = frame.map(lambda v: rng.choice(MISSING) if v is None or v is pd.NA else v)
    frame.to_csv(path, index=False)
    return path


@pytest.mark.slow
def test_both_engines_give_the_same_bytes_on_a_table_with_missing_values(
    spark: None, tmp_path: Path
) -> None:
    source = messy_csv(tmp_path / "raw" / "messy.csv")
    # small input partitions: the rows' order comes from many blocks of the file (the row
    # index without a global sort); integer_levels: the small integers are categories
    local, remote, cfg = through_both(
        tmp_path,
        source,
        "target",
        "features.categorical.integer_levels=10",
        conf={"spark.sql.files.maxPartitionBytes": "2048"},
    )
    assert len(remote["prepared"]) == 7 and len(remote["features"]) > 8
    assert remote == local
    schema = (cfg.paths.features / "schema.json").read_text()
    assert '"kind": "categorical"' in schema and '"type": "boolean"' in schema


@pytest.mark.slow
def test_both_engines_give_the_same_bytes_on_the_penguins(spark: None, tmp_path: Path) -> None:
    palmerpenguins = pytest.importorskip("palmerpenguins")
    source = tmp_path / "raw" / "penguins.csv"
    source.parent.mkdir(parents=True)
    shutil.copy(Path(palmerpenguins.__file__).parent / "data" / "penguins.csv", source)
    local, remote, _ = through_both(tmp_path, source, "species")
    assert remote == local


@pytest.mark.slow
def test_a_folder_of_parquet_files_is_read_in_path_then_row_order(
    spark: None, tmp_path: Path
) -> None:
    folder = tmp_path / "raw" / "parts"
    folder.mkdir(parents=True)
    frame = mixed_table(900)
    for i, start in enumerate(range(0, 900, 300)):  # names sort as the parts come
        part = pa.Table.from_pandas(frame.iloc[start : start + 300], preserve_index=False)
        pq.write_table(part, folder / f"part-{i}.parquet", row_group_size=40)
    cfg = config(
        tmp_path / "spark",
        folder,
        "target",
        "engine=spark",
        "data.source.kind=parquet",
        conf={"spark.sql.files.maxPartitionBytes": "1024"},
    )
    ingest(cfg)
    landed = pq.read_table(cfg.paths.ingested / "table.parquet").to_pandas()
    expected = frame[[*landed.columns]].astype(object).where(frame.notna(), None)
    assert landed.astype(object).where(landed.notna(), None).equals(expected)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("partitioned", "version", "ids"),
    [
        # four versions: appends, a new column, deleted rows (their old files stay)
        (False, "null", range(100, 800)),
        (False, "1", range(600)),
        # values escaped in folder names, "007" as text, missing
        (True, "null", range(400)),
    ],
)
def test_both_engines_read_a_delta_tables_snapshot_to_the_same_bytes(
    spark: None, tmp_path: Path, partitioned: bool, version: str, ids: range
) -> None:
    pytest.importorskip("deltalake", reason="deltalake is not installed: make install-dev")
    folder = tmp_path / "raw" / "events"
    (partitioned_delta_table if partitioned else delta_table)(folder)
    local, remote, cfg = through_both(
        tmp_path,
        folder,
        "target",
        "data.source.kind=delta",
        f"data.source.version={version}",
        "+features.columns.id.kind=drop",
        *(["+features.columns.code.kind=categorical"] if partitioned else []),
        "features.categorical.integer_levels=10",
        conf={"spark.sql.files.maxPartitionBytes": "2048"},
    )
    assert remote == local
    landed = pq.read_table(cfg.paths.ingested / "table.parquet", columns=["id"]).column(0)
    assert sorted(landed.to_pylist()) == list(ids)


@pytest.mark.slow
def test_spark_sample_rows_lands_the_seeded_sample_of_the_local_engines_rows(
    spark: None, tmp_path: Path
) -> None:
    source = messy_csv(tmp_path / "raw" / "messy.csv")
    local = config(tmp_path / "local", source, "target", "engine=local")
    ingest(local)
    whole = pq.read_table(local.paths.ingested / "table.parquet")
    cfg = config(tmp_path / "spark", source, "target", "engine=spark", "spark.sample_rows=200")
    ingest(cfg)
    landed = pq.read_table(cfg.paths.ingested / "table.parquet")
    # the kit's seeded sampler picks the row indices; the rows keep the source's order
    expected = whole.take(sample_rows(whole.num_rows, 200, cfg.seed))
    assert landed.num_rows == 200 and landed.equals(expected)


@pytest.mark.slow
def test_spark_refuses_a_missing_label_column_as_the_local_engine_does(
    spark: None, tmp_path: Path
) -> None:
    source = messy_csv(tmp_path / "raw" / "messy.csv", rows=50)
    lines = []
    for engine in ("local", "spark"):
        cfg = config(tmp_path / engine, source, "colour", f"engine={engine}")
        with pytest.raises(PipelineError) as refusal:
            ingest(cfg)
        lines.append(str(refusal.value))
    assert lines[0] == lines[1] and "label column 'colour' not in" in lines[0]


def test_an_unknown_engine_is_refused_in_one_line(make_cfg) -> None:
    with pytest.raises(PipelineError, match="engine") as refusal:
        make_cfg("engine=dask")
    assert "\n" not in str(refusal.value) and "local" in str(refusal.value)


def test_spark_with_images_is_refused_in_one_line(make_cfg) -> None:
    with pytest.raises(PipelineError) as refusal:
        source_for(make_cfg("engine=spark"))
    assert str(refusal.value) == (
        "engine: spark runs the table data stages only, and data.source is Digits (images): "
        "set engine=local"
    )


def test_spark_without_java_says_what_to_install(
    make_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("pyspark")
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-java"))
    source = messy_csv(tmp_path / "raw" / "messy.csv", rows=50)
    cfg = config(tmp_path / "spark", source, "target", "engine=spark")
    with pytest.raises(PipelineError) as refusal:
        ingest(cfg)
    assert str(refusal.value) == (
        "engine: spark needs Java 17 or newer: install openjdk-17-jre-headless (Debian/Ubuntu) "
        "or set JAVA_HOME"
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def standalone_cluster(spark: None, tmp_path: Path) -> Iterator[str]:
    """A real Spark standalone cluster on this machine (a master and a one-core worker, started
    with pyspark's own spark-class): its `spark://` URL."""
    from pyspark.find_spark_home import _find_spark_home
    from pyspark.sql import SparkSession

    if (session := SparkSession.getActiveSession()) is not None:
        session.stop()  # the module's local session: a session's master is fixed
    spark_class = str(Path(_find_spark_home()) / "bin" / "spark-class")
    port, ui = free_port(), free_port()
    url = f"spark://127.0.0.1:{port}"
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}
    log = (tmp_path / "cluster.log").open("w")
    deploy = "org.apache.spark.deploy"
    master = subprocess.Popen(
        [spark_class, f"{deploy}.master.Master", "--host", "127.0.0.1", "--port", str(port),
         "--webui-port", str(ui)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    worker = subprocess.Popen(
        [spark_class, f"{deploy}.worker.Worker", "--cores", "1", "--memory", "2g",
         "--webui-port", str(free_port()), "--work-dir", str(tmp_path / "work"), url],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        for _ in range(120):  # the master's web UI lists the worker once it registered
            try:
                state = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{ui}/json/").read())
                if state.get("aliveworkers", 0) >= 1:
                    break
            except OSError:
                pass
            time.sleep(1)
        else:
            pytest.fail(f"the standalone cluster did not start: {tmp_path / 'cluster.log'}")
        yield url
    finally:
        if (session := SparkSession.getActiveSession()) is not None:
            session.stop()
        for process in (worker, master):
            process.terminate()
            process.wait(timeout=60)
        log.close()


@pytest.mark.slow
def test_a_standalone_cluster_gives_the_local_engines_bytes(
    standalone_cluster: str, tmp_path: Path
) -> None:
    source = messy_csv(tmp_path / "raw" / "messy.csv")
    # a cluster's executors run the Python that spark.pyspark.python names (docs/spark.md)
    conf = {"spark.pyspark.python": sys.executable, "spark.driver.host": "127.0.0.1"}
    local, remote, _ = through_both(
        tmp_path,
        source,
        "target",
        f"spark.master='{standalone_cluster}'",
        "features.categorical.integer_levels=10",
        conf=conf,
    )
    assert remote == local
    from pyspark.sql import SparkSession

    # the stages ran on the cluster, not on a local session left from another test
    session = SparkSession.getActiveSession()
    assert session is not None and session.sparkContext.master == standalone_cluster
