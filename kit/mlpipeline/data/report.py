"""The data report (`paths.data_report`): per column of the prepared splits its kind, missing
share, distinct count, statistics and quantiles or top values, its association with the label,
and train/val/test compared (PSI); the label's class balance or distribution. report.json,
report.md and PNG histograms.

Streamed: each split is read a batch of rows at a time, and what is kept across batches is
bounded by `data_report`'s settings, never by the rows: exact counts, sums and extremes, the
distinct values up to `distinct_cap` (categories counted exactly up to that many values, the
rest as "(other)"), and a seeded sample of at most `sample_rows` rows per split, from which
quantiles, histograms and associations come. Every float is rounded to 6 significant digits
and keys are sorted, so the same data gives the same bytes.

What differs by data kind is the `Scan` the data source gives (`table_scan`, `image_scan`);
what differs by task (class balance or target distribution, the association measures) is the
task object's.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlpipeline.artifacts import (
    TABLE_BATCH_ROWS,
    array_chunks,
    atomic_path,
    json_text,
    load_array,
    parquet_reader,
)
from mlpipeline.config.tasks import Task, quantiles
from mlpipeline.data.splits import SPLITS, read_meta
from mlpipeline.determinism import sample_rows

NUMERIC, CATEGORICAL = "numeric", "categorical"
OTHER, MISSING = "(other)", "(missing)"
IMAGE_CHUNK_BYTES = 16 << 20  # bytes of images read at a time
REPORT_JSON = "report.json"  # in paths.data_report: what the pull-request report compares
# a numeric column's PSI counts the training split's deciles (and the missing values), as the
# drift profile bins it: the histogram's narrow bins would make a small split's PSI noise
PSI_BINS = 10
SPLIT_COLOURS = {"train": "#4c72b0", "val": "#dd8452", "test": "#55a868"}


@dataclass(frozen=True)
class Scan:
    """One split as the report reads it: each column's kind (numeric or categorical) and
    type, the row count, and its batches: each its row count and its columns one at a time,
    (name, values): float64 with NaN missing for a numeric column, a pyarrow array of text for
    a categorical one, converted as they are asked for (one column's copy held at a time)."""

    columns: dict[str, tuple[str, str]]
    rows: int
    batches: Callable[[], Iterator[tuple[int, Iterator[tuple[str, Any]]]]]
    extra: dict[str, Any] = field(default_factory=dict)  # top-level keys of report.json


# Reading: tables and image arrays.


def _table_kind(data_type: Any) -> str:
    # pyarrow: a second to import, and only tables need it
    import pyarrow as pa

    number = pa.types.is_integer(data_type) or pa.types.is_floating(data_type)
    return NUMERIC if number or pa.types.is_decimal(data_type) else CATEGORICAL


def _table_values(column: Any, kind: str) -> Any:
    """A batch's column as the report counts it: float64 with NaN for missing, or text."""
    # pyarrow: a second to import, and only tables need it
    import pyarrow as pa
    import pyarrow.compute as pc

    if kind == NUMERIC:
        return pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
    if pa.types.is_boolean(column.type):
        return pc.if_else(column, "true", "false")
    return column if pa.types.is_string(column.type) else pc.cast(column, pa.string())


def table_scan(directory: Path, split: str, batch_rows: int = TABLE_BATCH_ROWS) -> Scan:
    """A prepared table's split (`<directory>/<split>/x.parquet`): its columns by Arrow type,
    numbers numeric and everything else categorical, read `batch_rows` rows at a time."""
    parquet = parquet_reader(directory / split / "x.parquet")
    schema = parquet.schema_arrow
    columns = {f.name: (_table_kind(f.type), str(f.type)) for f in schema}

    def values(batch: Any) -> Iterator[tuple[str, Any]]:
        for name, (kind, _) in columns.items():
            yield name, _table_values(batch.column(name), kind)

    def batches() -> Iterator[tuple[int, Iterator[tuple[str, Any]]]]:
        for batch in parquet.iter_batches(batch_size=batch_rows, columns=list(columns)):
            yield batch.num_rows, values(batch)

    return Scan(columns, parquet.metadata.num_rows, batches)


def image_scan(directory: Path, split: str, statistics: Callable[[np.ndarray], Any]) -> Scan:
    """A prepared image split (`<directory>/<split>/x.npy`, N x C x H x W): per channel each
    image's mean and standard deviation (`statistics`: the service's `image_statistics`),
    as numeric columns "channel <c> mean", "channel <c> std"."""
    path = directory / split / "x.npy"
    x = load_array(path, mmap=True)
    shape = [int(s) for s in x.shape[1:]]
    names = {("mean", c): f"channel {c} mean" for c in range(shape[0])}
    names |= {("std", c): f"channel {c} std" for c in range(shape[0])}
    chunk = max(1, IMAGE_CHUNK_BYTES // max(1, int(np.prod(shape)) * x.itemsize))
    rows = len(x)
    del x  # the chunks are read, not mapped: the process holds one at a time

    def batches() -> Iterator[tuple[int, Iterator[tuple[str, Any]]]]:
        for images in array_chunks(path, chunk):
            found = statistics(images)
            yield len(images), ((names[key], values) for key, values in found.items())

    columns = {name: (NUMERIC, "double") for name in sorted(names.values())}
    return Scan(columns, rows, batches, {"image": {"shape": shape}})


# Counting: what is kept of one column of one split across batches.


class NumericCounts:
    """Exact rows, missing values, extremes, mean and variance (merged batch by batch), and
    the distinct values up to a cap; non-finite values count as missing."""

    def __init__(self, distinct_cap: int) -> None:
        self.cap = distinct_cap
        self.rows = self.missing = self.count = 0
        self.mean = self.m2 = 0.0
        self.low, self.high = math.inf, -math.inf
        self.distinct: np.ndarray | None = np.array([], dtype=np.float64)  # None: capped

    def add(self, values: np.ndarray) -> None:
        present = values[np.isfinite(values)]
        self.rows += len(values)
        self.missing += len(values) - len(present)
        if not len(present):
            return
        n, mean = len(present), float(present.mean())
        m2 = float(((present - mean) ** 2).sum())
        total = self.count + n
        delta = mean - self.mean
        # Chan et al.'s merge of two batches' means and squared deviations
        self.m2 += m2 + delta * delta * self.count * n / total
        self.mean += delta * n / total
        self.count = total
        self.low, self.high = (
            min(self.low, float(present.min())),
            max(self.high, float(present.max())),
        )
        if self.distinct is not None:
            self.distinct = np.union1d(self.distinct, present)
            if len(self.distinct) > self.cap:
                self.distinct = None

    def summary(self) -> dict[str, Any]:
        present = self.count > 0
        return {
            "missing": self.missing / self.rows if self.rows else 0.0,
            "distinct": self.cap if self.distinct is None else len(self.distinct),
            "distinct_capped": self.distinct is None,
            "min": self.low if present else None,
            "max": self.high if present else None,
            "mean": self.mean if present else None,
            "std": math.sqrt(self.m2 / self.count) if present else None,
        }


class CategoricalCounts:
    """Exact rows and missing values, and each value's count for up to `cap` distinct values;
    the values met after that are counted together as "(other)"."""

    def __init__(self, distinct_cap: int) -> None:
        self.cap = distinct_cap
        self.rows = self.missing = self.other = 0
        self.counts: dict[str, int] = {}

    def add(self, values: Any) -> None:
        # pyarrow: a second to import, and only tables need it
        import pyarrow.compute as pc

        self.rows += len(values)
        self.missing += values.null_count
        found = pc.value_counts(values.drop_null())
        counts = self.counts
        for value, n in zip(
            found.field("values").to_pylist(), found.field("counts").to_pylist(), strict=True
        ):
            if value in counts:
                counts[value] += n
            elif len(counts) < self.cap:
                counts[value] = n
            else:
                self.other += n

    @property
    def present(self) -> int:
        return self.rows - self.missing

    def top(self, count: int) -> list[tuple[str, int]]:
        """The `count` most frequent values (ties by value) and their counts."""
        return sorted(self.counts.items(), key=lambda p: (-p[1], p[0]))[:count]

    def summary(self, top_values: int) -> dict[str, Any]:
        top = self.top(top_values)
        present = max(self.present, 1)
        shares = {value: n / present for value, n in top}
        rest = self.present - sum(n for _, n in top)
        if rest:
            shares[OTHER] = rest / present
        return {
            "missing": self.missing / self.rows if self.rows else 0.0,
            "distinct": len(self.counts),
            "distinct_capped": self.other > 0,
            "top": shares,
        }

    def slots(self, values: list[str]) -> np.ndarray:
        """Counts of `values`, then of every other value, then of the missing ones."""
        kept = [self.counts.get(v, 0) for v in values]
        return np.array([*kept, self.present - sum(kept), self.missing], dtype=np.float64)


@dataclass
class SplitScan:
    """What one split's pass kept: each column's counts, and its values on the sampled rows
    (float64, or a pyarrow array of text)."""

    rows: int
    counts: dict[str, NumericCounts | CategoricalCounts]
    sample: dict[str, Any]
    sample_index: np.ndarray


def scan_split(scan: Scan, settings: Any, seed: int) -> SplitScan:
    """Read a split once, a batch at a time, counting each column and taking its values on
    a seeded sample of at most `settings.sample_rows` rows."""
    # pyarrow: a second to import, and only tables need it
    import pyarrow as pa

    counts = {
        name: (NumericCounts if kind == NUMERIC else CategoricalCounts)(settings.distinct_cap)
        for name, (kind, _) in scan.columns.items()
    }
    index = sample_rows(scan.rows, settings.sample_rows, seed)
    parts: dict[str, list[Any]] = {name: [] for name in scan.columns}
    start = 0
    for size, batch in scan.batches():
        lo, hi = np.searchsorted(index, [start, start + size])
        taken = index[lo:hi] - start
        for name, values in batch:
            counts[name].add(values)
            parts[name].append(
                values[taken] if isinstance(values, np.ndarray) else values.take(taken)
            )
        start += size
    sample = {}
    for name, (kind, _) in scan.columns.items():
        if kind == NUMERIC:
            sample[name] = np.concatenate(parts[name]) if parts[name] else np.array([])
        else:
            sample[name] = pa.chunked_array(parts[name], type=pa.string())
    return SplitScan(scan.rows, counts, sample, index)


# The report: columns, label, shifts.


def significant(value: Any, digits: int = 6) -> Any:
    """`value` with every float rounded to `digits` significant digits (NaN and infinities
    as None: JSON has no such numbers), in dicts and lists too."""
    if isinstance(value, dict):
        return {k: significant(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [significant(v, digits) for v in value]
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return float(f"{value:.{digits}g}") if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _codes(texts: Any) -> np.ndarray:
    """Integer codes of a pyarrow text array's values, missing as a value of its own."""
    # pyarrow: a second to import, and only tables need it
    import pyarrow.compute as pc

    encoded = pc.dictionary_encode(texts.combine_chunks())
    return pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)


def _numeric_column(
    kind_type: str,
    scans: dict[str, SplitScan],
    name: str,
    y_sample: np.ndarray,
    task: Task,
    settings: Any,
    psi: Callable[..., float],
    epsilon: float,
) -> dict[str, Any]:
    train = scans["train"].sample[name]
    present = train[np.isfinite(train)]
    edges = (
        np.histogram_bin_edges(present, settings.bins)
        if len(present)
        else np.linspace(0.0, 1.0, settings.bins + 1)
    )
    deciles = (
        np.unique(np.quantile(present, np.linspace(0, 1, PSI_BINS + 1)[1:-1]))
        if len(present)
        else np.array([])
    )
    splits, slots = {}, {}
    for split, scan in scans.items():
        values = scan.sample[name]
        finite = values[np.isfinite(values)]
        counts = np.histogram(np.clip(finite, edges[0], edges[-1]), edges)[0]
        binned = np.bincount(
            np.searchsorted(deciles, finite, side="right"), minlength=len(deciles) + 1
        )
        slots[split] = np.append(binned, len(values) - len(finite)).astype(np.float64)
        splits[split] = {
            **scan.counts[name].summary(),
            "quantiles": quantiles(finite),
            "histogram": {
                "edges": edges.tolist(),
                "shares": (counts / max(len(finite), 1)).tolist(),
            },
        }
    association = task.numeric_association(present, y_sample[np.isfinite(train)])
    return _column(NUMERIC, kind_type, association, splits, slots, psi, epsilon)


def _categorical_column(
    kind_type: str,
    scans: dict[str, SplitScan],
    name: str,
    y_sample: np.ndarray,
    task: Task,
    settings: Any,
    psi: Callable[..., float],
    epsilon: float,
) -> dict[str, Any]:
    kept = [value for value, _ in scans["train"].counts[name].top(settings.top_values)]
    splits = {s: scan.counts[name].summary(settings.top_values) for s, scan in scans.items()}
    slots = {s: scan.counts[name].slots(kept) for s, scan in scans.items()}
    association = task.categorical_association(_codes(scans["train"].sample[name]), y_sample)
    return _column(CATEGORICAL, kind_type, association, splits, slots, psi, epsilon)


def _column(
    kind: str,
    kind_type: str,
    association: dict[str, Any],
    splits: dict[str, Any],
    slots: dict[str, np.ndarray],
    psi: Callable[..., float],
    epsilon: float,
) -> dict[str, Any]:
    reference = slots["train"] / max(slots["train"].sum(), 1.0)
    shift = {s: psi(slots[s], reference, epsilon) for s in slots if s != "train"}
    return {
        "kind": kind,
        "type": kind_type,
        "association": association,
        "splits": splits,
        "shift": shift,
    }


def build_report(
    scans: dict[str, Scan],
    meta: dict[str, Any],
    labels: dict[str, np.ndarray],
    kind: str,
    task: Task,
    settings: Any,
    seed: int,
    psi: Callable[..., float],
    epsilon: float,
) -> dict[str, Any]:
    """report.json's content from each split's `Scan` (train first), the prepared meta.json
    and the encoded labels: rounded, as written. `psi(counts, reference, epsilon)`: the
    service's PSI (mlpipeline.serving.profile.psi), passed in so that the data layer does
    not import the service's code."""
    read = {split: scan_split(scan, settings, seed) for split, scan in scans.items()}
    y_sample = labels["train"][read["train"].sample_index]
    columns = {}
    for name, (column_kind, column_type) in scans["train"].columns.items():
        build = _numeric_column if column_kind == NUMERIC else _categorical_column
        columns[name] = build(column_type, read, name, y_sample, task, settings, psi, epsilon)
    report = {
        "kind": kind,
        "rows": {split: scan.rows for split, scan in scans.items()},
        "sample_rows": settings.sample_rows,
        "label": {
            "name": meta.get("label") or "label",
            "task": task.name,
            "splits": task.label_report(labels, meta.get("classes"), settings.bins),
        },
        "columns": columns,
        "_missing": sum(c.missing for s in read.values() for c in s.counts.values()),
        **scans["train"].extra,
    }
    return significant(report)


def read_labels(directory: Path) -> dict[str, np.ndarray]:
    """Each prepared split's encoded labels (y.npy): a number per row, held whole."""
    return {split: load_array(directory / split / "y.npy") for split in SPLITS}


def scans_of(directory: Path, scan: Callable[[Path, str], Scan]) -> dict[str, Scan]:
    """Each split's `Scan` by the data source's `scan`, after meta.json is known to exist."""
    read_meta(directory)
    return {split: scan(directory, split) for split in SPLITS}


# Writing: report.json, report.md, PNGs.


def shifts(report: dict[str, Any]) -> list[tuple[float, str, str]]:
    """(psi, split, column) of every column and split, the largest first (ties by name)."""
    found = [
        (value, split, name)
        for name, column in report["columns"].items()
        for split, value in column["shift"].items()
        if value is not None
    ]
    return sorted(found, key=lambda f: (-f[0], f[2], f[1]))


def plotted(report: dict[str, Any], max_plots: int) -> list[str]:
    """The columns drawn: the most associated with the label first (ties by name)."""
    columns = report["columns"]
    order = sorted(columns, key=lambda n: (-(columns[n]["association"]["value"] or 0.0), n))
    return order[:max_plots]


def safe_names(names: list[str]) -> dict[str, str]:
    """A file name for each column (letters, digits, . _ -), unique among them."""
    found: dict[str, str] = {}
    taken: set[str] = set()
    for name in names:
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "column"
        safe, n = base, 1
        while safe.lower() in taken:
            n += 1
            safe = f"{base}_{n}"
        taken.add(safe.lower())
        found[name] = safe
    return found


def summary_line(report: dict[str, Any], out: Path) -> str:
    """The stage's one line: rows per split, columns by kind, missing values, largest shift."""
    rows = report["rows"]
    kinds: dict[str, int] = {}
    for column in report["columns"].values():
        kinds[column["kind"]] = kinds.get(column["kind"], 0) + 1
    by_kind = ", ".join(f"{kinds[k]} {k}" for k in (NUMERIC, CATEGORICAL) if k in kinds)
    largest = shifts(report)
    shift = (
        f"largest shift {largest[0][1]}/{largest[0][2]} psi {largest[0][0]:.2g}"
        if largest
        else "no shift measured"
    )
    return (
        f"data report: {sum(rows.values())} rows ("
        + ", ".join(f"{s} {n}" for s, n in rows.items())
        + f"), {len(report['columns'])} columns ({by_kind}), {report['_missing']} missing "
        f"values; {shift} -> {out}"
    )


def _cell(value: Any) -> str:
    """A Markdown table cell: pipes escaped, numbers short."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _percent(share: float | None) -> str:
    return "–" if share is None else f"{100 * share:.1f}%"


def markdown(report: dict[str, Any], pictures: dict[str, str]) -> str:
    """report.md: the overview, the label per split, a row per column, the splits compared
    (largest shift first), and the pictures (`pictures`: column -> PNG path in the folder)."""
    rows, columns, label = report["rows"], report["columns"], report["label"]
    splits = list(rows)
    lines = [
        "# Data report",
        "",
        f"{report['kind'].capitalize()}: {sum(rows.values()):,} rows, {len(columns)} columns, "
        f"label `{label['name']}` ({label['task']}). Quantiles, histograms and associations come "
        f"from a seeded sample of at most {report['sample_rows']:,} rows per split; counts, "
        "missing shares, means and extremes from every row.",
        "",
        "| split | rows |",
        "| --- | ---: |",
        *(f"| {s} | {n:,} |" for s, n in rows.items()),
    ]
    if "image" in report:
        lines += [
            "",
            f"Images of shape {' x '.join(map(str, report['image']['shape']))} (C x H x W).",
        ]
    lines += ["", "## Label", ""]
    first = label["splits"][splits[0]]
    if "classes" in first:
        lines += ["| class | " + " | ".join(splits) + " |", "| --- |" + " ---: |" * len(splits)]
        for name in first["classes"]:
            shares = [_percent(label["splits"][s]["classes"].get(name)) for s in splits]
            lines.append(f"| {_cell(name)} | " + " | ".join(shares) + " |")
    else:
        lines += ["| split | mean | std | p05 | p50 | p95 |", "| --- |" + " ---: |" * 5]
        for s in splits:
            part = label["splits"][s]
            q = part["quantiles"]
            values = [part["mean"], part["std"], q["p05"], q["p50"], q["p95"]]
            lines.append(f"| {s} | " + " | ".join(_cell(v) for v in values) + " |")
    lines += ["", "![label per split](label.png)", "", "## Columns (training split)", ""]
    lines += [
        "| column | kind | missing | distinct | summary | association with the label |",
        "| --- | --- | ---: | ---: | --- | --- |",
    ]
    for name, column in columns.items():
        train = column["splits"][splits[0]]
        distinct = f"{'>' if train['distinct_capped'] else ''}{train['distinct']:,}"
        if column["kind"] == NUMERIC:
            q = train["quantiles"]
            summary = (
                f"mean {_cell(train['mean'])}, std {_cell(train['std'])}; median {_cell(q['p50'])}"
                f" (p01 {_cell(q['p01'])}, p99 {_cell(q['p99'])})"
            )
        else:
            top = list(train["top"].items())[:3]
            summary = ", ".join(f"{_cell(v)} {_percent(s)}" for v, s in top)
        association = column["association"]
        lines.append(
            f"| {_cell(name)} | {column['kind']} | {_percent(train['missing'])} | {distinct} | "
            f"{summary} | {association['measure']} {_cell(association['value'])} |"
        )
    lines += [
        "",
        "## Splits compared",
        "",
        "The population stability index (PSI) of each split's shares per decile of the "
        "training split (numeric) or per value (categorical), missing values included, against "
        "train's: below 0.1 alike, above 0.25 a large shift. Largest first.",
        "",
        "| column | split | PSI |",
        "| --- | --- | ---: |",
        *(f"| {_cell(name)} | {split} | {_cell(value)} |" for value, split, name in shifts(report)),
    ]
    if pictures:
        lines += [
            "",
            "## Histograms",
            "",
            "Train, val and test overlaid; the columns most associated with the label first.",
            "",
        ]
        lines += [f"![{_cell(name)}]({path})" for name, path in pictures.items()]
    return "\n".join(lines) + "\n"


def _pyplot() -> Any:
    # a second to import, and only the report and evaluate stages draw
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after use("Agg"): pyplot picks its backend on import

    return plt


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    # no Software entry: the bytes follow from the data alone
    fig.savefig(path, dpi=100, metadata={"Software": None})
    _pyplot().close(fig)


def _grouped_bars(ax: Any, names: list[str], shares: dict[str, list[float]]) -> None:
    width = 0.8 / max(len(shares), 1)
    for i, (split, values) in enumerate(shares.items()):
        positions = np.arange(len(names)) + (i - (len(shares) - 1) / 2) * width
        ax.bar(positions, values, width, label=split, color=SPLIT_COLOURS.get(split))
    ax.set_xticks(np.arange(len(names)), [n[:18] for n in names], rotation=45, ha="right")
    ax.set_ylabel("share")
    # headroom above the tallest bar for the legend, which would otherwise hide bars
    tallest = max((max(v, default=0.0) for v in shares.values()), default=0.0)
    ax.set_ylim(0, 1.25 * (tallest or 1.0))
    ax.legend(loc="upper center", ncol=len(shares))


def _histograms(ax: Any, edges: list[float], shares: dict[str, list[float]]) -> None:
    for split, values in shares.items():
        ax.stairs(values, edges, label=split, color=SPLIT_COLOURS.get(split), linewidth=1.5)
    ax.set_ylabel("share")
    ax.legend()


def draw_label(report: dict[str, Any], path: Path) -> None:
    """label.png: the class shares per split as grouped bars, or the target's histograms."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    splits = report["label"]["splits"]
    first = next(iter(splits.values()))
    if "classes" in first:
        names = list(first["classes"])
        _grouped_bars(ax, names, {s: [p["classes"][n] for n in names] for s, p in splits.items()})
    else:
        edges = first["histogram"]["edges"]
        _histograms(ax, edges, {s: p["histogram"]["shares"] for s, p in splits.items()})
        ax.set_xlabel(report["label"]["name"])
    ax.set_title(f"Label '{report['label']['name']}' per split")
    _save(fig, path)


def draw_column(name: str, column: dict[str, Any], path: Path) -> None:
    """A column's histograms per split overlaid (numeric), or its training split's most
    frequent values as bars per split (categorical)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    splits = column["splits"]
    if column["kind"] == NUMERIC:
        edges = splits["train"]["histogram"]["edges"]
        _histograms(ax, edges, {s: p["histogram"]["shares"] for s, p in splits.items()})
        ax.set_xlabel(name)
    else:
        names = list(splits["train"]["top"])
        _grouped_bars(
            ax, names, {s: [p["top"].get(n, 0.0) for n in names] for s, p in splits.items()}
        )
    association = column["association"]
    ax.set_title(f"{name[:40]}: {association['measure']} {association['value']:.3g}", fontsize=10)
    _save(fig, path)


def write_report(report: dict[str, Any], out: Path, max_plots: int) -> None:
    """Write report.json, report.md, label.png and columns/<name>.png (at most `max_plots`
    columns, the most associated first) to the folder `out`, replaced atomically."""
    written = {k: v for k, v in report.items() if not k.startswith("_")}
    drawn = plotted(report, max_plots)
    files = safe_names(drawn)
    with atomic_path(out, is_dir=True) as tmp:
        (tmp / REPORT_JSON).write_text(json_text(written), encoding="utf-8")
        draw_label(report, tmp / "label.png")
        if drawn:
            (tmp / "columns").mkdir()
        for name in drawn:
            draw_column(name, report["columns"][name], tmp / "columns" / f"{files[name]}.png")
        pictures = {name: f"columns/{files[name]}.png" for name in drawn}
        (tmp / "report.md").write_text(markdown(report, pictures), encoding="utf-8")
