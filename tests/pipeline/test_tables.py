"""Tables through the real `dvc repro` and `dvc exp run` in temporary copies of this
repository: a generated table with every kind of column (a regression, served and sent
records), scikit-learn's diabetes regression with cross-validation, and the pull-request
report of a change to a table's data. A classification of a
table, the Palmer penguins, runs end to end and is served with the README's own command in
tests/test_readme.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import (
    STAGES,
    assert_one_line_per_stage,
    commit_all,
    make_command,
    mixed_table,
    plot_panels,
    run,
    serving,
    stages_run,
)

from mlpipeline.config.tasks import Regression
from mlpipeline.plots import IMPORTANCE

pytestmark = pytest.mark.slow


def add_table(repo: Path, name: str, frame: Any) -> None:
    """The table under data/raw, tracked by DVC, its .dvc file committed."""
    (repo / "data/raw").mkdir(parents=True, exist_ok=True)
    frame.to_csv(repo / "data/raw" / name, index=False)
    run(["dvc", "add", f"data/raw/{name}"], repo)
    commit_all(repo, f"add {name}")


def use_table(repo: Path, file: str, label: str, task: str) -> None:
    """What the README tells a user to do: conf/ names the table, the label and the task."""
    config = repo / "conf/config.yaml"
    text = config.read_text()
    text = text.replace("  - data: digits\n", "  - data: tabular\n")
    text = text.replace("  - model: cnn\n", "  - model: mlp\n")
    text = text.replace("  - task: classification\n", f"  - task: {task}\n")
    config.write_text(text)
    tabular = repo / "conf/data/tabular.yaml"
    text = tabular.read_text().replace("data/raw/data.csv", f"data/raw/{file}")
    tabular.write_text(text.replace("    label: label\n", f"    label: {label}\n"))


def predict(url: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    answer = httpx.post(f"{url}/predict", json={"records": records}, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_mixed_table_runs_end_to_end_and_serves_records(repo_copy: Path) -> None:
    add_table(repo_copy, "table.csv", mixed_table(400, "regression"))
    use_table(repo_copy, "table.csv", "target", "regression")
    repro = run(["dvc", "repro"], repo_copy)
    assert {"features", "train", "export", "register"} <= set(stages_run(repro.stdout))
    assert_one_line_per_stage(repro)
    metrics = json.loads(run(["dvc", "metrics", "show", "--json"], repo_copy).stdout)
    scores = next(iter(metrics.values()))["data"]["reports/metrics.json"]["data"]
    assert {"mae", "rmse", "r2"} <= set(scores) and scores["r2"] > 0.5
    assert stages_run(run(["dvc", "repro"], repo_copy).stdout) == ["compose"]

    card = json.loads((repo_copy / "models/model_card.json").read_text())
    # named after its data (table.csv), as the project sets no name
    assert card["name"] == "table" and card["input"]["kind"] == "records"
    with serving(repo_copy) as url:
        rows = [
            {"width": 10.5, "color": "red", "flag": True, "count": 2},
            {"width": None, "color": "a colour nobody trained on", "flag": None},
            {},
        ]
        answer = predict(url, rows)
        assert len(answer["predictions"]) == 3
        assert all(isinstance(v, float) for v in answer["predictions"])
        wrong = httpx.post(f"{url}/predict", json={"records": [{"width": "wide"}]}, timeout=30)
        assert wrong.status_code == 422 and "column 'width' takes a number" in wrong.text


def test_diabetes_regression_with_cross_validation(repo_copy: Path) -> None:
    from sklearn.datasets import load_diabetes

    add_table(repo_copy, "diabetes.csv", load_diabetes(as_frame=True, scaled=False).frame)
    command = (
        "dvc exp run -S data=tabular -S model=mlp -S data.source.path=data/raw/diabetes.csv "
        "-S data.source.label=target -S task=regression -S cv.folds=5"
    )
    run(command.split(), repo_copy)
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], repo_copy).stdout)
    files = next(iter(shown.values()))["data"]
    # the test metrics in one row, cross-validation's among them; the attributions their own
    assert list(files) == ["reports/attributions.json", "reports/metrics.json"]
    scores = files["reports/metrics.json"]["data"]
    cv = json.loads((repo_copy / "reports/cv.json").read_text())
    assert scores["r2"] >= 0.35 and scores["cv_folds"] == 5
    assert scores["cv_val_loss_mean"] == cv["mean"] and scores["cv_val_loss_std"] == cv["std"] > 0
    assert cv["folds"] == 5 and len(cv["scores"]) == 5 and cv["metric"] == "val_loss"
    # a regression's panels alone, titled and filled; no classification file, not even empty
    panels = plot_panels(repo_copy)
    assert list(panels) == [p.title for p in (*Regression.plots, IMPORTANCE)]
    assert all(filled == rows > 0 for rows, filled in panels.values()), panels
    assert [p.name for p in (repo_copy / "reports/eval").iterdir()] == ["predictions.csv"]


def test_the_pr_report_shows_what_a_change_to_the_data_did(repo_copy: Path) -> None:
    missing = [name for name in ("data_report", "explain") if name not in STAGES]
    if missing:
        pytest.skip(
            f"dvc.yaml has no {' or '.join(missing)} stage: the report's data and attributions "
            "sections read what they write (issue 35)"
        )
    frame = mixed_table(400, "classification")
    add_table(repo_copy, "table.csv", frame)
    use_table(repo_copy, "table.csv", "target", "classification")
    run(["dvc", "repro"], repo_copy)
    commit_all(repo_copy, "the table's pipeline")

    # a fifth of the rows dropped, and width moved by three of its standard deviations
    changed = frame.iloc[:320].copy()
    changed["width"] += 9
    changed.to_csv(repo_copy / "data/raw/table.csv", index=False)
    run(["dvc", "add", "data/raw/table.csv"], repo_copy)
    run(["dvc", "repro"], repo_copy)
    run(make_command("report", "BASE=HEAD"), repo_copy)
    out = repo_copy / "reports/pr"
    report = (out / "report.md").read_text()

    data = report.split("\n## Data report")[1].split("\n## ")[0]
    train = next(line for line in data.splitlines() if line.startswith("| train |"))
    before, after = (int(cell.replace(",", "")) for cell in train.split(" | ")[1:3])
    assert after < before, train
    changed_rows = data.split("Changed statistics")[1].split("Distribution shift")[0]
    assert "| `width` | mean |" in changed_rows
    shifts = [line for line in data.split("Distribution shift")[1].splitlines() if "| `" in line]
    assert shifts[0].startswith("| `width` | numeric |") and shifts[0].endswith("moved |")

    importance = report.split("\n## Attributions")[1].split("\n## ")[0]
    rows = {line.split(" | ")[0]: line.split(" | ") for line in importance.splitlines()}
    for column in ("width", "color", "flag", "count"):
        base, head = rows[f"| `{column}`"][1:3]
        assert float(base) >= 0 and float(head) >= 0, rows[f"| `{column}`"]
    for name in ("data_shift.png", "data_label.png", "attributions.png"):
        assert (out / name).read_bytes().startswith(b"\x89PNG"), name
