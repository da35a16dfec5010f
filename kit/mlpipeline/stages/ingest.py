"""Stage `ingest`: read the configured source (`mlpipeline.data.sources`): images as arrays,
tables column by column into Parquet.

Schema problems (missing file, missing label or feature columns, rows without a label) stop
here; value checks happen in `prepare` and `features`.
"""

from __future__ import annotations

from mlpipeline.cli import run_stage
from mlpipeline.config import Config
from mlpipeline.data.sources import Dataset, Table, load_source, write_ingested


def ingest(cfg: Config) -> Dataset | Table:
    """Load the configured source and write it to `paths.ingested`."""
    source = cfg.data.source
    data = load_source(source, cfg.paths.raw)
    write_ingested(data, cfg.paths.ingested, source.kind)
    if isinstance(data, Table):
        print(
            f"ingested {data.num_rows} rows, {len(data.features)} feature columns and "
            f"label '{data.label}' from {source.kind} -> {cfg.paths.ingested}"
        )
    else:
        print(
            f"ingested {len(data.y)} samples of shape {tuple(data.x.shape[1:])}, "
            f"{len(data.classes)} classes from {source.kind} -> {cfg.paths.ingested}"
        )
    return data


if __name__ == "__main__":
    run_stage(ingest)
