"""A table's columns as the network's inputs: the kind of each column (inferred from the
training split, or set in `features.columns`), the preprocessing fitted on the training split
(scikit-learn), and the same preprocessing as an ONNX graph (skl2onnx) that the exported model
runs on raw columns, so a client never repeats the encoding.

Numeric columns: missing values imputed (median, mean or a constant), optionally a 0/1 missing
indicator, standardised. Categorical columns (text, booleans, and integers with few values when
`features.categorical.integer_levels` says so): one-hot over the kept values plus two slots,
"(other)" for rare values and values never seen in training, and "(missing)". Dates, times,
columns whose every value differs (ids, free text) and integers that number the rows are
refused with the setting that drops them.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from sklearn.base import BaseEstimator, TransformerMixin

from mlpipeline.artifacts import atomic_path, json_text, save_arrays, write_json, write_rows
from mlpipeline.config import Config
from mlpipeline.config.schema import Features
from mlpipeline.data.splits import SPLITS, read_meta, read_rows, split_table
from mlpipeline.determinism import sample_rows
from mlpipeline.errors import PipelineError

OTHER, MISSING = "(other)", "(missing)"
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2})?)?")
OUTPUT = "features"  # the preprocessing graph's output, the network's input
BATCH_ROWS = 65_536  # rows transformed at a time: bounds the memory of a large table
# names the exported model gives its own values: the features (here), its outputs (the export
# stage's OUTPUT and PREDICTION, which tests/data/test_features.py holds to these) and the
# prefixes of its inner values; a column so named would clash with them
OWN_NAMES = (OUTPUT, "probabilities", "prediction")
OWN_PREFIXES = ("columns/", "fitted/", "network/")
# a column with a different value in each of this many rows or more is an id (or free text)
DISTINCT_ROWS = 20
# distinct integers that fill at least 1 / ROW_NUMBER_SPAN of their range number the rows
ROW_NUMBER_SPAN = 4
# a column name that a Hydra override can spell as a key (`+features.columns.NAME.kind=...`)
OVERRIDE_KEY = re.compile(r"[A-Za-z_$][A-Za-z0-9_$-]*")


@dataclass
class Column:
    """One input column as the model sees it."""

    name: str
    kind: str  # numeric | categorical
    type: str  # what a request sends: number (numeric); string, boolean or integer (categorical)
    levels: list[str] = field(default_factory=list)  # categorical: the values kept
    had_missing: bool = False  # in the training split


def column_setting(name: str, setting: str) -> str:
    """How to set `setting` (`kind=drop`) for column `name`: a command-line override where
    Hydra can spell the name as a key, else the entry to add to conf/features/default.yaml
    (names with spaces, dots or other characters)."""
    if OVERRIDE_KEY.fullmatch(name):
        return f"+features.columns.{name}.{setting}"
    key, value = setting.split("=", 1)
    entry = f"{json.dumps(name, ensure_ascii=False)}: {{{key}: {value}}}"
    return f"columns: {{{entry}}} in conf/features/default.yaml"


def category_text(value: Any) -> str:
    """One value as the string a categorical input takes: booleans as true/false, integers in
    digits, missing as the empty string (mlpipeline.serving.parsing applies the same rule)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def text_values(column: Any) -> np.ndarray:
    """A column (text, booleans or integers) as `category_text` strings."""
    if pa.types.is_boolean(column.type):
        column = pc.if_else(column, "true", "false")
    elif not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        column = pc.cast(column, pa.string())
    return np.asarray(pc.fill_null(column, "").to_numpy(zero_copy_only=False), dtype=object)


def number_values(column: Any) -> np.ndarray:
    """A column as float32, missing as NaN."""
    return pc.cast(column, pa.float32()).to_numpy(zero_copy_only=False).astype(np.float32)


def infer_columns(train: Any, cfg: Features) -> list[Column]:
    """The kind of every column of the training split (a pyarrow.parquet.ParquetFile, read a
    column at a time); PipelineError for a column no setting handles, naming the setting that
    would."""
    columns = []
    for name in train.schema_arrow.names:
        data = train.read(columns=[name]).column(0)
        override = cfg.columns.get(name)
        if override and override.kind == "drop":
            continue
        drop = f"leave it out with {column_setting(name, 'kind=drop')}"
        if name in OWN_NAMES or name.startswith(OWN_PREFIXES):
            raise PipelineError(
                f"column '{name}' has a name the exported model gives its own values "
                f"({', '.join(OWN_NAMES)}, and names starting with {', '.join(OWN_PREFIXES)}): "
                f"rename it in the data, or {drop}"
            )
        if data.null_count == len(data):
            raise PipelineError(f"column '{name}' has no values in the training split: {drop}")
        kind = override.kind if override else _kind(name, data, cfg, drop)
        if kind == "categorical" and pa.types.is_floating(data.type):
            raise PipelineError(
                f"column '{name}' is set categorical but holds fractional numbers: set "
                f"{column_setting(name, 'kind=numeric')}, or store it as integers or text"
            )
        if kind == "numeric":
            if not (pa.types.is_integer(data.type) or pa.types.is_floating(data.type)):
                raise PipelineError(
                    f"column '{name}' is set numeric but holds {data.type} values: convert it "
                    f"to numbers, or set {column_setting(name, 'kind=categorical')}"
                )
            values = number_values(data)
            if np.isinf(values).any():
                raise infinite_values(name)
            columns.append(Column(name, "numeric", "number", had_missing=data.null_count > 0))
            continue
        counts = pc.value_counts(pc.fill_null(pa.chunked_array([text_values(data)]), ""))
        frequent = sorted(
            (
                (int(n), str(v))
                for v, n in zip(
                    counts.field("values").to_pylist(),
                    counts.field("counts").to_pylist(),
                    strict=True,
                )
                if v != "" and n >= cfg.categorical.min_frequency
            ),
            key=lambda item: (-item[0], item[1]),
        )[: cfg.categorical.max_levels]
        columns.append(
            Column(
                name,
                "categorical",
                "boolean"
                if pa.types.is_boolean(data.type)
                else "integer"
                if pa.types.is_integer(data.type)
                else "string",
                levels=sorted(v for _, v in frequent),
                had_missing=data.null_count > 0,
            )
        )
    if not columns:
        raise PipelineError("every feature column is dropped: keep at least one")
    return columns


def infinite_values(name: str) -> PipelineError:
    """The one-line refusal of a numeric column with infinite values, in any split."""
    return PipelineError(
        f"column '{name}' has infinite values: replace them by numbers or leave them empty "
        f"(missing values are imputed), or leave it out with {column_setting(name, 'kind=drop')}"
    )


def _kind(name: str, data: Any, cfg: Features, drop: str) -> str:
    """numeric or categorical by the column's type and values."""
    kind_of = data.type
    if pa.types.is_temporal(kind_of):
        raise PipelineError(
            f"column '{name}' holds dates or times: turn it into numbers first (e.g. days since "
            f"a date, day of week), or {drop}"
        )
    if pa.types.is_floating(kind_of):
        return "numeric"
    if pa.types.is_integer(kind_of):
        if span := _row_numbers(data):
            raise PipelineError(
                f"column '{name}' has a different whole number in every row ({span[0]} to "
                f"{span[1]} in the training split), like a row number or an id, which tells "
                f"the model the rows' order instead of anything it can use on new data: {drop}; "
                f"if it is a quantity, set {column_setting(name, 'kind=numeric')}"
            )
        levels = cfg.categorical.integer_levels
        if levels and len(pc.unique(data.drop_null())) <= levels:
            return "categorical"
        return "numeric"
    if pa.types.is_boolean(kind_of):
        return "categorical"
    if not (pa.types.is_string(kind_of) or pa.types.is_large_string(kind_of)):
        raise PipelineError(f"column '{name}' holds {kind_of} values, not numbers or text: {drop}")
    present = data.drop_null()
    sample = present.slice(0, 10_000).to_pylist()
    numbers = sum(_is_number(v) for v in sample)
    if 0 < numbers < len(sample):
        odd = next(v for v in sample if not _is_number(v))
        raise PipelineError(
            f"column '{name}' mixes numbers and text (e.g. {odd!r}): clean it, or set "
            f"{column_setting(name, 'kind=categorical')} to take every value as a category"
        )
    if numbers:
        raise PipelineError(
            f"column '{name}' holds numbers written as text: store them as numbers, or set "
            f"{column_setting(name, 'kind=categorical')}"
        )
    if sum(bool(DATE.match(v)) for v in sample) > len(sample) / 2:
        raise PipelineError(
            f"column '{name}' holds dates or times: turn it into numbers first (e.g. days since "
            f"a date, day of week), or {drop}"
        )
    if len(present) >= DISTINCT_ROWS and len(pc.unique(present)) == len(present):
        raise PipelineError(
            f"column '{name}' has a different value in every row (an id or free text), which "
            f"no category can generalise from: {drop}"
        )
    return "categorical"


def _row_numbers(data: Any) -> tuple[int, int] | None:
    """The smallest and largest value of an integer column that numbers the rows: a different
    value in each of at least DISTINCT_ROWS rows, filling at least 1 / ROW_NUMBER_SPAN of
    their range (row numbers in a training split of a quarter of the rows, or more, do; a
    count or a measure with values that far apart does not)."""
    present = data.drop_null()
    if len(present) < DISTINCT_ROWS or pc.count_distinct(present).as_py() < len(present):
        return None
    low, high = pc.min_max(present).values()
    span = high.as_py() - low.as_py() + 1
    return (low.as_py(), high.as_py()) if span <= ROW_NUMBER_SPAN * len(present) else None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class CategoryMapper(TransformerMixin, BaseEstimator):
    """Maps each categorical column's values onto its kept levels, "(other)" or "(missing)",
    so that the one-hot encoding after it has a slot for every value it can meet."""

    def __init__(self, levels: list[list[str]]) -> None:
        self.levels = levels

    def fit(self, x: Any, y: Any = None) -> CategoryMapper:
        self.n_features_in_ = len(self.levels)
        self.feature_names_in_ = np.asarray(
            getattr(x, "columns", range(len(self.levels))), dtype=object
        )
        return self

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return np.asarray(
            self.feature_names_in_ if input_features is None else input_features, dtype=object
        )

    def transform(self, x: Any) -> np.ndarray:
        x = np.asarray(x, dtype=object)
        out = np.empty(x.shape, dtype=object)
        for j, levels in enumerate(self.levels):
            kept = set(levels)
            out[:, j] = [v if v in kept else (MISSING if v == "" else OTHER) for v in x[:, j]]
        return out


def build_preprocessor(columns: list[Column], cfg: Features) -> Any:
    """The scikit-learn ColumnTransformer for these columns (not fitted)."""
    # a second to import, and only the features stage fits it: ingest and prepare import this
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import MissingIndicator, SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = [c.name for c in columns if c.kind == "numeric"]
    incomplete = [c.name for c in columns if c.kind == "numeric" and c.had_missing]
    categorical = [c for c in columns if c.kind == "categorical"]
    parts = []
    if numeric:
        steps = [
            (
                "impute",
                SimpleImputer(strategy=cfg.numeric.impute, fill_value=cfg.numeric.fill_value),
            )
        ]
        if cfg.numeric.scale:
            steps.append(("scale", StandardScaler()))
        parts.append(("numeric", Pipeline(steps), numeric))
    if incomplete and cfg.numeric.missing_indicator:
        parts.append(("missing", MissingIndicator(features="all"), incomplete))
    if categorical:
        slots = [[*c.levels, OTHER, MISSING] for c in categorical]
        encoder = OneHotEncoder(categories=slots, sparse_output=False, dtype=np.float32)
        mapper = CategoryMapper([c.levels for c in categorical])
        parts.append(
            (
                "categorical",
                Pipeline([("map", mapper), ("onehot", encoder)]),
                [c.name for c in categorical],
            )
        )
    return ColumnTransformer(parts, sparse_threshold=0)


def frame(table: Any, columns: list[Column]) -> Any:
    """The columns of a pyarrow.Table as the pandas DataFrame the preprocessor takes."""
    return pd.DataFrame(
        {
            c.name: number_values(table.column(c.name))
            if c.kind == "numeric"
            else text_values(table.column(c.name))
            for c in columns
        }
    )


def record_frame(records: list[dict[str, Any]], columns: list[Column]) -> Any:
    """Records (missing keys and None are missing values) as the preprocessor's DataFrame."""
    data = {}
    for c in columns:
        values = [r.get(c.name) for r in records]
        if c.kind == "numeric":
            data[c.name] = np.array([np.nan if v is None else v for v in values], dtype=np.float32)
        else:
            data[c.name] = np.array([category_text(v) for v in values], dtype=object)
    return pd.DataFrame(data)


def onnx_feeds(data: Any, columns: list[Column] | list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """The exported model's inputs for rows: a pyarrow.Table (or RecordBatch), or records.
    One vector per column: float32 with NaN for missing, or strings with "" for missing."""
    feeds = {}
    for column in columns:
        name, kind = (
            (column.name, column.kind)
            if isinstance(column, Column)
            else (column["name"], column["kind"])
        )
        if isinstance(data, list):
            values = [r.get(name) for r in data]
            if kind == "numeric":
                array = np.array([np.nan if v is None else v for v in values], dtype=np.float32)
            else:
                array = np.array([category_text(v) for v in values], dtype=object)
        else:
            array = (
                number_values(data.column(name))
                if kind == "numeric"
                else text_values(data.column(name))
            )
        feeds[name] = array
    return feeds


def fit(train: Any, columns: list[Column], cfg: Features, seed: int) -> Any:
    """The preprocessor fitted on the training split (a pyarrow.parquet.ParquetFile), or on a
    seeded sample of at most `cfg.fit_rows` of its rows."""
    rows = sample_rows(train.metadata.num_rows, cfg.fit_rows, seed)
    sample = read_rows(train, rows, [c.name for c in columns])
    return build_preprocessor(columns, cfg).fit(frame(sample, columns))


def transform(
    preprocessor: Any, batches: Iterator[Any], columns: list[Column]
) -> Iterator[np.ndarray]:
    """float32 feature rows, one array per batch of the table; PipelineError for an infinite
    value (the training split's were refused already, the other splits' are found here)."""
    numeric = [c.name for c in columns if c.kind == "numeric"]
    for batch in batches:
        data = frame(batch, columns)
        for name in numeric:
            if np.isinf(data[name].to_numpy()).any():
                raise infinite_values(name)
        yield np.ascontiguousarray(preprocessor.transform(data), dtype=np.float32)


def feature_names(preprocessor: Any) -> list[str]:
    """The network's input columns: `numeric__x`, `missing__missingindicator_x`, ..."""
    return [str(n) for n in preprocessor.get_feature_names_out()]


def feature_columns(preprocessor: Any) -> list[str]:
    """The source column of each network input, in the inputs' order, from the fitted
    ColumnTransformer's parts (not from parsing names): a numeric column's scaled value, its
    missing indicator, a categorical column's one-hot slots."""
    sources: list[str] = []
    for name, transformer, columns in preprocessor.transformers_:
        if transformer == "drop" or not len(columns):
            continue
        if name == "categorical":
            encoder = transformer.named_steps["onehot"]
            for column, slots in zip(columns, encoder.categories_, strict=True):
                sources += [column] * len(slots)
        else:  # numeric values and missing indicators: one input per column
            sources += list(columns)
    if len(sources) != len(feature_names(preprocessor)):
        raise AssertionError("the preprocessor's parts do not account for its every output")
    return sources


def to_onnx(preprocessor: Any, columns: list[Column], opset: int) -> Any:
    """The fitted preprocessor as an ONNX graph: one input per raw column, a vector of the
    batch's values (float with NaN for missing, or strings with "" for missing), one output
    `features`. Vectors rather than skl2onnx's [n, 1] columns, so that a DataFrame's columns
    (as MLflow's ONNX flavour passes them) feed it as they are."""
    # onnx and skl2onnx take seconds to import, and only the features stage converts
    from onnx import TensorProto, compose, helper
    from skl2onnx import to_onnx as convert
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    _register_converters()
    inputs = [
        (c.name, FloatTensorType([None, 1]) if c.kind == "numeric" else StringTensorType([None, 1]))
        for c in columns
    ]
    fitted = convert(
        preprocessor,
        initial_types=inputs,
        target_opset={"": opset, "ai.onnx.ml": 3},
        final_types=[(OUTPUT, FloatTensorType([None, len(feature_names(preprocessor))]))],
    )
    fitted = compose.add_prefix(fitted, "fitted/", rename_outputs=False)
    # skl2onnx renames inputs whose names are not identifiers (`x one` becomes `x_one`, and
    # `x_one` then something else): its inputs are matched to the columns by position, and
    # the graph's own values get names of the column's position, never of its name
    fitted_inputs = [i.name for i in fitted.graph.input]
    types = {"numeric": TensorProto.FLOAT, "categorical": TensorProto.STRING}
    front = helper.make_model(
        helper.make_graph(
            [
                helper.make_node("Unsqueeze", [c.name, "columns/axis"], [f"columns/{i}"])
                for i, c in enumerate(columns)
            ],
            "columns",
            [helper.make_tensor_value_info(c.name, types[c.kind], ["batch"]) for c in columns],
            [
                helper.make_tensor_value_info(f"columns/{i}", types[c.kind], ["batch", 1])
                for i, c in enumerate(columns)
            ],
            [helper.make_tensor("columns/axis", TensorProto.INT64, [1], [1])],
        ),
        opset_imports=list(fitted.opset_import),
        ir_version=fitted.ir_version,
    )
    model = compose.merge_models(
        front, fitted, io_map=[(f"columns/{i}", name) for i, name in enumerate(fitted_inputs)]
    )
    model.producer_name, model.producer_version = "mlpipeline", ""
    # the converters list the opsets in a set's order, which follows PYTHONHASHSEED: sorted,
    # the same table gives the same bytes in every process
    opsets = sorted(model.opset_import, key=lambda opset: opset.domain)
    del model.opset_import[:]
    model.opset_import.extend(opsets)
    return model


def _register_converters() -> None:
    """skl2onnx converters for the two transformers it has none for."""
    # as to_onnx: seconds to import, and only the features stage converts
    from onnx import TensorProto
    from skl2onnx import update_registered_converter
    from skl2onnx.algebra.onnx_ops import (
        OnnxCast,
        OnnxConcat,
        OnnxGather,
        OnnxIsNaN,
        OnnxLabelEncoder,
    )
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.impute import MissingIndicator

    def indicator_shape(operator: Any) -> None:
        n = operator.inputs[0].get_first_dimension()
        operator.outputs[0].type = FloatTensorType([n, operator.raw_operator.n_features_in_])

    def indicator(scope: Any, operator: Any, container: Any) -> None:
        opv = container.target_opset
        nan = OnnxIsNaN(operator.inputs[0], op_version=opv)
        OnnxCast(
            nan, to=TensorProto.FLOAT, op_version=opv, output_names=operator.outputs[:1]
        ).add_to(scope, container)

    def mapper_shape(operator: Any) -> None:
        n = operator.inputs[0].get_first_dimension()
        operator.outputs[0].type = StringTensorType([n, len(operator.raw_operator.levels)])

    def mapper(scope: Any, operator: Any, container: Any) -> None:
        opv = container.target_opset
        mapped = []
        for j, levels in enumerate(operator.raw_operator.levels):
            column = OnnxGather(
                operator.inputs[0], np.array([j], dtype=np.int64), axis=1, op_version=opv
            )
            keys = [*levels, ""]
            mapped.append(
                OnnxLabelEncoder(
                    column,
                    keys_strings=keys,
                    values_strings=[*levels, MISSING],
                    default_string=OTHER,
                    op_version=2,
                )
            )
        OnnxConcat(*mapped, axis=1, op_version=opv, output_names=operator.outputs[:1]).add_to(
            scope, container
        )

    update_registered_converter(
        MissingIndicator, "MlpipelineMissingIndicator", indicator_shape, indicator
    )
    update_registered_converter(CategoryMapper, "MlpipelineCategoryMapper", mapper_shape, mapper)


def schema(columns: list[Column], preprocessor: Any) -> dict[str, Any]:
    """What a person reads to see what the model takes and what it made of each column."""
    fitted: dict[str, dict[str, Any]] = {}
    transformers = dict((n, t) for n, t, _ in preprocessor.transformers_)
    numeric = [c.name for c in columns if c.kind == "numeric"]
    if "numeric" in transformers:
        steps = transformers["numeric"].named_steps
        for i, name in enumerate(numeric):
            fitted[name] = {"impute_with": float(steps["impute"].statistics_[i])}
            if "scale" in steps:
                fitted[name] |= {
                    "mean": float(steps["scale"].mean_[i]),
                    "std": float(steps["scale"].scale_[i]),
                }
    return {
        "columns": [asdict(c) | fitted.get(c.name, {}) for c in columns],
        "features": feature_names(preprocessor),
        "slots": {"other": OTHER, "missing": MISSING},
    }


def probe_rows(table: Any, columns: list[Column], rows: int = 4) -> list[dict[str, Any]]:
    """Test rows as records, and the same rows with each column missing in turn and each
    categorical column set to a value never seen: what the export check also runs."""
    base = [
        {k: category_text(v) if isinstance(v, bool) else v for k, v in r.items()}
        for r in table.slice(0, rows).to_pylist()
    ]
    probes = [dict(r) for r in base]
    for i, column in enumerate(columns):
        missing = dict(base[i % len(base)])
        missing[column.name] = None
        probes.append(missing)
        if column.kind == "categorical":
            unseen = dict(base[i % len(base)])
            unseen[column.name] = "a value never seen in training"
            probes.append(unseen)
    names = {c.name for c in columns}
    return [{k: v for k, v in p.items() if k in names} for p in probes]


def write_table_features(cfg: Config) -> tuple[dict[str, Any], str]:
    """A table's features: the column kinds, the preprocessing fitted on the training split
    (also as preprocess.onnx), the feature rows of every split, the probes and schema.json."""
    source = cfg.paths.prepared
    meta = read_meta(source)
    train = split_table(source, "train")
    columns = infer_columns(train, cfg.features)
    preprocessor = fit(train, columns, cfg.features, cfg.seed)
    train_rows = train.metadata.num_rows
    names = feature_names(preprocessor)
    with atomic_path(cfg.paths.features, is_dir=True) as out:
        for split in SPLITS:
            (out / split).mkdir()
            parquet = split_table(source, split)
            batches = parquet.iter_batches(batch_size=BATCH_ROWS, columns=[c.name for c in columns])
            chunks = transform(preprocessor, batches, columns)
            write_rows(out / split / "x.npy", chunks, parquet.metadata.num_rows, len(names))
            shutil.copy2(source / split / "y.npy", out / split / "y.npy")
        test = split_table(source, "test")
        first = np.arange(min(4, test.metadata.num_rows))
        probes = probe_rows(read_rows(test, first, [c.name for c in columns]), columns)
        probe_x = preprocessor.transform(record_frame(probes, columns))
        (out / "probes.json").write_text(json_text(probes), encoding="utf-8")
        save_arrays(out, probes=np.asarray(probe_x, dtype=np.float32))
        model = to_onnx(preprocessor, columns, cfg.export.opset)
        (out / "preprocess.onnx").write_bytes(model.SerializeToString())
        write_json(out / "schema.json", schema(columns, preprocessor))
        out_meta = {
            **meta,
            "input_shape": [len(names)],
            "columns": [{"name": c.name, "kind": c.kind, "type": c.type} for c in columns],
            "feature_names": names,
            # the explain stage groups the inputs back into the columns they came from
            "feature_columns": feature_columns(preprocessor),
            # the preprocessing standardises: the network's own normalisation is the identity
            "normalization": {"mean": [0.0] * len(names), "std": [1.0] * len(names)},
        }
        write_json(out / "meta.json", out_meta)
    kinds = {k: sum(c.kind == k for c in columns) for k in ("numeric", "categorical")}
    return out_meta, (
        f"{kinds['numeric']} numeric and {kinds['categorical']} categorical columns -> "
        f"{len(names)} inputs, fitted on {min(train_rows, cfg.features.fit_rows)} training "
        f"rows -> {cfg.paths.features}"
    )


def with_preprocessing(preprocess: Path, network: Path, out: Path) -> None:
    """One ONNX model: the fitted preprocessing (raw columns in, features out) feeding the
    network (onnx.compose); its inputs are the raw columns, its output the network's."""
    # a second to import, and only the export stage of a table model joins the graphs
    import onnx
    from onnx import compose

    prep, net = onnx.load(str(preprocess)), onnx.load(str(network))
    net = compose.add_prefix(net, "network/", rename_inputs=False, rename_outputs=False)
    version = max(prep.ir_version, net.ir_version)
    prep.ir_version = net.ir_version = version
    merged = compose.merge_models(prep, net, io_map=[(OUTPUT, OUTPUT)])
    onnx.checker.check_model(merged)
    onnx.save(merged, str(out))
