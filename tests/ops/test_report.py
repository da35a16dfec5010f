"""`make report BASE=<ref>`: the pull-request report, in temporary copies of this repository.

The slow test runs the real pipeline (two epochs) on two commits that differ in the optimizer's
learning rate, as the retrain workflow does on a pull request, and reads the report it writes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import make_command, run, set_in_conf

from mlpipeline.config.schema import Drift
from mlpipeline.config.tasks import Classification
from mlpipeline.errors import PipelineError
from mlpipeline.ops.report import read_side
from mlpipeline.ops.report_sections import (
    MAX_ROWS,
    attributions_section,
    column_shift,
    data_section,
    rebin,
)

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
PNG = b"\x89PNG\r\n\x1a\n"
PLOTS = {f"{p.name}.png" for p in Classification.plots}  # the digits pipeline's task


def make(repo: Path, *args: str, check: bool = True):
    """`make` in `repo` with the running venv, whose install stamp makes `install` a no-op."""
    return run(make_command(*args), repo, check=check)


def commit(repo: Path, message: str) -> None:
    run(["git", "add", "-A"], repo)
    run([*GIT, "commit", "-qm", message], repo)


def rows_by_first_cell(text: str) -> dict[str, list[str]]:
    """Markdown table rows keyed by their first cell."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if line.startswith("|") and not set(line.strip()) <= {"|", "-"}:
            rows[cells[0]] = cells
    return rows


def section(report: str, title: str) -> str:
    """The text under the `## title...` heading, up to the next heading."""
    start = report.index(f"## {title}")
    end = report.find("\n## ", start + 1)
    return report[start : end if end != -1 else None]


def table_rows(text: str) -> dict[str, list[str]]:
    """Markdown table rows keyed by their second cell (the param or metric name)."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) > 2 and not set(cells[1]) <= {"-"}:
            rows[cells[1]] = cells
    return rows


@pytest.mark.slow
def test_report_shows_the_changed_parameter_metrics_hashes_and_plots(tiny_repo: Path) -> None:
    repo_copy = tiny_repo  # reproduced with two epochs and committed
    before = json.loads((repo_copy / "reports/metrics.json").read_text())
    set_in_conf(repo_copy, "optimizer/adamw.yaml", "lr", 0.01)
    make(repo_copy, "pipeline")
    commit(repo_copy, "learning rate 0.01")
    after = json.loads((repo_copy / "reports/metrics.json").read_text())

    make(repo_copy, "report", "BASE=HEAD~1")
    out = repo_copy / "reports/pr"
    report = (out / "report.md").read_text()

    params = table_rows(section(report, "Parameters"))
    assert params["optimizer.lr"][2:] == ["0.003", "0.01"]
    assert "trainer.max_epochs" not in params  # the same in both commits

    metrics = table_rows(section(report, "Metrics"))
    assert metrics.keys() - {"Metric"} == {k for k in after if before[k] != after[k]}
    assert metrics.keys() - {"Metric"}, "a tenfold learning rate left every metric unchanged"
    for name in metrics.keys() - {"Metric"}:
        assert float(metrics[name][2]) == pytest.approx(before[name], rel=1e-4)
        assert float(metrics[name][3]) == pytest.approx(after[name], rel=1e-4)

    images = set(section(report, "Plots").split("](")[1:])
    assert {i.split(")")[0] for i in images} == PLOTS
    for name in PLOTS:
        assert (out / name).read_bytes().startswith(PNG), name

    card = json.loads((repo_copy / "models/model_card.json").read_text())
    hashes = section(report, "Data and model hashes")
    assert f"onnx: `{card['hashes']['onnx']}`" in hashes
    assert f"`{card['hashes']['onnx']}` (changed)" in hashes
    assert f"data: `{card['hashes']['data']}`" in hashes
    assert "matches what was reproduced" in report
    # the report ignores itself: the working tree stays clean
    assert run(["git", "status", "--porcelain"], repo_copy).stdout == ""

    # a pull request whose committed dvc.lock is stale: CI reproduced something else
    reproduced = (repo_copy / "dvc.lock").read_text()
    stale = run(["git", "show", "HEAD~1:dvc.lock"], repo_copy).stdout
    (repo_copy / "dvc.lock").write_text(stale)
    commit(repo_copy, "stale dvc.lock")
    (repo_copy / "dvc.lock").write_text(reproduced)
    make(repo_copy, "report", "BASE=HEAD~2")
    report = (out / "report.md").read_text()
    assert "differs from what was reproduced" in report
    assert "`train`" in report and "`ingest`" not in report.split("## Parameters")[0]
    assert table_rows(section(report, "Parameters"))["optimizer.lr"][2:] == ["0.003", "0.01"]

    # a bad base: one line, and the last report stays
    failed = make(repo_copy, "report", "BASE=no-such-branch", check=False)
    assert failed.returncode != 0
    assert "error: base ref 'no-such-branch' is not a commit" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert (out / "report.md").read_text() == report


def test_report_needs_the_pipeline_outputs_and_a_known_base(repo_copy: Path) -> None:
    cmd = [sys.executable, "-m", "mlpipeline.ops.report", "--base", "HEAD", "--out", "reports/pr"]
    proc = run(cmd, repo_copy, check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ") and len(proc.stderr.splitlines()) == 1
    assert "model_card.json not found: run the pipeline (dvc repro) first" in proc.stderr
    assert not (repo_copy / "reports/pr").exists()

    # BASE reaches the command as data, never as shell code
    proc = make(repo_copy, "report", "BASE=$(touch injected)", check=False)
    assert proc.returncode != 0 and "is not a commit" in proc.stderr
    assert not (repo_copy / "injected").exists()


# --- the data report's and the attributions' sections ----------------------------------------

DATA_JSON = "reports/data/report.json"
ATTRIBUTIONS_JSON = "reports/attributions.json"


def numeric(values: np.ndarray, bins: int = 10) -> dict:
    """A numeric column's split entry in the data report's format, from its values (NaN:
    missing), its histogram edges its own, as each report computes them."""
    present = values[~np.isnan(values)]
    quantiles = np.quantile(present, [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99])
    counts, edges = np.histogram(present, bins=bins)
    return {
        "missing": float(np.isnan(values).mean()), "distinct": int(np.unique(present).size),
        "distinct_capped": False, "min": float(present.min()), "max": float(present.max()),
        "mean": float(present.mean()), "std": float(present.std()),
        "quantiles": dict(zip(["p01", "p05", "p25", "p50", "p75", "p95", "p99"],
                              quantiles.tolist(), strict=True)),
        "histogram": {"edges": edges.tolist(), "shares": (counts / counts.sum()).tolist()},
    }  # fmt: skip


def categorical(values: list[str | None]) -> dict:
    present = [v for v in values if v is not None]
    top = {v: present.count(v) / len(present) for v in sorted(set(present))}
    return {"missing": 1 - len(present) / len(values), "distinct": len(top),
            "distinct_capped": False, "top": top}  # fmt: skip


def data_report(columns: dict[str, dict], labels: list[str]) -> dict:
    """A data report of one training split (val and test: the same figures, a tenth of the
    rows): `columns` name -> values (numbers, or strings for a categorical column)."""
    entries = {}
    for name, values in columns.items():
        is_numeric = isinstance(values, np.ndarray)
        split = numeric(values) if is_numeric else categorical(values)
        entries[name] = {
            "kind": "numeric" if is_numeric else "categorical",
            "type": "double" if is_numeric else "string",
            "association": {"measure": "eta", "value": 0.5},
            "splits": {"train": split, "val": split, "test": split},
            "shift": {"val": 0.0, "test": 0.0},
        }
    classes = {c: labels.count(c) / len(labels) for c in sorted(set(labels))}
    rows = len(labels)
    return {
        "kind": "table",
        "rows": {"train": rows, "val": rows // 10, "test": rows // 10},
        "sample_rows": 100000,
        "label": {"name": "species", "task": "classification",
                  "splits": {s: {"classes": classes} for s in ("train", "val", "test")}},
        "columns": entries,
    }  # fmt: skip


def base_and_head_reports() -> tuple[dict, dict]:
    """The base's data report, and this change's: a fifth of the rows dropped, `income`
    shifted by two of its standard deviations, `age` as it was, `old` removed, `new` added,
    `code` now categorical, a few more of `island` missing, the label's balance moved."""
    rng = np.random.default_rng(0)
    age, income = rng.normal(40, 10, 1000), rng.normal(50, 8, 1000)
    island = list(rng.choice(["Biscoe", "Dream", "Torgersen"], 1000, p=[0.5, 0.3, 0.2]))
    labels = list(rng.choice(["a", "b"], 1000, p=[0.5, 0.5]))
    code = rng.integers(0, 3, 1000).astype(float)
    base = data_report(
        {"age": age, "income": income, "island": island, "old": age * 2, "code": code}, labels
    )
    keep = slice(0, 800)
    island_head = [None if i % 10 == 0 else v for i, v in enumerate(island[keep])]
    head = data_report(
        {"age": age[keep], "income": income[keep] + 16, "island": island_head,
         "new": income[keep], "code": [str(int(c)) for c in code[keep]]},
        ["a"] * 600 + ["b"] * 200,
    )  # fmt: skip
    return base, head


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def report_on(repo: Path, base: dict | None, head: dict | None, attributions=(None, None)) -> str:
    """Commit `base` (and the base attributions) as the base, write `head` into the working
    tree, run the report against HEAD; its report.md."""
    for path, data in ((DATA_JSON, base), (ATTRIBUTIONS_JSON, attributions[0])):
        if data is not None:
            write_json(repo / path, data)
    commit(repo, "base")
    for path, data in ((DATA_JSON, head), (ATTRIBUTIONS_JSON, attributions[1])):
        (repo / path).unlink(missing_ok=True)
        if data is not None:
            write_json(repo / path, data)
    cmd = [sys.executable, "-m", "mlpipeline.ops.report", "--base", "HEAD", "--out", "reports/pr"]
    run(cmd, repo)
    return (repo / "reports/pr/report.md").read_text()


@pytest.fixture
def reported_repo(tiny_repo: Path) -> Path:
    """A reproduced and committed repository (its model card, figures and dvc.lock are what
    the report reads besides the new sections' files; a generated project commits none)."""
    return tiny_repo


def test_data_and_attribution_sections_show_the_changes_largest_first(
    reported_repo: Path, tmp_path: Path
) -> None:
    base, head = base_and_head_reports()
    attributions = (
        {"attribution": {"age": 0.30, "income": 0.20, "island": 0.05, "old": 0.08}},
        {"attribution": {"age": 0.27, "income": 0.02, "island": 0.06, "new": 0.40}},
    )
    report = report_on(reported_repo, base, head, attributions)
    data = section(report, "Data report")

    rows = rows_by_first_cell(data.split("Columns:")[0])
    assert rows["train"] == ["train", "1,000", "800", "-200 (-20.0%)"]
    assert rows["val"] == ["val", "100", "80", "-20 (-20.0%)"]
    assert "- Added: `new`" in data and "- Removed: `old`" in data
    assert "- Kind changed: `code` (numeric → categorical)" in data

    changed = data.split("Changed statistics")[1].split("Distribution shift")[0]
    changed_rows = [line for line in changed.splitlines() if line.startswith("| `")]
    # income moved two standard deviations: its mean and median lead
    assert {row.split(" | ")[1] for row in changed_rows[:2]} == {"mean", "median"}
    assert all(row.startswith("| `income` |") for row in changed_rows[:2])
    assert any(line.startswith("| `island` | missing |") for line in changed_rows)
    # age lost rows at random: fewer distinct values, the same mean and median
    assert [row.split(" | ")[1] for row in changed_rows if row.startswith("| `age`")] == [
        "distinct"
    ]

    shift = rows_by_first_cell(data.split("Distribution shift")[1].split("Label balance")[0])
    psi = {name: float(cells[2]) for name, cells in shift.items() if name != "column"}
    assert next(iter(psi)) == "`income`" and psi["`income`"] > 1.0
    assert shift["`income`"][3] == "⚠️ moved"
    # the same values on other edges (re-binned through their CDF): almost no shift
    assert psi["`age`"] < 0.05 and shift["`age`"][3] == "stable"
    assert "`code`" not in psi and "`new`" not in psi  # nothing to compare a new kind with

    balance = rows_by_first_cell(data.split("Label balance")[1])
    assert [cell.split(" → ")[1] for cell in balance["`a`"][1:]] == ["75.0%"] * 3
    assert list(balance)[1:] == ["`a`", "`b`"]

    importance = section(report, "Attributions")
    lines = [line for line in importance.splitlines() if line.startswith("| `")]
    # sorted by the size of the change: a column gone or new counts from zero
    assert [line.split(" | ")[0] for line in lines] == [
        "| `new`",
        "| `income`",
        "| `old`",
        "| `age`",
        "| `island`",
    ]
    assert lines[0] == "| `new` | — | 0.4 | — | — → 1 |"
    assert lines[1] == "| `income` | 0.2 | 0.02 | -0.18 | 2 → 4 |"
    # their values are in this section, not repeated among the metrics
    assert "attribution." not in section(report, "Metrics")

    out = reported_repo / "reports/pr"
    for name in ("data_shift.png", "data_label.png", "attributions.png"):
        assert f"]({name})" in report
        assert (out / name).read_bytes().startswith(PNG), name

    # published, the pictures become a list and the whole comment stays within GitHub's limit
    summary = tmp_path / "summary.md"
    script = Path(__file__).parents[2] / "scripts/publish_report.py"
    run([sys.executable, str(script), "summary", str(out)], tmp_path,
        GITHUB_STEP_SUMMARY=str(summary))  # fmt: skip
    published = summary.read_text()
    assert "- Attributions: base and this change: `attributions.png`" in published
    assert "![" not in published and "Cut here" not in published


DRIFT = Drift(epsilon=1e-4, warning=0.1, critical=0.25, window="1h", min_rows=200, hold="5m")


def test_histograms_on_other_edges_are_compared_through_their_cdf() -> None:
    # uniform on [0, 10] in ten bins, onto two bins, and onto edges beyond its range
    assert rebin(range(11), [0.1] * 10, [0, 5, 10]).tolist() == pytest.approx([0.5, 0.5])
    assert rebin(range(11), [0.1] * 10, [2, 3, 8]).tolist() == pytest.approx([0.3, 0.7])
    assert rebin([5, 5], [1.0], [0, 4, 6, 9]).tolist() == pytest.approx([0, 1, 0])
    rng = np.random.default_rng(1)
    same, moved = rng.normal(0, 1, 5000), rng.normal(0.5, 1, 5000)
    stats = {
        name: numeric(values, bins)
        for name, values, bins in [
            ("base", rng.normal(0, 1, 5000), 10),
            ("same", same, 7),
            ("moved", moved, 7),
        ]
    }
    # another sample of the same distribution, other edges: below the warning threshold
    assert column_shift(stats["base"], stats["same"], "numeric", 1e-4) < DRIFT.warning
    assert column_shift(stats["base"], stats["moved"], "numeric", 1e-4) > DRIFT.critical


def git_repo(path: Path) -> Path:
    path.mkdir()
    run(["git", "init", "-q"], path)
    (path / "README").write_text("a change that adds the stages\n")
    commit(path, "base")
    return path


def sections(repo: Path, out: Path) -> tuple[str, str]:
    """Both sections of the working tree of `repo` against its HEAD."""
    out.mkdir(exist_ok=True)
    sides = [
        (read_side(repo, run(["git", "rev-parse", "HEAD"], repo).stdout.strip(), Path(p)),
         read_side(repo, None, Path(p)))
        for p in (DATA_JSON, ATTRIBUTIONS_JSON)
    ]  # fmt: skip
    return (
        data_section(*sides[0], DATA_JSON, out, DRIFT),
        attributions_section(*sides[1], ATTRIBUTIONS_JSON, out),
    )


def test_a_base_without_the_files_shows_this_changes_figures_alone(tmp_path: Path) -> None:
    repo = git_repo(tmp_path / "repo")
    _, head = base_and_head_reports()
    write_json(repo / DATA_JSON, head)
    write_json(repo / ATTRIBUTIONS_JSON, {"attribution": {"age": 0.1, "income": 0.3}})
    data, importance = sections(repo, tmp_path / "out")

    for text, where in ((data, DATA_JSON), (importance, ATTRIBUTIONS_JSON)):
        assert f"has no `{where}`: this change adds it. This change's figures alone" in text
    assert rows_by_first_cell(data)["train"] == ["train", "—", "800", "—"]
    assert "`income`" in rows_by_first_cell(data.split("most associated")[1])
    assert rows_by_first_cell(data.split("Label balance")[1])["`a`"][1:] == ["75.0%"] * 3
    assert [line.split(" | ")[:2] for line in importance.splitlines() if "| `" in line] == [
        ["| `income`", "—"],
        ["| `age`", "—"],
    ]
    for name in ("data_shift.png", "data_label.png", "attributions.png"):
        assert (tmp_path / "out" / name).read_bytes().startswith(PNG), name
    assert "![Attributions: this change](attributions.png)" in importance

    # no files in the working tree: run the pipeline
    commit(repo, "the stages' outputs")
    (repo / DATA_JSON).unlink()
    (repo / ATTRIBUTIONS_JSON).unlink()
    data, importance = sections(repo, tmp_path / "none")
    assert f"No `{DATA_JSON}` in the working tree: run the pipeline (`dvc repro`" in data
    assert "`explain` stage writes it" in importance
    assert not list((tmp_path / "none").iterdir())

    # a file in another format: one line that says so
    write_json(repo / DATA_JSON, {"rows": {"train": 1}})
    write_json(repo / ATTRIBUTIONS_JSON, {"attribution": {"age": 0.1}})
    with pytest.raises(PipelineError, match=f"^{DATA_JSON} is not in the format the report"):
        sections(repo, tmp_path / "bad")


def test_tables_show_the_largest_changes_up_to_the_row_limit(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    values = rng.normal(0, 1, 500)
    # column i shifted by i tenths of a standard deviation: c30 the most, c1 the least
    base = data_report({f"c{i}": values for i in range(1, 31)}, ["a", "b"] * 250)
    head = data_report({f"c{i}": values + i / 10 for i in range(1, 31)}, ["a", "b"] * 250)
    repo = git_repo(tmp_path / "repo")
    write_json(repo / DATA_JSON, base)
    write_json(repo / ATTRIBUTIONS_JSON, {"attribution": {f"c{i}": 0.0 for i in range(1, 41)}})
    commit(repo, "base")
    write_json(repo / DATA_JSON, head)
    write_json(repo / ATTRIBUTIONS_JSON, {"attribution": {f"c{i}": i for i in range(1, 41)}})
    data, importance = sections(repo, tmp_path / "out")

    shift = data.split("Distribution shift")[1].split("Label balance")[0]
    shown = [name for name in rows_by_first_cell(shift) if name != "column"]
    assert shown == [f"`c{i}`" for i in range(30, 30 - MAX_ROWS, -1)]
    assert f"… and {30 - MAX_ROWS} more in `{DATA_JSON}`." in shift
    changed = data.split("Changed statistics")[1].split("Distribution shift")[0]
    assert len([line for line in changed.splitlines() if line.startswith("| `")]) == MAX_ROWS
    assert "more in `reports/data/report.json`" in changed
    shown = [line.split(" | ")[0] for line in importance.splitlines() if "| `" in line]
    assert shown == [f"| `c{i}`" for i in range(40, 40 - MAX_ROWS, -1)]
    assert f"… and {40 - MAX_ROWS} more in `{ATTRIBUTIONS_JSON}`." in importance
