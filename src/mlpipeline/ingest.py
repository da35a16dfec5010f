"""Stage `ingest`: read the configured source into arrays under data/ingested/.

Sources: scikit-learn's bundled digits images (the default, no network) or a CSV/Parquet table
under data/raw/ with a label column. Schema problems (missing file, missing label column,
non-numeric features, empty labels) stop here; value checks happen in `prepare`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlpipeline.artifacts import atomic_path, save_arrays, write_json
from mlpipeline.cli import run_stage
from mlpipeline.config import Config, DigitsSource, TableSource
from mlpipeline.errors import PipelineError


@dataclass(frozen=True)
class Dataset:
    """Features, integer labels and what they mean."""

    x: np.ndarray  # float32, (N, *input_shape)
    y: np.ndarray  # int64 class indices, (N,)
    classes: list[str]
    feature_names: list[str] | None  # None for images


def load_digits() -> Dataset:
    """The 8x8 digits as (N, 1, 8, 8) images with pixel values 0..16.

    Read from the file that scikit-learn ships, as its `load_digits` reads it, without
    importing scikit-learn: its import (scipy, the estimator machinery) is 0.7 s of every
    ingest and sweep trial start-up. tests/test_ingest.py checks both give the same arrays.
    """
    import gzip
    import importlib.util

    spec = importlib.util.find_spec("sklearn")  # locates the package without running it
    if spec is None or not spec.submodule_search_locations:
        raise PipelineError("scikit-learn is not installed: run `make install`")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    with gzip.open(path, "rt") as handle:
        table = np.loadtxt(handle, delimiter=",")
    x = table[:, :-1].reshape(-1, 1, 8, 8).astype(np.float32)
    return Dataset(x, table[:, -1].astype(np.int64), [str(c) for c in range(10)], None)


def load_table(source: TableSource, raw_dir: Path) -> Dataset:
    """A CSV or Parquet file with one label column and numeric feature columns."""
    import pandas as pd

    path = source.path
    if not path.resolve().is_relative_to(raw_dir.resolve()):
        raise PipelineError(
            f"data.source.path {path} is outside {raw_dir}/: move the file there "
            f"(and `dvc add` it) so DVC tracks it as a dependency of ingest"
        )
    if not path.is_file():
        raise PipelineError(
            f"data.source.path {path} not found: put your {source.kind.upper()} file there "
            "or point data.source.path at it"
        )
    try:
        frame = pd.read_csv(path) if source.kind == "csv" else pd.read_parquet(path)
    except Exception as err:  # pandas raises many types for unreadable files
        raise PipelineError(f"cannot read {path} as {source.kind}: {err}") from None
    if source.label not in frame.columns:
        columns = ", ".join(map(str, frame.columns))
        raise PipelineError(
            f"label column '{source.label}' not in {path} (columns: {columns}); "
            "set data.source.label to one of them"
        )
    features = source.features or [c for c in frame.columns if c != source.label]
    missing = [c for c in features if c not in frame.columns]
    if missing:
        raise PipelineError(f"feature columns {missing} not in {path}; fix data.source.features")
    if not features:
        raise PipelineError(f"{path} has no feature columns besides '{source.label}'")
    text = [c for c in features if not pd.api.types.is_numeric_dtype(frame[c])]
    if text:
        raise PipelineError(
            f"feature columns {text} in {path} are not numeric: encode them as numbers "
            "or leave them out with data.source.features"
        )
    labels = frame[source.label]
    if labels.isna().any():
        rows = labels.index[labels.isna()].tolist()[:5]
        raise PipelineError(
            f"{int(labels.isna().sum())} rows of {path} have no '{source.label}' "
            f"(first rows: {rows}): fill or drop them"
        )
    classes = sorted({str(v) for v in labels})
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[str(v)] for v in labels], dtype=np.int64)
    x = frame[features].to_numpy(dtype=np.float32)
    return Dataset(x, y, classes, [str(c) for c in features])


def ingest(cfg: Config) -> Dataset:
    """Load the configured source and write it to `paths.ingested` as .npy arrays + meta.json."""
    source = cfg.data.source
    dataset = (
        load_digits() if isinstance(source, DigitsSource) else load_table(source, cfg.paths.raw)
    )
    if len(dataset.y) == 0:
        raise PipelineError("the source has no rows; point data.source at a non-empty file")
    with atomic_path(cfg.paths.ingested, is_dir=True) as out:
        save_arrays(out, x=dataset.x, y=dataset.y)
        write_json(
            out / "meta.json",
            {
                "source": source.kind,
                "classes": dataset.classes,
                "feature_names": dataset.feature_names,
                "input_shape": list(dataset.x.shape[1:]),
                "rows": len(dataset.y),
            },
        )
    print(
        f"ingested {len(dataset.y)} samples of shape {tuple(dataset.x.shape[1:])}, "
        f"{len(dataset.classes)} classes from {source.kind} -> {cfg.paths.ingested}"
    )
    return dataset


if __name__ == "__main__":
    run_stage(ingest)
