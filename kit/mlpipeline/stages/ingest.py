"""Stage `ingest`: read the configured source (`mlpipeline.data.sources`): images as arrays,
tables column by column into Parquet.

Schema problems (missing file, missing label or feature columns, rows without a label) stop
here; value checks happen in `prepare` and `features`.
"""

from __future__ import annotations

from mlpipeline.cli import run_stage
from mlpipeline.config import Config
from mlpipeline.data.sources import Dataset, Table, source_for


def ingest(cfg: Config) -> Dataset | Table:
    """Load the configured source and write it to `paths.ingested`."""
    data, summary = source_for(cfg).ingest(cfg.paths.raw, cfg.paths.ingested)
    print(f"ingested {summary} -> {cfg.paths.ingested}")
    return data


if __name__ == "__main__":
    run_stage(ingest)
