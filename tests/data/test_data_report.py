"""The data report stage (mlpipeline.data.report) on real tables and images: its figures
checked against pandas and numpy on the same prepared split files, streaming (small batches,
the category cap) and the bytes' determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import mixed_table

from mlpipeline.artifacts import md5_dir, read_json
from mlpipeline.data.splits import SPLITS
from mlpipeline.errors import PipelineError
from mlpipeline.stages.data_report import data_report
from mlpipeline.stages.ingest import ingest
from mlpipeline.stages.prepare import prepare


def penguins(base: Path, extra: int = 0) -> Path:
    """palmerpenguins' table (text categories, missing values) with `code`, a number that
    decides the species, and `extra` > 0: `tag`, a text column of that many distinct values."""
    import palmerpenguins

    frame = pd.read_csv(Path(palmerpenguins.__file__).parent / "data/penguins.csv")
    rng = np.random.default_rng(0)
    codes = {"Adelie": 0.0, "Chinstrap": 10.0, "Gentoo": 20.0}
    frame["code"] = frame["species"].map(codes) + rng.normal(0, 0.5, len(frame))
    if extra:
        frame["tag"] = [f"t{i % extra}" for i in range(len(frame))]
    path = base / "raw" / "penguins.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


def table_cfg(make_cfg, path: Path, *overrides: str):
    cfg = make_cfg(
        "data=tabular", f"data.source.path={path}", "data.source.label=species", *overrides
    )
    ingest(cfg)
    prepare(cfg)
    return cfg


def test_a_table_report_matches_pandas_on_the_split_files(make_cfg, tmp_path, capsys) -> None:
    cfg = table_cfg(make_cfg, penguins(tmp_path))
    report = data_report(cfg)
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("data report: 344 rows (train ")
    assert "8 columns (6 numeric, 2 categorical), 19 missing values; largest shift" in line
    assert report == read_json(cfg.paths.data_report / "report.json")
    assert report["kind"] == "table" and report["label"]["task"] == "classification"
    meta = read_json(cfg.paths.prepared / "meta.json")
    assert report["rows"] == meta["sizes"]
    for split in SPLITS:
        frame = pd.read_parquet(cfg.paths.prepared / split / "x.parquet")
        y = np.load(cfg.paths.prepared / split / "y.npy")
        shares = np.bincount(y, minlength=3) / len(y)
        classes = report["label"]["splits"][split]["classes"]
        assert classes == pytest.approx(dict(zip(meta["classes"], shares, strict=True)), abs=1e-6)
        for name in frame.columns:
            column = report["columns"][name]["splits"][split]
            assert column["missing"] == pytest.approx(frame[name].isna().mean(), abs=1e-6), name
            assert column["distinct"] == frame[name].nunique(), name
        sex = frame["sex"].value_counts(normalize=True)
        assert report["columns"]["sex"]["splits"][split]["top"] == pytest.approx(
            sex.to_dict(), rel=1e-5
        )
        bill = frame["bill_length_mm"]
        numeric = report["columns"]["bill_length_mm"]["splits"][split]
        assert numeric["mean"] == pytest.approx(bill.mean(), rel=1e-5)
        assert numeric["std"] == pytest.approx(bill.std(ddof=0), rel=1e-5)
        assert numeric["quantiles"]["p50"] == pytest.approx(bill.median(), rel=1e-5)
        assert sum(numeric["histogram"]["shares"]) == pytest.approx(1.0, abs=1e-5)
    columns = report["columns"]
    assert columns["island"]["kind"] == "categorical" and columns["year"]["kind"] == "numeric"
    assert columns["island"]["association"]["measure"] == "Cramér's V"
    ranked = sorted(columns, key=lambda n: -columns[n]["association"]["value"])
    assert ranked[0] == "code", [(n, columns[n]["association"]) for n in ranked]
    assert set(columns["code"]["shift"]) == {"val", "test"}
    folder = cfg.paths.data_report
    assert (folder / "label.png").is_file() and (folder / "columns" / "code.png").is_file()
    page = (folder / "report.md").read_text()
    assert "| island | categorical |" in page and "![label per split](label.png)" in page


def test_small_batches_give_the_same_report_and_the_category_cap_holds(make_cfg, tmp_path) -> None:
    cfg = table_cfg(make_cfg, penguins(tmp_path, extra=60), "data_report.distinct_cap=25")
    whole = data_report(cfg)
    assert data_report(cfg, batch_rows=16) == whole
    tag = whole["columns"]["tag"]["splits"]["train"]
    assert tag["distinct_capped"] is True and tag["distinct"] == 25
    assert tag["top"]["(other)"] > 0
    island = whole["columns"]["island"]["splits"]["train"]
    assert island["distinct_capped"] is False and "(other)" not in island["top"]
    assert whole["columns"]["code"]["splits"]["train"]["distinct_capped"] is True


def test_image_arrays_give_channel_statistics_and_class_balance(make_cfg) -> None:
    cfg = make_cfg()  # the digits demo
    ingest(cfg)
    prepare(cfg)
    report = data_report(cfg)
    assert report["kind"] == "images" and report["image"] == {"shape": [1, 8, 8]}
    assert sorted(report["columns"]) == ["channel 0 mean", "channel 0 std"]
    for split in SPLITS:
        x = np.load(cfg.paths.prepared / split / "x.npy").astype(np.float64)
        y = np.load(cfg.paths.prepared / split / "y.npy")
        means, stds = x.mean(axis=(2, 3))[:, 0], x.std(axis=(2, 3))[:, 0]
        got = report["columns"]["channel 0 mean"]["splits"][split]
        assert got["mean"] == pytest.approx(means.mean(), rel=1e-5)
        assert got["std"] == pytest.approx(means.std(), rel=1e-5)
        assert got["min"] == pytest.approx(means.min(), rel=1e-5) and got["missing"] == 0
        got = report["columns"]["channel 0 std"]["splits"][split]
        assert got["mean"] == pytest.approx(stds.mean(), rel=1e-5)
        shares = report["label"]["splits"][split]["classes"]
        assert list(shares.values()) == pytest.approx(
            np.bincount(y, minlength=10) / len(y), rel=1e-5
        )


def test_two_runs_write_the_same_bytes(make_cfg, tmp_path) -> None:
    cfg = table_cfg(make_cfg, penguins(tmp_path))
    data_report(cfg)
    first = (cfg.paths.data_report / "report.json").read_bytes(), md5_dir(cfg.paths.data_report)
    data_report(cfg)
    second = (cfg.paths.data_report / "report.json").read_bytes(), md5_dir(cfg.paths.data_report)
    assert second == first


def test_a_regression_reports_the_targets_distribution(make_cfg, tmp_path) -> None:
    path = tmp_path / "raw" / "data.csv"
    mixed_table(300, "regression").to_csv(path, index=False)
    cfg = make_cfg(
        "data=tabular", f"data.source.path={path}", "data.source.label=target", "task=regression"
    )
    ingest(cfg)
    prepare(cfg)
    report = data_report(cfg)
    train = report["label"]["splits"]["train"]
    y = np.load(cfg.paths.prepared / "train" / "y.npy").astype(np.float64)
    assert train["mean"] == pytest.approx(y.mean(), rel=1e-5)
    assert train["quantiles"]["p50"] == pytest.approx(np.median(y), rel=1e-5)
    assert len(train["histogram"]["edges"]) == cfg.data_report.bins + 1
    assert report["columns"]["width"]["association"]["measure"] == "|Pearson r|"
    assert report["columns"]["color"]["association"]["measure"] == "correlation ratio (eta)"


def test_without_prepared_data_it_says_to_prepare_first(make_cfg) -> None:
    cfg = make_cfg()
    with pytest.raises(PipelineError, match="run the prepare stage first"):
        data_report(cfg)
    assert not cfg.paths.data_report.exists()
