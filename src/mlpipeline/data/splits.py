"""Train/val/test splits: data-quality checks, the stratified seeded split, the normalisation
constants fitted on train, and the prepared format on disk that training and evaluation read
(`<dir>/{train,val,test}/{x,y}.npy` and `<dir>/meta.json`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlpipeline.artifacts import atomic_path, load_array, read_json, save_arrays, write_json
from mlpipeline.config import Split
from mlpipeline.errors import PipelineError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Prepared:
    splits: dict[str, tuple[np.ndarray, np.ndarray]]
    meta: dict[str, Any]


def check_quality(x: np.ndarray, y: np.ndarray, meta: dict[str, Any], split: Split) -> None:
    """Raise PipelineError for non-finite features, too few classes or too small classes."""
    bad = ~np.isfinite(x.reshape(len(x), -1))
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        n_nan = int(np.isnan(x).sum())
        n_inf = int(bad.sum()) - n_nan
        where = ""
        if meta.get("feature_names"):
            cols = [meta["feature_names"][i] for i in np.flatnonzero(bad.any(axis=0))]
            where = f" in columns {cols}"
        raise PipelineError(
            f"{n_nan} missing (NaN) and {n_inf} infinite feature values{where}, "
            f"rows {rows[:5].tolist()}{'...' if len(rows) > 5 else ''}: impute or drop them"
        )
    classes = meta["classes"]
    counts = np.bincount(y, minlength=len(classes))
    if (counts > 0).sum() < 2:
        raise PipelineError(f"only one class ({classes[int(np.argmax(counts))]}): need at least 2")
    small = [(classes[i], int(c)) for i, c in enumerate(counts) if c < split.min_class_samples]
    if small:
        listed = ", ".join(f"'{name}' has {n}" for name, n in small)
        raise PipelineError(
            f"too few samples per class for a stratified split: {listed}; each class needs at "
            f"least {split.min_class_samples} (data.split.min_class_samples): add samples or "
            "drop those classes"
        )


def split_indices(y: np.ndarray, split: Split, seed: int) -> dict[str, np.ndarray]:
    """Stratified train/val/test indices, reproducible from the seed."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    try:
        train, rest = train_test_split(idx, train_size=split.train, stratify=y, random_state=seed)
        val, test = train_test_split(
            rest,
            test_size=split.test / (split.val + split.test),
            stratify=y[rest],
            random_state=seed,
        )
    except ValueError as err:
        raise PipelineError(
            f"cannot split {len(y)} samples stratified as train/val/test = "
            f"{split.train}/{split.val}/{split.test}: {err}; add data or enlarge data.split.val "
            "and data.split.test"
        ) from None
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def fit_normalizer(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std per channel for images (N, C, H, W), per feature for tables (N, F)."""
    axes = (0, 2, 3) if x.ndim == 4 else (0,)
    mean = x.mean(axis=axes, keepdims=True, dtype=np.float64)[0]
    std = x.std(axis=axes, keepdims=True, dtype=np.float64)[0]
    std[std < 1e-8] = 1.0  # a constant feature carries no signal; avoid dividing by zero
    return mean.astype(np.float32), std.astype(np.float32)


def prepare_arrays(
    x: np.ndarray, y: np.ndarray, meta: dict[str, Any], split: Split, seed: int
) -> Prepared:
    """Validate, split and fit the normaliser on train."""
    check_quality(x, y, meta, split)
    parts = split_indices(y, split, seed)
    splits = {name: (x[i], y[i]) for name, i in parts.items()}
    mean, std = fit_normalizer(splits["train"][0])
    out_meta = {
        "classes": meta["classes"],
        "feature_names": meta["feature_names"],
        "input_shape": meta["input_shape"],
        "normalization": {"mean": mean.tolist(), "std": std.tolist()},
        "sizes": {name: len(i) for name, i in parts.items()},
        "seed": seed,
    }
    return Prepared(splits, out_meta)


def write_prepared(prepared: Prepared, directory: Path) -> None:
    """Write the splits and meta.json to `directory`, replaced atomically."""
    with atomic_path(directory, is_dir=True) as out:
        for name, (x, y) in prepared.splits.items():
            save_arrays(out / name, x=x, y=y)
        write_json(out / "meta.json", prepared.meta)


def read_meta(directory: Path) -> dict[str, Any]:
    """meta.json of the prepared data: classes, input shape, normalisation, split sizes."""
    if not (directory / "meta.json").is_file():
        raise PipelineError(f"{directory}/meta.json not found: run the prepare stage first")
    return read_json(directory / "meta.json")


def read_split(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of one split."""
    return load_array(directory / split / "x.npy"), load_array(directory / split / "y.npy")
