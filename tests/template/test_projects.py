"""Generated projects work as they come: each of the issue's answer sets rendered into a new
git repository passes the project's own `make test`, and `make pipeline` where the data is the
sample of its own kind that `copier copy` wrote. The projects install from uv's shared cache:
torch is downloaded once, if at all."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from render import ROOT, as_a_user, commit_all, project_files, render
from test_readme import RUN_BY_CI

# the issue's three answer sets: the answers, and whether `make pipeline` runs too (the defaults'
# pipeline is the repository's own: tests/pipeline/test_repro.py reproduces its lock)
ANSWER_SETS = {
    "defaults": ({}, False),
    "table-regression": (
        {"data": "table", "task": "regression", "airflow": False, "monitoring": False},
        True,
    ),
    "images": ({"data": "images"}, True),
}
# a generated project's `make test` and `make pipeline` each take minutes on a small machine
MAKE_TIMEOUT_S = 3600


def make(project: Path, target: str) -> subprocess.CompletedProcess:
    """`make <target>` in `project` as its user runs it; its output goes to the log."""
    proc = as_a_user(["make", target], project, MAKE_TIMEOUT_S)
    print(
        f"$ make {target}  (exit {proc.returncode})\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
    )
    return proc


@pytest.mark.slow
@pytest.mark.parametrize("name", ANSWER_SETS)
def test_a_generated_project_passes_its_own_make_test_and_pipeline(
    template: Path, tmp_path: Path, name: str
) -> None:
    answers, pipeline = ANSWER_SETS[name]
    project = render(template, tmp_path / name, answers)
    print(f"{name}: {answers}\n" + "\n".join(project_files(project)))
    commit_all(project, "copier copy")
    assert make(project, "test").returncode == 0, f"{name}: make test failed (log above)"
    if pipeline:
        assert make(project, "pipeline").returncode == 0, f"{name}: make pipeline failed"
        assert (project / "dvc.lock").is_file() and (project / "models/model.onnx").is_file()


def test_the_ci_machine_runs_the_commands_the_readme_test_counts_as_run() -> None:
    """tests/test_readme.py counts RUN_BY_CI as run on the template's CI machine (a generated
    project has no .ci/): .ci/run runs each."""
    ci = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()]
    # `make test-all` is `make test`, then `make test-slow`
    ran = {*ci, "make test"} if "make test-all" in ci else set(ci)
    assert set(RUN_BY_CI) <= ran, sorted(set(RUN_BY_CI) - ran)
