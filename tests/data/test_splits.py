"""The splits (mlpipeline.data.splits) through the prepare stage: quality checks, stratified
split, normalisation fitted on train only."""

from __future__ import annotations

import numpy as np
import pytest

from mlpipeline.data.splits import fit_normalizer, prepare_arrays
from mlpipeline.errors import PipelineError
from mlpipeline.stages.ingest import ingest
from mlpipeline.stages.prepare import prepare

META = {"classes": ["a", "b"], "feature_names": ["f0", "f1"], "input_shape": [2]}


def table(n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(1).normal(size=(n, 2)).astype(np.float32)
    return x, np.arange(n) % 2


def test_digits_split_is_stratified_disjoint_and_seeded(make_cfg) -> None:
    cfg = make_cfg()
    ingest(cfg)
    result = prepare(cfg)
    sizes = {k: len(v[1]) for k, v in result.splits.items()}
    assert sizes == {"train": 1257, "val": 270, "test": 270}
    for _, y in result.splits.values():
        assert np.bincount(y, minlength=10).min() >= 17  # every class in every split
    again = prepare(cfg)
    assert all(np.array_equal(result.splits[k][0], again.splits[k][0]) for k in result.splits)


def test_normalisation_uses_the_training_split_only(make_cfg) -> None:
    cfg = make_cfg()
    x, y = table()
    result = prepare_arrays(x, y, META, cfg.data.split, seed=0)
    mean, std = fit_normalizer(result.splits["train"][0])
    assert result.meta["normalization"] == {"mean": mean.tolist(), "std": std.tolist()}
    assert not np.allclose(mean, x.mean(axis=0))


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (
            lambda x, y: x.__setitem__((3, 0), np.nan),
            r"1 missing \(NaN\) and 0 infinite .*\['f0'\]",
        ),
        (lambda x, y: x.__setitem__((5, 1), np.inf), r"0 missing \(NaN\) and 1 infinite"),
        (lambda x, y: y.__setitem__(0, 2), "'c' has 1"),
    ],
    ids=["nan", "inf", "single-sample-class"],
)
def test_bad_values_are_named(make_cfg, corrupt, message: str) -> None:
    cfg = make_cfg()
    x, y = table()
    corrupt(x, y)
    meta = {**META, "classes": ["a", "b", "c"]}
    with pytest.raises(PipelineError, match=message):
        prepare_arrays(x, y, meta, cfg.data.split, seed=0)


def test_rows_are_taken_batch_by_batch_in_order() -> None:
    import pyarrow as pa

    from mlpipeline.data.splits import take_rows

    data = pa.table({"v": np.arange(100)})
    rows = {"a": np.array([0, 9, 10, 11, 57, 99]), "b": np.array([3, 50]), "c": np.array([], int)}
    taken: dict[str, list[int]] = {name: [] for name in rows}
    for name, batch in take_rows(data.to_batches(max_chunksize=10), rows):
        assert batch.num_rows <= 10
        taken[name] += batch.column("v").to_pylist()
    assert taken == {name: index.tolist() for name, index in rows.items()}


def test_a_table_is_split_as_it_streams(make_cfg, tmp_path) -> None:
    import pandas as pd
    import pyarrow.parquet as pq

    from mlpipeline.data.sources import read_ingested

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=90), "label": ["x", "y", "z"] * 30})
    (tmp_path / "raw").mkdir(exist_ok=True)
    frame.to_parquet(tmp_path / "raw" / "t.parquet", row_group_size=7)
    cfg = make_cfg(
        "data=tabular", "data.source.kind=parquet", f"data.source.path={tmp_path}/raw/t.parquet"
    )
    ingest(cfg)
    result = prepare(cfg)
    table, _ = read_ingested(cfg.paths.ingested)
    everything = table.read()
    seen = []
    for name, index in result.rows.items():
        x = pq.read_table(cfg.paths.prepared / name / "x.parquet")
        assert x.equals(everything.select(["a"]).take(index))
        labels = np.load(cfg.paths.prepared / name / "y.npy")
        assert [result.meta["classes"][i] for i in labels] == everything["label"].take(
            index
        ).to_pylist()
        seen += index.tolist()
    assert sorted(seen) == list(range(90))
