"""`make report BASE=<ref>`: the pull-request report, in temporary copies of this repository.

The slow test runs the real pipeline (two epochs) on two commits that differ in the optimizer's
learning rate, as the retrain workflow does on a pull request, and reads the report it writes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from helpers import make_command, run, set_in_conf

from mlpipeline.config.tasks import Classification

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
PNG = b"\x89PNG\r\n\x1a\n"
PLOTS = {f"{p.name}.png" for p in Classification.plots}  # the digits pipeline's task


def make(repo: Path, *args: str, check: bool = True):
    """`make` in `repo` with the running venv, whose install stamp makes `install` a no-op."""
    return run(make_command(*args), repo, check=check)


def commit(repo: Path, message: str) -> None:
    run(["git", "add", "-A"], repo)
    run([*GIT, "commit", "-qm", message], repo)


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
