"""Tables through ingest, prepare and features (mlpipeline.data.splits, mlpipeline.data.features):
labels, column kinds, the fitted preprocessing and its ONNX graph, and the refusals."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
from helpers import mixed_table, one_line_error, tiny_params

from mlpipeline.artifacts import load_array, read_json
from mlpipeline.config.schema import ColumnOverride
from mlpipeline.data.features import OTHER, OWN_NAMES, category_text, onnx_feeds
from mlpipeline.data.splits import read_split, split_table
from mlpipeline.errors import PipelineError
from mlpipeline.serving import parsing
from mlpipeline.stages.features import features
from mlpipeline.stages.ingest import ingest
from mlpipeline.stages.prepare import prepare


def table_cfg(make_cfg, tmp_path: Path, frame: pd.DataFrame, *overrides: str, kind: str = "csv"):
    path = tmp_path / "raw" / f"data.{kind}"
    if kind == "csv":
        frame.to_csv(path, index=False)
    else:  # Parquet keeps each column's type: numbers stored as text stay text
        frame.to_parquet(path)
    return make_cfg(
        "data=tabular",
        f"data.source.kind={kind}",
        "model=mlp",
        f"data.source.path={path}",
        "data.source.label=target",
        *overrides,
    )


def through_features(cfg) -> dict:
    ingest(cfg)
    prepare(cfg)
    return features(cfg)


def test_integer_labels_are_classes_in_numeric_order(make_cfg, tmp_path: Path) -> None:
    frame = mixed_table(120).assign(target=np.arange(120) % 12)
    cfg = table_cfg(make_cfg, tmp_path, frame, "data.split.min_class_samples=3")
    ingest(cfg)
    assert prepare(cfg).meta["classes"] == [str(i) for i in range(12)]  # not 0, 1, 10, 11, 2


def test_column_kinds_are_inferred_and_can_be_set(make_cfg, tmp_path: Path) -> None:
    cfg = table_cfg(make_cfg, tmp_path, mixed_table())
    through_features(cfg)
    schema = read_json(cfg.paths.features / "schema.json")
    kinds = {c["name"]: (c["kind"], c["type"]) for c in schema["columns"]}
    assert kinds == {
        "width": ("numeric", "number"),
        "color": ("categorical", "string"),
        "flag": ("categorical", "boolean"),
        "count": ("numeric", "number"),
    }
    width = next(c for c in schema["columns"] if c["name"] == "width")
    assert width["had_missing"] and {"impute_with", "mean", "std"} <= set(width)
    assert "missing__missingindicator_width" in schema["features"]

    cfg = table_cfg(
        make_cfg,
        tmp_path,
        mixed_table(),
        "features.categorical.integer_levels=10",
        "+features.columns.width.kind=drop",
    )
    through_features(cfg)
    columns = read_json(cfg.paths.features / "schema.json")["columns"]
    assert [(c["name"], c["kind"], c["type"]) for c in columns] == [
        ("color", "categorical", "string"),
        ("flag", "categorical", "boolean"),
        ("count", "categorical", "integer"),
    ]


def test_preprocessing_is_fitted_on_the_training_split_only(make_cfg, tmp_path: Path) -> None:
    cfg = table_cfg(make_cfg, tmp_path, mixed_table(), "features.numeric.missing_indicator=false")
    through_features(cfg)
    train = split_table(cfg.paths.prepared, "train").read()
    width = next(
        c for c in read_json(cfg.paths.features / "schema.json")["columns"] if c["name"] == "width"
    )
    values = train.column("width").drop_null().to_numpy()
    assert width["impute_with"] == pytest.approx(float(np.median(values)), rel=1e-6)
    x, _ = read_split(cfg.paths.features, "train")
    assert abs(x[:, 0].mean()) < 1e-5  # standardised with the training split's own figures
    x_test, _ = read_split(cfg.paths.features, "test")
    assert abs(x_test[:, 0].mean()) > 1e-4


def test_the_onnx_preprocessing_matches_scikit_learn(make_cfg, tmp_path: Path) -> None:
    cfg = table_cfg(make_cfg, tmp_path, mixed_table())
    meta = through_features(cfg)
    session = ort.InferenceSession(str(cfg.paths.features / "preprocess.onnx"))
    test = split_table(cfg.paths.prepared, "test").read()
    x, _ = read_split(cfg.paths.features, "test")
    feeds = onnx_feeds(test, meta["columns"])
    assert np.abs(session.run(None, feeds)[0] - x).max() < 1e-5
    probes = read_json(cfg.paths.features / "probes.json")
    assert any(p.get("color") is None for p in probes)
    assert any(p.get("color") == "a value never seen in training" for p in probes)
    out = session.run(None, onnx_feeds(probes, meta["columns"]))[0]
    assert np.abs(out - load_array(cfg.paths.features / "probes.npy")).max() < 1e-5


# column names that are not identifiers: skl2onnx renames such inputs (`x one` to `x_one`,
# which another column already has), and a Hydra override cannot spell them as keys
ODD_NAMES = {"width": "x one", "color": "c.olor/é", "flag": "x_one", "count": "n°: count"}


def test_column_names_of_any_characters_are_valid(make_cfg, tmp_path: Path) -> None:
    cfg = table_cfg(make_cfg, tmp_path, mixed_table().rename(columns=ODD_NAMES))
    meta = through_features(cfg)
    assert [c["name"] for c in meta["columns"]] == list(ODD_NAMES.values())
    session = ort.InferenceSession(str(cfg.paths.features / "preprocess.onnx"))
    assert [i.name for i in session.get_inputs()] == list(ODD_NAMES.values())
    test = split_table(cfg.paths.prepared, "test").read()
    x, _ = read_split(cfg.paths.features, "test")
    assert np.abs(session.run(None, onnx_feeds(test, meta["columns"]))[0] - x).max() < 1e-5


@pytest.mark.parametrize("own", ["features", "probabilities", "prediction", "fitted/x"])
def test_a_column_named_as_the_models_own_values_is_refused(
    make_cfg, tmp_path: Path, own: str
) -> None:
    cfg = table_cfg(make_cfg, tmp_path, mixed_table().rename(columns={"color": own}))
    with pytest.raises(PipelineError, match="has a name the exported model gives its own"):
        through_features(cfg)
    assert not cfg.paths.features.exists()
    # left out, it is no clash
    drop = {"columns": {own: ColumnOverride(kind="drop")}}
    features(cfg.model_copy(update={"features": cfg.features.model_copy(update=drop)}))


def test_the_names_refused_are_those_the_export_stage_gives() -> None:
    from mlpipeline.stages import export

    assert set(OWN_NAMES) == {export.FEATURES, export.OUTPUT, export.PREDICTION}


def test_rare_unseen_and_missing_categories_have_their_own_slots(make_cfg, tmp_path: Path) -> None:
    cfg = table_cfg(make_cfg, tmp_path, mixed_table(), "features.categorical.min_frequency=30")
    meta = through_features(cfg)
    color = next(
        c for c in read_json(cfg.paths.features / "schema.json")["columns"] if c["name"] == "color"
    )
    assert "violet" not in color["levels"] and "red" in color["levels"]  # rare: grouped
    session = ort.InferenceSession(str(cfg.paths.features / "preprocess.onnx"))
    base = {"width": 10.0, "flag": True, "count": 2}
    rows = [base | {"color": c} for c in ("violet", "never seen", None, "red")]
    out = session.run(None, onnx_feeds(rows, meta["columns"]))[0]
    names = meta["feature_names"]
    other, missing = (
        names.index(f"categorical__color_{OTHER}"),
        names.index("categorical__color_(missing)"),
    )
    assert out[0, other] == out[1, other] == 1 and out[2, missing] == 1
    assert np.array_equal(out[0], out[1]) and not np.array_equal(out[0], out[3])


def test_serving_encodes_categories_as_the_features_stage_does() -> None:
    cases = [
        ("string", "red"),
        ("string", None),
        ("boolean", True),
        ("boolean", False),
        ("integer", 3),
        ("integer", -12),
        ("integer", None),
    ]
    for column_type, value in cases:
        assert parsing.category_text(value, column_type) == category_text(value)
    assert parsing.category_text(3.0, "integer") == "3"
    for column_type, value in [
        ("string", 3),
        ("boolean", "true"),
        ("integer", True),
        ("integer", 2.5),
        ("integer", "3"),
    ]:
        assert parsing.category_text(value, column_type) is None, (column_type, value)


def column_of(rows: int, values: list) -> list:
    return (values * (rows // len(values) + 1))[:rows]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda f: f.assign(code=column_of(len(f), ["1", "2", "x3"])),
            "column 'code' mixes numbers and text (e.g. 'x3'): clean it, or set "
            "+features.columns.code.kind=categorical",
        ),
        (
            lambda f: f.assign(name=[f"row {i}" for i in range(len(f))]),
            "column 'name' has a different value in every row (an id or free text), which no "
            "category can generalise from: leave it out with +features.columns.name.kind=drop",
        ),
        (
            lambda f: f.assign(day=pd.date_range("2024-01-01", periods=len(f)).astype(str)),
            "column 'day' holds dates or times",
        ),
        (
            lambda f: f.assign(size=column_of(len(f), ["1.5", "2", "3.25"])),
            "column 'size' holds numbers written as text",
        ),
        (
            lambda f: f.assign(id=np.arange(1001, 1001 + len(f))),
            "column 'id' has a different whole number in every row (",
        ),
        (lambda f: f.assign(empty=np.nan), "column 'empty' has no values in the training split"),
        (
            lambda f: f.assign(width=np.where(np.arange(len(f)) == 3, np.inf, f.width)),
            "column 'width' has infinite values",
        ),
    ],
    ids=[
        "mixed-types",
        "all-unique",
        "dates",
        "numbers-as-text",
        "integer-id",
        "all-missing",
        "infinite",
    ],
)
def test_columns_no_setting_handles_are_refused_in_one_line(
    make_cfg, tmp_path: Path, change, message: str
) -> None:
    cfg = table_cfg(make_cfg, tmp_path, change(mixed_table()), kind="parquet")
    ingest(cfg)
    prepare(cfg)
    with pytest.raises(PipelineError) as caught:
        features(cfg)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert not cfg.paths.features.exists()
    assert not list(cfg.paths.features.parent.glob(f".{cfg.paths.features.name}*"))


def with_row_names(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with R's row names first, as Rdatasets' CSV files have them."""
    return pd.concat([pd.Series(np.arange(1, len(frame) + 1), name="rownames"), frame], axis=1)


def diabetes_by_target() -> pd.DataFrame:
    """scikit-learn's diabetes (a regression), sorted by its target, rows numbered after."""
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(as_frame=True, scaled=False).frame
    return with_row_names(frame.sort_values("target", ignore_index=True))


def penguins() -> pd.DataFrame:
    """The Palmer penguins as the package ships them: integer columns with gaps, and year."""
    import palmerpenguins

    path = Path(palmerpenguins.__file__).parent / "data" / "penguins.csv"
    return pd.read_csv(path).rename(columns={"species": "target"})


def test_row_numbers_are_refused_like_a_text_id_on_a_table_sorted_by_its_target(
    make_cfg, tmp_path: Path
) -> None:
    cfg = table_cfg(make_cfg, tmp_path, diabetes_by_target(), "task=regression")
    with pytest.raises(PipelineError) as caught:
        through_features(cfg)
    assert str(caught.value).startswith("column 'rownames' has a different whole number in every")
    assert str(caught.value).endswith(
        "leave it out with +features.columns.rownames.kind=drop; if it is a quantity, set "
        "+features.columns.rownames.kind=numeric"
    )
    assert not cfg.paths.features.exists()
    dropped = table_cfg(
        make_cfg,
        tmp_path,
        diabetes_by_target(),
        "task=regression",
        "+features.columns.rownames.kind=drop",
    )
    assert "rownames" not in [c["name"] for c in through_features(dropped)["columns"]]


@pytest.mark.parametrize(
    ("frame", "overrides", "integers"),
    [
        (penguins(), [], ["flipper_length_mm", "body_mass_g", "year"]),
        (with_row_names(penguins()), ["+features.columns.rownames.kind=numeric"], ["rownames"]),
        # a quantity with a different value in every row, far apart: not a row number
        (mixed_table().assign(volume=np.arange(400) * 7919 + 1), [], ["volume"]),
    ],
    ids=["penguins", "row-names-said-numeric", "distinct-quantity"],
)
def test_integer_quantities_stay_numbers(
    make_cfg, tmp_path: Path, frame: pd.DataFrame, overrides: list[str], integers: list[str]
) -> None:
    cfg = table_cfg(make_cfg, tmp_path, frame, *overrides)
    kinds = {c["name"]: c["kind"] for c in through_features(cfg)["columns"]}
    assert all(kinds[name] == "numeric" for name in integers), kinds


@pytest.mark.parametrize(
    ("frame", "overrides", "stage", "parts"),
    [
        (
            mixed_table().assign(code=column_of(400, ["1", "2", "x3"])),
            [],
            "features",
            ["column 'code' mixes numbers and text", "+features.columns.code.kind=categorical"],
        ),
        (
            mixed_table().assign(target=column_of(400, ["a", None, "b", "c"])),
            [],
            "ingest",
            ["100 of 400 rows", "data.source.drop_missing_label=true"],
        ),
        (mixed_table(), ["task=regression"], "prepare", ["label 'target' is not numeric"]),
        (
            mixed_table(task="regression"),
            [],
            "prepare",
            ["distinct numeric values, too many for classes", "set task=regression"],
        ),
        (
            mixed_table().assign(note=[f"note {i}" for i in range(400)]),
            [],
            "features",
            ["column 'note' has a different value in every row", "kind=drop"],
        ),
        (
            mixed_table().rename(columns={"color": "width"}),
            [],
            "ingest",
            ["data.csv has more than one column named 'width': rename them"],
        ),
        (mixed_table().rename(columns={"count": ""}), [], "ingest", ["column 4 of", "has no name"]),
        (
            mixed_table().assign(**{"code x": column_of(400, ["1", "2", "x3"])}),
            [],
            "features",
            [
                "column 'code x' mixes numbers and text",
                'set columns: {"code x": {kind: categorical}} in conf/features/default.yaml',
            ],
        ),
        (
            mixed_table().rename(columns={"color": "probabilities"}),
            [],
            "features",
            ["column 'probabilities' has a name", "+features.columns.probabilities.kind=drop"],
        ),
    ],
    ids=[
        "mixed-types",
        "missing-labels",
        "text-regression-label",
        "numeric-classes",
        "all-unique",
        "duplicate-names",
        "unnamed-column",
        "odd-name-hint",
        "models-own-name",
    ],
)
def test_bad_tables_stop_the_stage_with_one_line(
    tmp_path: Path, frame: pd.DataFrame, overrides: list[str], stage: str, parts: list[str]
) -> None:
    (tmp_path / "raw").mkdir()
    frame.to_csv(tmp_path / "raw" / "data.csv", index=False)
    params, cfg = tiny_params(
        tmp_path,
        "data=tabular",
        "model=mlp",
        f"data.source.path={tmp_path}/raw/data.csv",
        "data.source.label=target",
        *overrides,
    )
    order = ["ingest", "prepare", "features"]
    for name in order[: order.index(stage) + 1]:
        proc = subprocess.run(
            [sys.executable, "-m", f"mlpipeline.stages.{name}", "--params", str(params)],
            capture_output=True,
            text=True,
            check=False,
        )
        if name != stage:
            assert proc.returncode == 0, proc.stderr
    one_line_error(proc, *parts)
    written = {
        "ingest": cfg.paths.ingested,
        "prepare": cfg.paths.prepared,
        "features": cfg.paths.features,
    }[stage]
    assert not written.exists()


def test_the_onnx_preprocessing_has_the_same_bytes_in_every_process(tmp_path: Path) -> None:
    # dvc repro runs each stage in a new process, with its own PYTHONHASHSEED: a set's order
    # in the converters must not reach the file (seeds 1 and 3 ordered its opsets differently)
    (tmp_path / "raw").mkdir()
    mixed_table().to_csv(tmp_path / "raw" / "data.csv", index=False)
    params, cfg = tiny_params(
        tmp_path,
        "data=tabular",
        "model=mlp",
        f"data.source.path={tmp_path / 'raw' / 'data.csv'}",
        "data.source.label=target",
    )
    ingest(cfg)
    prepare(cfg)
    written = []
    for seed in ("1", "3"):
        cmd = [sys.executable, "-m", "mlpipeline.stages.features", "--params", str(params)]
        subprocess.run(
            cmd, check=True, capture_output=True, env={**os.environ, "PYTHONHASHSEED": seed}
        )
        written.append((cfg.paths.features / "preprocess.onnx").read_bytes())
    assert written[0] == written[1]
