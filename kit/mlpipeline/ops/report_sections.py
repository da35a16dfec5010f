"""The pull-request report's data and attributions sections: the base's data report
(`paths.data_report`/report.json) and attributions (`paths.attributions`) against this change's,
as Markdown tables (largest changes first, at most `MAX_ROWS` rows each) and PNGs.

Either side may be missing: a base without the file (a change that adds the stage) gives this
change's figures alone, a working tree without it a line saying to run the pipeline. The JSON
formats are those the data_report and explain stages write (docs/ci-cd.md shows how to read
the sections).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlpipeline.config.schema import Drift
from mlpipeline.errors import PipelineError
from mlpipeline.serving.profile import psi

MAX_ROWS = 12  # rows per table; the rest are counted and left to the JSON file
MAX_SHIFT_PLOTS = 4  # columns whose histograms are drawn, the largest shifts first
MAX_BARS = 15  # attributions drawn as paired bars
SPLITS = ("train", "val", "test")
SHIFT_SPLIT = "train"  # per-column changes and shifts compare what the model learns from
# the smallest per-column change shown, by statistic: a share's difference (missing, a
# category's), the mean's and median's shift in the base's standard deviations, the distinct
# count's relative change; changes are ranked in multiples of these
MIN_CHANGE = {"share": 0.01, "location": 0.1, "distinct": 0.05}
DATA_SHIFT_PNG = "data_shift.png"
DATA_LABEL_PNG = "data_label.png"
ATTRIBUTIONS_PNG = "attributions.png"

Json = Mapping[str, Any]


@dataclass(frozen=True)
class Side:
    """One side's file: its JSON (None when absent) and how the report names that side."""

    data: Json | None
    label: str


def _name(text: object) -> str:
    """`text` as Markdown code that cannot break a table row."""
    return "`" + str(text).replace("`", "'").replace("|", "\\|").replace("\n", " ") + "`"


def _number(value: float | None) -> str:
    return "—" if value is None or not np.isfinite(value) else f"{value:.4g}"


def _count(value: int | None) -> str:
    return "—" if value is None else f"{int(value):,}"


def _share(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def _signed(value: float | None, share: bool = False) -> str:
    if value is None or not np.isfinite(value):
        return "—"
    return f"{100 * value:+.1f} pp" if share else f"{value:+.4g}"


def _table(
    header: Iterable[str], rows: list[list[str]], more_in: str, limit: int = MAX_ROWS
) -> list[str]:
    """A Markdown table of the first `limit` rows, and a line counting the others."""
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows[:limit]]
    if len(rows) > limit:
        lines += ["", f"… and {len(rows) - limit} more in `{more_in}`."]
    return lines


def _figure(path: Path, draw: Callable[[Any], None], panels: int, size=(4.2, 3.2)) -> None:
    """One PNG of `panels` side by side, drawn by `draw(axes)`, as kit/mlpipeline/plots.py
    draws its own: Agg, tight layout, no Software entry so the bytes follow from the data."""
    # a second to import: only a report with a data report or attributions draws
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after use("Agg"): pyplot picks its backend on import

    fig, axes = plt.subplots(1, panels, figsize=(size[0] * panels, size[1]), squeeze=False)
    draw(list(axes.flat))
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)


def _missing_head(title: str, where: str, stage: str) -> str:
    return (
        f"## {title}\n\nNo `{where}` in the working tree: run the pipeline (`dvc repro`; "
        f"the `{stage}` stage writes it) before the report."
    )


def _base_note(base: Side, where: str) -> list[str]:
    if base.data is not None:
        return []
    return [
        f"The base (`{base.label}`) has no `{where}`: this change adds it. This change's "
        "figures alone:",
        "",
    ]


def _sides(base: object) -> str:
    """What a picture shows: both sides, or this change's alone."""
    return "this change" if base is None else "base and this change"


def _bad_format(where: str, err: BaseException) -> PipelineError:
    return PipelineError(
        f"{where} is not in the format the report reads ({type(err).__name__}: {err}): "
        "re-run the pipeline (dvc repro) with this kit"
    )


# --- distributions ---------------------------------------------------------------------------


def _cdf(edges: np.ndarray, shares: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """The piecewise-linear CDF of a histogram (uniform within each bin)."""
    cumulative = np.concatenate([[0.0], np.cumsum(shares)])
    cumulative /= cumulative[-1] or 1.0
    # equal edges (a constant column): the CDF jumps there, to the last cumulative share
    xs, last = np.unique(edges[::-1], return_index=True)
    at = cumulative[::-1][last]
    if len(xs) == 1:
        return lambda x: (np.asarray(x) >= xs[0]).astype(np.float64)
    return lambda x: np.interp(x, xs, at, left=0.0, right=1.0)


def rebin(edges: Iterable[float], shares: Iterable[float], onto: Iterable[float]) -> np.ndarray:
    """The shares of histogram (`edges`, `shares`) re-binned onto the edges `onto` through its
    piecewise-linear CDF; mass beyond the outer edges of `onto` falls in its outer bins."""
    onto = np.asarray(list(onto), dtype=np.float64)
    cdf = _cdf(np.asarray(list(edges), dtype=np.float64), np.asarray(list(shares), np.float64))
    at = cdf(onto)
    at[0], at[-1] = 0.0, 1.0
    return np.diff(at)


def _categories(base: Json, head: Json) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The union of both sides' top values (their "(other)" included) and each side's shares."""
    values = sorted(set(base["top"]) | set(head["top"]))
    return (
        values,
        np.array([base["top"].get(v, 0.0) for v in values], dtype=np.float64),
        np.array([head["top"].get(v, 0.0) for v in values], dtype=np.float64),
    )


def column_shift(base: Json, head: Json, kind: str, epsilon: float) -> float:
    """PSI of head's split statistics against the base's: numeric histograms on the base's
    edges (head's re-binned onto them), categorical top shares on the union of their values."""
    if kind == "numeric":
        reference = np.asarray(base["histogram"]["shares"], dtype=np.float64)
        edges = base["histogram"]["edges"]
        moved = rebin(head["histogram"]["edges"], head["histogram"]["shares"], edges)
        return psi(moved, reference / (reference.sum() or 1.0), epsilon)
    _, before, after = _categories(base, head)
    return psi(after, before / (before.sum() or 1.0), epsilon)


# --- the data section ------------------------------------------------------------------------


def _split_stats(column: Json) -> Json | None:
    return (column.get("splits") or {}).get(SHIFT_SPLIT)


def _rows_table(base: Json | None, head: Json) -> list[str]:
    rows = []
    for split in SPLITS:
        after = head["rows"].get(split)
        before = (base or {}).get("rows", {}).get(split)
        if before is None:
            change = "—"
        else:
            delta = int(after or 0) - int(before)
            change = f"{delta:+d}" + (f" ({100 * delta / before:+.1f}%)" if before else "")
        rows.append([split, _count(before), _count(after), change])
    return _table(["split", "base rows", "rows", "change"], rows, "")


def _names_line(what: str, names: list[str], where: str) -> list[str]:
    if not names:
        return []
    shown = ", ".join(names[:MAX_ROWS])
    more = f" and {len(names) - MAX_ROWS} more (`{where}`)" if len(names) > MAX_ROWS else ""
    return [f"- {what}: {shown}{more}"]


def _column_changes(name: str, base: Json, head: Json, kind: str) -> list[tuple[float, list[str]]]:
    """(size, table row) for each statistic of a column that moved by at least its
    MIN_CHANGE, the size in multiples of it."""
    found = []

    def add(size: float, what: str, before: str, after: str, change: str) -> None:
        size /= MIN_CHANGE[measure]
        if np.isfinite(size) and size >= 1.0:
            found.append((size, [_name(name), what, before, after, change]))

    measure = "share"
    missing = head["missing"] - base["missing"]
    add(
        abs(missing),
        "missing",
        _share(base["missing"]),
        _share(head["missing"]),
        _signed(missing, share=True),
    )
    measure = "distinct"
    distinct = int(head["distinct"]) - int(base["distinct"])
    capped = " (capped)" if head.get("distinct_capped") or base.get("distinct_capped") else ""
    add(
        abs(distinct) / max(base["distinct"], 1),
        f"distinct{capped}",
        _count(base["distinct"]),
        _count(head["distinct"]),
        f"{distinct:+d}",
    )
    if kind == "numeric":
        measure, scale = "location", base.get("std") or 1.0
        for what, before, after in (
            ("mean", base["mean"], head["mean"]),
            ("median", base["quantiles"]["p50"], head["quantiles"]["p50"]),
        ):
            add(
                abs(after - before) / scale,
                what,
                _number(before),
                _number(after),
                _signed(after - before),
            )
    else:
        measure = "share"
        values, before, after = _categories(base, head)
        for i in np.argsort(-np.abs(after - before), kind="stable")[:3]:
            add(
                abs(after[i] - before[i]),
                f"share of {_name(values[i])}",
                _share(before[i]),
                _share(after[i]),
                _signed(after[i] - before[i], share=True),
            )
    return found


def _histogram_panel(ax: Any, name: str, kind: str, sides: list[tuple[str, Json]]) -> None:
    """Overlaid distributions of one column, one per side: density steps or shares by value."""
    if kind == "numeric":
        for label, stats in sides:
            edges = np.asarray(stats["histogram"]["edges"], dtype=np.float64)
            widths = np.maximum(np.diff(edges), 1e-12)
            density = np.asarray(stats["histogram"]["shares"], dtype=np.float64) / widths
            # the base filled, this change drawn over it as a line
            base = label == "base"
            ax.stairs(
                density, edges, label=label, fill=base, alpha=0.5 if base else 1.0, linewidth=2
            )
        ax.set(ylabel="density")
    else:
        values = sorted(set().union(*(stats["top"] for _, stats in sides)))
        width = 0.8 / len(sides)
        for i, (label, stats) in enumerate(sides):
            shares = [stats["top"].get(v, 0.0) for v in values]
            ax.bar(np.arange(len(values)) + i * width, shares, width, label=label)
        ax.set_xticks(np.arange(len(values)) + 0.4 - width / 2, values, rotation=45, ha="right")
        ax.set(ylabel="share")
    ax.set_title(name[:40], fontsize=9)
    ax.legend(fontsize=7)


def _label_table(base: Json | None, head: Json, where: str) -> list[str]:
    """Class shares, or the target's mean, spread and quantiles, per split: base -> head."""
    splits = head["splits"]
    before = (base or {}).get("splits") or {}
    classification = head["task"] == "classification"

    def values(stats: Json | None) -> dict[str, float]:
        if not stats:
            return {}
        if classification:
            return dict(stats["classes"])
        return {"mean": stats["mean"], "std": stats["std"], **stats.get("quantiles", {})}

    keys: list[str] = []
    for stats in [*splits.values(), *before.values()]:
        keys += [k for k in values(stats) if k not in keys]
    show = _share if classification else _number
    rows = []
    for key in keys:
        cells, size = [_name(key) if classification else key], 0.0
        for split in SPLITS:
            old, new = values(before.get(split)).get(key), values(splits.get(split)).get(key)
            if base is None or old is None or new is None:
                cells.append(show(new))
            else:
                cells.append(f"{show(old)} → {show(new)}")
                size = max(size, abs(new - old))
        rows.append((size, cells))
    if classification:  # the classes whose share moved most first
        rows.sort(key=lambda r: -r[0])
    first = "class" if classification else head["name"]
    return _table([first, *SPLITS], [cells for _, cells in rows], where)


def _label_figure(path: Path, base: Json | None, head: Json) -> None:
    """Class shares (or the target's histogram) of the training split, base and head."""
    sides = [("base", base["splits"].get(SHIFT_SPLIT))] if base else []
    sides = [s for s in [*sides, ("this change", head["splits"].get(SHIFT_SPLIT))] if s[1]]
    classification = head["task"] == "classification"
    if not sides or not (classification or all("histogram" in s for _, s in sides)):
        return

    def draw(axes: list[Any]) -> None:
        if classification:
            as_top = [(label, {"top": stats["classes"]}) for label, stats in sides]
            _histogram_panel(axes[0], "classes", "categorical", as_top)
        else:
            _histogram_panel(axes[0], head["name"], "numeric", sides)
        axes[0].set_title(f"label {head['name']!r}, {SHIFT_SPLIT} split", fontsize=9)

    _figure(path, draw, 1, size=(5.5, 3.6))


def data_section(base: Side, head: Side, where: str, out_dir: Path, drift: Drift) -> str:
    """The "Data" section: rows per split, added / removed / re-kinded columns, per-column
    changes, PSI shifts of the training split and label balance, base -> head; writes
    DATA_SHIFT_PNG and DATA_LABEL_PNG into `out_dir` and links them."""
    if head.data is None:
        return _missing_head("Data report", where, "data_report")
    try:
        return _data_section(base.data, head.data, base, where, out_dir, drift)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise _bad_format(where, err) from None


def _data_section(
    old: Json | None, new: Json, base: Side, where: str, out_dir: Path, drift: Drift
) -> str:
    lines = [f"## Data report (`{where}`, base `{base.label}`)", "", *_base_note(base, where)]
    lines += ["Rows per split:", "", *_rows_table(old, new), ""]
    old_columns = (old or {}).get("columns") or {}
    new_columns = new["columns"]
    if old is not None:
        kinds = [
            f"{_name(n)} ({old_columns[n]['kind']} → {new_columns[n]['kind']})"
            for n in new_columns
            if n in old_columns and old_columns[n]["kind"] != new_columns[n]["kind"]
        ]
        listed = [
            *_names_line("Added", [_name(n) for n in new_columns if n not in old_columns], where),
            *_names_line("Removed", [_name(n) for n in old_columns if n not in new_columns], where),
            *_names_line("Kind changed", kinds, where),
        ]
        lines += ["Columns:", "", *(listed or ["- the same columns, of the same kinds"]), ""]

    # shared columns of one kind, with the training split on both sides
    shared = [
        n
        for n in new_columns
        if n in old_columns
        and old_columns[n]["kind"] == new_columns[n]["kind"]
        and _split_stats(old_columns[n]) is not None
        and _split_stats(new_columns[n]) is not None
    ]
    shifts = {
        n: column_shift(
            _split_stats(old_columns[n]),
            _split_stats(new_columns[n]),
            new_columns[n]["kind"],
            drift.epsilon,
        )
        for n in shared
    }
    ranked = sorted(shared, key=lambda n: -shifts[n])
    if old is not None:
        changes = [
            change
            for n in shared
            for change in _column_changes(
                n,
                _split_stats(old_columns[n]),
                _split_stats(new_columns[n]),
                new_columns[n]["kind"],
            )
        ]
        changes.sort(key=lambda c: -c[0])
        lines += [f"Changed statistics ({SHIFT_SPLIT} split), largest first:", ""]
        lines += (
            _table(
                ["column", "statistic", "base", "this change", "change"],
                [row for _, row in changes],
                where,
            )
            if changes
            else ["No column's missing share, mean, median, distinct count or top values moved."]
        )

        def status(value: float) -> str:
            if value > drift.critical:
                return "⚠️ moved"
            return "look" if value > drift.warning else "stable"

        shift_rows = [
            [_name(n), new_columns[n]["kind"], f"{shifts[n]:.4f}", status(shifts[n])]
            for n in ranked
        ]
        lines += [
            "",
            f"Distribution shift, base → this change ({SHIFT_SPLIT} split; PSI, "
            f"look above {drift.warning:g}, moved above {drift.critical:g}):",
            "",
            *_table(["column", "kind", "PSI", "status"], shift_rows, where),
        ]
    else:  # this change's own columns, the most associated with the label first

        def association(n: str) -> float:
            return float((new_columns[n].get("association") or {}).get("value") or 0.0)

        ranked = sorted(new_columns, key=lambda n: -association(n))
        rows = [
            [
                _name(n),
                new_columns[n]["kind"],
                _share((_split_stats(new_columns[n]) or {}).get("missing")),
                _number(association(n)),
            ]
            for n in ranked
        ]
        lines += ["Columns, the most associated with the label first:", ""]
        lines += _table(["column", "kind", "missing", "association"], rows, where)

    shape = [(side or {}).get("image", {}).get("shape") for side in (old, new)]
    if shape[1] is not None and old is not None and shape[0] != shape[1]:
        lines += ["", f"Image shape: {shape[0]} → {shape[1]}"]
    label = new.get("label")
    if label:
        before = (old or {}).get("label")
        # a label of another task has no shares or quantiles to compare with
        before = before if before and before.get("task") == label["task"] else None
        lines += ["", f"Label balance (`{label['name']}`), per split:", ""]
        lines += _label_table(before, label, where)
        _label_figure(out_dir / DATA_LABEL_PNG, before, label)

    drawn = [n for n in ranked if _split_stats(new_columns[n])][:MAX_SHIFT_PLOTS]
    if drawn:

        def draw(axes: list[Any]) -> None:
            for ax, n in zip(axes, drawn, strict=True):
                sides = [("base", _split_stats(old_columns[n]))] if n in shifts else []
                sides.append(("this change", _split_stats(new_columns[n])))
                _histogram_panel(ax, n, new_columns[n]["kind"], sides)

        _figure(out_dir / DATA_SHIFT_PNG, draw, len(drawn))
        what = "the largest shifts" if old is not None else "the most associated columns"
        lines += ["", f"![Data: {what}, {_sides(old)}]({DATA_SHIFT_PNG})"]
    if (out_dir / DATA_LABEL_PNG).is_file():
        lines += ["", f"![Data: label balance, {_sides(old)}]({DATA_LABEL_PNG})"]
    return "\n".join(lines)


# --- the attributions section ----------------------------------------------------------------


def _ranks(values: Mapping[str, float]) -> dict[str, int]:
    order = sorted(values, key=lambda n: (-values[n], n))
    return {n: i + 1 for i, n in enumerate(order)}


def attributions_section(base: Side, head: Side, where: str, out_dir: Path) -> str:
    """The "Attributions" section: mean |attribution| per column or region, base -> head,
    with its change and rank, the largest changes first; writes ATTRIBUTIONS_PNG (paired bars
    of the most important columns) into `out_dir` and links it."""
    if head.data is None:
        return _missing_head("Attributions", where, "explain")
    try:
        new = {str(k): float(v) for k, v in head.data["attribution"].items()}
        old = (
            None
            if base.data is None
            else {str(k): float(v) for k, v in base.data["attribution"].items()}
        )
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise _bad_format(where, err) from None
    lines = [
        f"## Attributions (`{where}`, base `{base.label}`)",
        "",
        *_base_note(base, where),
        "Mean |attribution| per column or region (how much the model's output moves when it "
        "is replaced by its baseline):",
        "",
    ]
    new_rank, old_rank = _ranks(new), _ranks(old or {})
    names = sorted(
        new.keys() | (old or {}).keys(),
        key=lambda n: (
            (-abs(new.get(n, 0.0) - (old or {}).get(n, 0.0)), n)
            if old is not None
            else (new_rank[n], n)
        ),
    )
    rows = []
    for n in names:
        before, after = (old or {}).get(n), new.get(n)
        change = None if before is None or after is None else after - before
        rank = f"{old_rank.get(n, '—')} → {new_rank.get(n, '—')}"
        rows.append([_name(n), _number(before), _number(after), _signed(change), rank])
    lines += _table(["column", "base", "this change", "change", "rank"], rows, where)

    top = sorted(
        new.keys() | (old or {}).keys(),
        key=lambda n: (-max(new.get(n, 0.0), (old or {}).get(n, 0.0)), n),
    )[:MAX_BARS]

    def draw(axes: list[Any]) -> None:
        ax, y = axes[0], np.arange(len(top))
        height = 0.4 if old is not None else 0.8
        if old is not None:
            ax.barh(y - height / 2, [old.get(n, 0.0) for n in top], height, label="base")
        ax.barh(
            y + (height / 2 if old is not None else 0),
            [new.get(n, 0.0) for n in top],
            height,
            label="this change",
        )
        ax.set_yticks(y, [n[:30] for n in top], fontsize=8)
        ax.invert_yaxis()  # the most important on top, as the explain stage draws it
        ax.set(xlabel="mean |attribution|", title=f"Attributions, {_sides(old)}")
        ax.legend(fontsize=8)

    _figure(out_dir / ATTRIBUTIONS_PNG, draw, 1, size=(6.0, 0.3 * len(top) + 1.5))
    lines += ["", f"![Attributions: {_sides(old)}]({ATTRIBUTIONS_PNG})"]
    return "\n".join(lines)
