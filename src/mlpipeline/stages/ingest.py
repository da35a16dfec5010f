"""Stage `ingest`: read the configured source (`mlpipeline.data.sources`) into arrays.

Schema problems (missing file, missing label column, non-numeric features, empty labels) stop
here; value checks happen in `prepare`.
"""

from __future__ import annotations

from mlpipeline.cli import run_stage
from mlpipeline.config import Config
from mlpipeline.data.sources import Dataset, load_source, write_dataset


def ingest(cfg: Config) -> Dataset:
    """Load the configured source and write it to `paths.ingested`."""
    source = cfg.data.source
    dataset = load_source(source, cfg.paths.raw)
    write_dataset(dataset, cfg.paths.ingested, source.kind)
    print(
        f"ingested {len(dataset.y)} samples of shape {tuple(dataset.x.shape[1:])}, "
        f"{len(dataset.classes)} classes from {source.kind} -> {cfg.paths.ingested}"
    )
    return dataset


if __name__ == "__main__":
    run_stage(ingest)
