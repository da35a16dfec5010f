"""A synthetic classification table for the table benchmarks (bench/tables.py,
bench/throughput.py --table), written to Parquet chunk by chunk and reproducible from its seed.

Of the `features` columns, two are text categories and the rest float32 numbers; a few numeric
columns and both categorical ones miss some values, as real tables do. The label (`label`,
integers 0..classes-1, about equally frequent) depends on several columns, so a network has
something to learn. The reference size the memory goals are stated against is the table's
columns as one float32 array: rows x features x 4 bytes (`float32_bytes`).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

CATEGORICAL = 2  # text columns among the features
WITH_MISSING = 4  # numeric columns with missing values
MISSING_RATE = 0.05
LEVELS = ("alpha", "beta", "gamma", "delta", "epsilon")
CHUNK_ROWS = 1 << 20  # rows generated (and written as one row group) at a time
LABEL = "label"


def float32_bytes(rows: int, features: int) -> int:
    """The table's feature columns as one float32 array: what the memory goals refer to."""
    return rows * features * 4


def _chunk(rows: int, features: int, classes: int, rng: np.random.Generator) -> Any:
    """One chunk of the table as a pyarrow.Table."""
    import pyarrow as pa

    numeric = features - CATEGORICAL
    x = rng.standard_normal((rows, numeric), dtype=np.float32)
    codes = rng.integers(0, len(LEVELS), (rows, CATEGORICAL))
    # the score mixes three numbers, a category and noise; cut at the quantiles of a normal
    # distribution of the same variance, the classes come out nearly equal in size
    weights = np.array([0.5, 0.4, -0.3], dtype=np.float32)
    score = x[:, :3] @ weights + 0.3 * (codes[:, 0] - 2) / np.sqrt(2)
    score += 0.6 * rng.standard_normal(rows, dtype=np.float32)
    spread = NormalDist(0, float(np.sqrt((weights**2).sum() + 0.3**2 + 0.6**2)))
    label = np.searchsorted([spread.inv_cdf(k / classes) for k in range(1, classes)], score)
    columns: dict[str, Any] = {}
    for j in range(numeric):
        missing = rng.random(rows) < MISSING_RATE if j >= numeric - WITH_MISSING else None
        columns[f"x{j:02d}"] = pa.array(x[:, j], mask=missing)
    levels = np.asarray(LEVELS, dtype=object)
    for j in range(CATEGORICAL):
        missing = rng.random(rows) < MISSING_RATE
        columns[f"c{j}"] = pa.array(levels[codes[:, j]], type=pa.string(), mask=missing)
    columns[LABEL] = pa.array(label.astype(np.int64))
    return pa.table(columns)


def write_table(path: Path, rows: int, features: int = 50, classes: int = 5, seed: int = 0) -> Path:
    """Write the table to `path` (Parquet, one row group per chunk), never holding more than
    one chunk; the same arguments give the same values."""
    import pyarrow.parquet as pq

    if features <= CATEGORICAL + WITH_MISSING:
        raise ValueError(f"features must be over {CATEGORICAL + WITH_MISSING}")
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = None
    try:
        for index, start in enumerate(range(0, rows, CHUNK_ROWS)):
            rng = np.random.default_rng([seed, index])
            chunk = _chunk(min(CHUNK_ROWS, rows - start), features, classes, rng)
            if writer is None:
                writer = pq.ParquetWriter(path, chunk.schema)
            writer.write_table(chunk, row_group_size=CHUNK_ROWS)
    finally:
        if writer is not None:
            writer.close()
    return path


def run_stages(
    base: Path,
    rows: int,
    stages: Sequence[str],
    overrides: Sequence[str] = (),
    features: int = 50,
    env: Mapping[str, str] | None = None,
) -> Path:
    """The table written under `base`, then `stages` run on it, each in its own process as
    `dvc repro` runs them, with the tabular defaults (`data=tabular`, `model=mlp`) and
    `overrides`, every path under `base`, in environment `env` (default: this process's);
    returns the params.yaml they read."""
    import yaml

    from mlpipeline.config import compose_config

    raw = write_table(base / "raw" / "table.parquet", rows, features)
    settings = ["data=tabular", "model=mlp", "data.source.kind=parquet"]
    settings += [f"data.source.path={raw}", f"data.source.label={LABEL}", *overrides]
    cfg = compose_config(Path(__file__).resolve().parents[1] / "conf", settings)[1]
    paths = cfg.paths.rebased(base).model_copy(update={"raw": raw.parent})  # the table's folder
    cfg = cfg.model_copy(update={"paths": paths})
    params = base / "params.yaml"
    params.write_text(yaml.safe_dump(cfg.dump(), sort_keys=False), encoding="utf-8")
    for stage in stages:
        cmd = [sys.executable, "-m", f"mlpipeline.stages.{stage}", "--params", str(params)]
        subprocess.run(cmd, cwd=base, env=env, check=True, stdout=subprocess.DEVNULL)
    return params
