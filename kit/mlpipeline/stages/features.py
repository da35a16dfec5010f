"""Stage `features`: the network's inputs per split, and for tables the preprocessing that makes
them (`mlpipeline.data.features`), fitted on the training split only: as the data source's
kind does it (`mlpipeline.data.sources`).

Tables: per split x.npy (float32, written in batches, never held whole) and y.npy; the fitted
preprocessing as preprocess.onnx (which the export stage puts in front of the network);
schema.json, what each column became, for a person to read; probes.json and probes.npy, rows
with missing values and unseen categories and their features, which the export check runs.
Images: the prepared arrays as they are (the network normalises its own input).
"""

from __future__ import annotations

from typing import Any

from mlpipeline.cli import run_stage
from mlpipeline.config import Config
from mlpipeline.data.sources import source_for


def features(cfg: Config) -> dict[str, Any]:
    """Write `paths.features` from `paths.prepared`; return its meta.json."""
    meta, summary = source_for(cfg).write_features(cfg)
    print(f"features: {summary}")
    return meta


if __name__ == "__main__":
    run_stage(features)
