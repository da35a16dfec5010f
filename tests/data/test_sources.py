"""The data sources (mlpipeline.data.sources) through the ingest stage: digits, CSV and Parquet
tables, and their schema errors."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import CONF, ROOT

from mlpipeline.data.sources import load_digits, read_ingested, source_for
from mlpipeline.errors import PipelineError
from mlpipeline.stages.ingest import ingest


def write_table(path: Path, rows: int = 60, **columns) -> Path:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "a": rng.normal(size=rows),
            "b": rng.normal(size=rows),
            "label": ["x", "y", "z"] * (rows // 3),
        }
    )
    for name, values in columns.items():
        frame[name] = values
    if path.suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, index=False)
    return path


def test_digits_are_images_with_ten_classes(make_cfg) -> None:
    cfg = make_cfg()
    data = ingest(cfg)
    assert data.x.shape == (1797, 1, 8, 8) and data.x.dtype == np.float32
    assert data.classes == [str(i) for i in range(10)]
    assert (cfg.paths.ingested / "x.npy").is_file()


def test_digits_match_scikit_learns_loader() -> None:
    from sklearn.datasets import load_digits as sk_load_digits

    ours, theirs = load_digits(None, Path()), sk_load_digits()
    assert np.array_equal(ours.x, theirs.images.astype(np.float32)[:, None])
    assert np.array_equal(ours.y, theirs.target) and ours.y.dtype == np.int64


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_a_table_is_ingested_as_read_into_parquet(make_cfg, tmp_path: Path, kind: str) -> None:
    path = write_table(tmp_path / "raw" / f"t.{kind}", color=["red", None, "blue"] * 20)
    cfg = make_cfg("data=tabular", f"data.source.kind={kind}", f"data.source.path={path}")
    data = ingest(cfg)
    assert data.num_rows == 60 and data.features == ["a", "b", "color"]
    again, _ = read_ingested(cfg.paths.ingested)
    assert again.read().equals(data.read())
    assert again.column("color").null_count == 20  # missing values stay missing


def test_the_card_names_the_file_columns_the_model_does_not_take(make_cfg, tmp_path: Path) -> None:
    """Those left out of data.source.features and the label: the service accepts and ignores
    them in a record (with the features stage's kind=drop columns, tests/serving)."""
    path = write_table(tmp_path / "raw" / "data.csv", color=["red", None, "blue"] * 20)
    cfg = make_cfg("data=tabular", f"data.source.path={path}", "data.source.features=[a,color]")
    ingest(cfg)
    _, meta = read_ingested(cfg.paths.ingested)
    assert meta["file_columns"] == ["a", "b", "label", "color"]
    columns = [{"name": "color", "kind": "categorical", "type": "string"}]
    spec = source_for(cfg).model_input({**meta, "columns": columns})
    assert spec["ignored_columns"] == ["a", "b", "label"]


def test_rows_without_a_label_are_counted_or_dropped(make_cfg, tmp_path: Path) -> None:
    path = write_table(tmp_path / "raw" / "data.csv", label=["x", None, "y"] * 20)
    with pytest.raises(
        PipelineError,
        match=r"^20 of 60 rows .* have no 'label'.*"
        r"data\.source\.drop_missing_label=true$",
    ):
        ingest(make_cfg("data=tabular", f"data.source.path={path}"))
    cfg = make_cfg(
        "data=tabular", f"data.source.path={path}", "data.source.drop_missing_label=true"
    )
    assert ingest(cfg).num_rows == 40
    ingested, _ = read_ingested(cfg.paths.ingested)
    assert ingested.read().column("label").to_pylist() == ["x", "y"] * 20


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: None, "not found: put your CSV file there"),
        (lambda p: write_table(p).write_text("a,b\n1,2\n"), "label column 'label' not in"),
        (
            lambda p: write_table(p.with_suffix(".parquet")).rename(p),
            "set data.source.kind: parquet",
        ),
        (lambda p: write_table(p, label=[None] * 60), "have no 'label'"),
    ],
    ids=["missing-file", "no-label-column", "parquet-as-csv", "empty-labels"],
)
def test_schema_errors_name_the_problem_and_leave_no_output(
    make_cfg, tmp_path: Path, setup, message: str
) -> None:
    path = tmp_path / "raw" / "data.csv"
    setup(path)
    cfg = make_cfg("data=tabular", f"data.source.path={path}")
    with pytest.raises(
        PipelineError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")
    ):
        ingest(cfg)
    assert not cfg.paths.ingested.exists()


def test_a_folder_as_the_path_says_it_is_a_folder_and_names_a_file_in_it(
    make_cfg, tmp_path: Path
) -> None:
    folder = tmp_path / "raw" / "tables"
    folder.mkdir(parents=True)
    cfg = make_cfg("data=tabular", f"data.source.path={folder}")
    with pytest.raises(PipelineError) as empty:
        ingest(cfg)
    assert str(empty.value) == (
        f"data.source.path {folder} is a folder, not a file: a table source reads one CSV "
        "file; point data.source.path at it"
    )
    write_table(folder / "penguins.csv")
    (folder / "penguins.csv.dvc").write_text("outs: []\n")
    with pytest.raises(
        PipelineError, match=rf"point data\.source\.path at it, e\.g\. {folder}/penguins\.csv$"
    ):
        ingest(cfg)
    assert not cfg.paths.ingested.exists()


def test_source_outside_raw_dir_is_refused(make_cfg, tmp_path: Path) -> None:
    path = write_table(tmp_path / "elsewhere.csv")
    cfg = make_cfg("data=tabular", f"data.source.path={path}")
    with pytest.raises(PipelineError, match="outside"):
        ingest(cfg)


def test_csv_configured_as_parquet_says_to_change_the_kind(make_cfg, tmp_path: Path) -> None:
    path = write_table(tmp_path / "raw" / "t.csv")
    cfg = make_cfg("data=tabular", "data.source.kind=parquet", f"data.source.path={path}")
    with pytest.raises(PipelineError, match=r"not a Parquet file .*set data\.source\.kind: csv"):
        ingest(cfg)


def test_a_misspelt_feature_column_lists_the_columns(make_cfg, tmp_path: Path) -> None:
    path = write_table(tmp_path / "raw" / "t.csv")
    cfg = make_cfg("data=tabular", f"data.source.path={path}", "data.source.features=[a,bb]")
    with pytest.raises(PipelineError, match=r"\['bb'\].*did you mean 'b'\? columns: a, b, label"):
        ingest(cfg)


def test_a_gzip_compressed_csv_is_read_whatever_its_name(make_cfg, tmp_path: Path) -> None:
    plain = write_table(tmp_path / "raw" / "plain.csv", color=["red", None, "blue"] * 20)
    packed = tmp_path / "raw" / "data.csv"  # compressed, named as plain CSV
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    tables = [
        ingest(make_cfg("data=tabular", f"data.source.path={path}")).read()
        for path in (plain, packed)
    ]
    assert tables[1].equals(tables[0]) and tables[1].num_rows == 60


def test_compressed_parquet_is_refused_with_the_way_to_read_it(make_cfg, tmp_path: Path) -> None:
    parquet = write_table(tmp_path / "raw" / "t.parquet")
    parquet.write_bytes(gzip.compress(parquet.read_bytes()))
    cfg = make_cfg("data=tabular", "data.source.kind=parquet", f"data.source.path={parquet}")
    with pytest.raises(
        PipelineError, match=r"is gzip-compressed Parquet: decompress it \(gunzip\)"
    ):
        ingest(cfg)


@pytest.mark.parametrize(
    ("separator", "setting"), [(";", "';'"), ("\t", "'\\t'")], ids=["semicolon", "tab"]
)
def test_a_csv_with_another_delimiter_says_which_to_set(
    make_cfg, tmp_path: Path, separator: str, setting: str
) -> None:
    path = tmp_path / "raw" / "data.csv"
    write_table(tmp_path / "raw" / "t.csv")
    path.write_text((tmp_path / "raw" / "t.csv").read_text().replace(",", separator))
    with pytest.raises(PipelineError) as caught:
        ingest(make_cfg("data=tabular", f"data.source.path={path}"))
    assert str(caught.value) == (
        f"label column 'label' not in {path}, whose header looks separated by {setting}, not "
        f"',': set data.source.delimiter={setting}"
    )
    # the setting as the message spells it, on the command line
    data = ingest(
        make_cfg("data=tabular", f"data.source.path={path}", f"data.source.delimiter={setting}")
    )
    assert data.num_rows == 60 and data.features == ["a", "b"]


def test_a_delimiter_of_more_than_one_character_is_refused(make_cfg, tmp_path: Path) -> None:
    path = write_table(tmp_path / "raw" / "t.csv")
    cfg = make_cfg("data=tabular", f"data.source.path={path}", "data.source.delimiter=';;'")
    with pytest.raises(PipelineError, match=r"^data.source.delimiter ';;' is not a field sep"):
        ingest(cfg)


# docs/your-data.md's example of a source of one's own, as a user would copy it
YOUR_DATA = (ROOT / "docs/your-data.md").read_text(encoding="utf-8")
USER_SOURCE = YOUR_DATA.split("## A source of your own", 1)[1].split("```python\n", 1)[1]
USER_SOURCE = USER_SOURCE.split("```", 1)[0]


def test_a_users_own_source_kind_is_one_class_and_one_conf_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from helpers import tiny

    from mlpipeline.config import check_targets, compose_config
    from mlpipeline.stages.prepare import prepare

    (tmp_path / "usersource.py").write_text(USER_SOURCE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    conf = Path(shutil.copytree(CONF, tmp_path / "conf"))
    config = conf / "config.yaml"
    config.write_text(
        config.read_text().replace("allowed_targets: [", "allowed_targets: [usersource, ")
    )
    (conf / "data/even.yaml").write_text(
        "defaults:\n  - digits\n  - _self_\nsource:\n  _target_: usersource.EvenDigits\n"
        "  every: 2\n",
        encoding="utf-8",
    )
    (tmp_path / "raw").mkdir()
    cfg = tiny(compose_config(conf, ["data=even"])[1], tmp_path)
    check_targets(cfg, {"data.source"})
    assert ingest(cfg).classes == ["0", "2", "4", "6", "8"]
    assert len(prepare(cfg).meta["classes"]) == 5

    bad = tiny(compose_config(conf, ["data=even", "data.source.every=two"])[1], tmp_path)
    with pytest.raises(PipelineError, match=r"data\.source\.every: Input should be a valid int"):
        check_targets(bad, {"data.source"})
