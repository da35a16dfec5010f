"""Train/val/test splits: data-quality checks, the stratified seeded split, the normalisation
constants fitted on train, and the prepared format on disk that training and evaluation read
(`<dir>/{train,val,test}/{x,y}.npy` and `<dir>/meta.json`)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlpipeline.artifacts import (
    TABLE_BATCH_ROWS,
    array_chunks,
    array_writer,
    atomic_path,
    load_array,
    parquet_reader,
    parquet_writer,
    read_json,
    save_arrays,
    write_json,
)
from mlpipeline.config import Split
from mlpipeline.config.tasks import Classification, Task, task_for
from mlpipeline.errors import PipelineError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Prepared:
    splits: dict[str, tuple[np.ndarray, np.ndarray]]
    meta: dict[str, Any]


def check_quality(
    x: np.ndarray, y: np.ndarray, meta: dict[str, Any], split: Split, task: Task | None = None
) -> None:
    """Raise PipelineError for non-finite features, or labels the task refuses (too few
    classes or too small classes for a classification, the default)."""
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
    (task or Classification()).check_labels(y, meta["classes"], split)


def split_indices(
    y: np.ndarray, split: Split, seed: int, task: Task | None = None
) -> dict[str, np.ndarray]:
    """Train/val/test indices, reproducible from the seed, stratified as the task says (by
    class for a classification, the default)."""
    from sklearn.model_selection import train_test_split  # seconds to import: only prepare splits

    task = task or Classification()
    strata = task.strata(y, split)
    idx = np.arange(len(y))
    try:
        train, rest = train_test_split(
            idx, train_size=split.train, stratify=strata, random_state=seed
        )
        val, test = train_test_split(
            rest,
            test_size=split.test / (split.val + split.test),
            stratify=None if strata is None else strata[rest],
            random_state=seed,
        )
    except ValueError as err:
        raise PipelineError(task.split_problem(len(y), split, err)) from None
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def fit_normalizer(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std per channel for images (N, C, H, W), per feature for tables (N, F)."""
    axes = (0, 2, 3) if x.ndim == 4 else (0,)
    mean = x.mean(axis=axes, keepdims=True, dtype=np.float64)[0]
    std = x.std(axis=axes, keepdims=True, dtype=np.float64)[0]
    std[std < 1e-8] = 1.0  # a constant feature carries no signal; avoid dividing by zero
    return mean.astype(np.float32), std.astype(np.float32)


def prepare_arrays(
    x: np.ndarray,
    y: np.ndarray,
    meta: dict[str, Any],
    split: Split,
    seed: int,
    task: Task | None = None,
) -> Prepared:
    """Validate, split and fit the normaliser on train (images: a classification)."""
    check_quality(x, y, meta, split, task)
    parts = split_indices(y, split, seed, task)
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


# bytes of uint8 images read at a time when they are split: bounds prepare's memory
IMAGE_CHUNK_BYTES = 16 << 20


def normalizer_from_histograms(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std per channel, shaped as `fit_normalizer` gives them (C, 1, 1), from each
    channel's histogram of its uint8 values (C, 256): exact, whatever order the images were
    counted in."""
    values = np.arange(counts.shape[1], dtype=np.float64)
    total = counts.sum(axis=1)
    mean = (counts * values).sum(axis=1) / total
    std = np.sqrt((counts * (values - mean[:, None]) ** 2).sum(axis=1) / total)
    std[std < 1e-8] = 1.0  # a constant channel carries no signal; avoid dividing by zero
    return mean.astype(np.float32)[:, None, None], std.astype(np.float32)[:, None, None]


def prepare_images(
    x_path: Path,
    y: np.ndarray,
    meta: dict[str, Any],
    split: Split,
    seed: int,
    task: Task,
    directory: Path,
) -> Prepared:
    """Split uint8 images (N, C, H, W) read in chunks from the .npy file `x_path` into
    `directory` (per split x.npy and y.npy, meta.json), as `prepare_arrays` splits arrays held
    in memory; the per-channel normalisation is fitted on train from the pixels' histograms,
    counted as the chunks pass. `meta`: the ingested meta.json, whose `classes` are the
    labels' names (None for a regression) and `files` each row's file. Returns the splits
    mapped from disk."""
    task.check_labels(y, meta["classes"], split, meta.get("label_column") or "label")
    parts = split_indices(y, split, seed, task)
    shape = tuple(meta["input_shape"])
    chunk = max(1, IMAGE_CHUNK_BYTES // int(np.prod(shape)))
    counts = np.zeros((shape[0], 256), dtype=np.int64)
    with atomic_path(directory, is_dir=True) as out, ExitStack() as stack:
        writers = {}
        for name, index in parts.items():
            (out / name).mkdir()
            writers[name] = stack.enter_context(
                array_writer(out / name / "x.npy", (len(index), *shape), np.uint8)
            )
        start = 0
        for x in array_chunks(x_path, chunk):
            for name, index in parts.items():
                lo, hi = np.searchsorted(index, [start, start + len(x)])
                rows = x[index[lo:hi] - start]
                writers[name](rows)
                if name == "train":
                    for c in range(shape[0]):
                        counts[c] += np.bincount(rows[:, c].ravel(), minlength=256)
            start += len(x)
        stack.close()
        for name, index in parts.items():
            save_arrays(out / name, y=y[index])
        mean, std = normalizer_from_histograms(counts)
        files = meta["files"]
        out_meta = {
            "classes": meta["classes"],
            "feature_names": None,
            "input_shape": list(shape),
            "input_dtype": "uint8",
            "image": meta["image"],
            "normalization": {"mean": mean.tolist(), "std": std.tolist()},
            "sizes": {name: len(i) for name, i in parts.items()},
            "files": {name: [files[i] for i in index] for name, index in parts.items()},
            "seed": seed,
            **task.target_meta(y[parts["train"]]),
        }
        write_json(out / "meta.json", out_meta)
    splits = {name: read_split(directory, name, mmap=True) for name in parts}
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


def read_split(directory: Path, split: str, mmap: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of one split; `mmap`: the features mapped, read as they are used."""
    return load_array(directory / split / "x.npy", mmap), load_array(directory / split / "y.npy")


# Tables: the feature columns stay as they were read (the features stage encodes them); the
# label becomes class indices or float32 targets here.


@dataclass(frozen=True)
class PreparedTable:
    table: Any  # mlpipeline.data.sources.Table: the rows as read, which the splits index
    rows: dict[str, np.ndarray]  # split -> its sorted row indices into `table`
    labels: dict[str, np.ndarray]  # split -> its labels, in the same order
    meta: dict[str, Any]


def encode_labels(values: Any, label: str, task: str) -> tuple[np.ndarray, list[str] | None]:
    """The label as the task's targets (class indices in natural order and the class names,
    or float32 targets); PipelineError when the label does not fit."""
    return task_for(task).encode_labels(values, label)


def prepare_table(table: Any, task: str | Task, split: Split, seed: int) -> PreparedTable:
    """Encode the label of a table (mlpipeline.data.sources.Table), check it, split the rows.
    Only the label column is read here; `write_prepared_table` streams the rest."""
    task = task_for(task) if isinstance(task, str) else task
    label = table.label
    y, classes = task.encode_labels(table.column(label), label)
    task.check_labels(y, classes, split, label)
    parts = split_indices(y, split, seed, task)
    meta = {
        "kind": "table",
        "task": task.name,
        "label": label,
        "classes": classes,
        "feature_names": table.features,
        "sizes": {name: len(i) for name, i in parts.items()},
        "seed": seed,
        **task.target_meta(y[parts["train"]]),
    }
    labels = {name: y[i] for name, i in parts.items()}
    return PreparedTable(table, parts, labels, meta)


def take_rows(batches: Iterable[Any], rows: dict[str, np.ndarray]) -> Iterator[tuple[str, Any]]:
    """(name, pyarrow.RecordBatch) of the rows each name selects (sorted row indices into the
    batches taken together), batch by batch, so that no more than one batch is held."""
    start = 0
    for batch in batches:
        end = start + batch.num_rows
        for name, index in rows.items():
            lo, hi = np.searchsorted(index, [start, end])
            if hi > lo:
                yield name, batch.take(index[lo:hi] - start)
        start = end


def read_rows(parquet: Any, rows: np.ndarray, columns: list[str]) -> Any:
    """`rows` (sorted row indices) of a Parquet file's (a pyarrow.parquet.ParquetFile's)
    `columns`, as a pyarrow.Table, read a batch at a time."""
    import pyarrow as pa  # pyarrow: a second to import, and only tables use it

    batches = parquet.iter_batches(batch_size=TABLE_BATCH_ROWS, columns=columns)
    taken = [batch for _, batch in take_rows(batches, {"rows": rows})]
    schema = pa.schema([parquet.schema_arrow.field(c) for c in columns])
    return pa.Table.from_batches(taken, schema=schema)


def write_prepared_table(prepared: PreparedTable, directory: Path) -> None:
    """Per split a features table (x.parquet) and the labels (y.npy), and meta.json; the
    features are read and written a batch of rows at a time."""
    table = prepared.table
    schema = table.schema(table.features)
    with atomic_path(directory, is_dir=True) as out, ExitStack() as stack:
        writers = {}
        for name in prepared.rows:
            (out / name).mkdir()
            writers[name] = stack.enter_context(parquet_writer(out / name / "x.parquet", schema))
        for name, batch in take_rows(table.batches(table.features), prepared.rows):
            writers[name].write_batch(batch)
        for name, y in prepared.labels.items():
            save_arrays(out / name, y=y)
        write_json(out / "meta.json", prepared.meta)


def split_table(directory: Path, split: str) -> Any:
    """A prepared table split's features, opened to be read a column or a batch at a time
    (pyarrow.parquet.ParquetFile)."""
    return parquet_reader(directory / split / "x.parquet")
