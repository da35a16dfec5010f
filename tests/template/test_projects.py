"""Generated projects work as they come: each of the issue's answer sets rendered into a new
git repository passes the project's own `make test`, and `make pipeline` where the data is the
sample of its own kind that `copier copy` wrote. The projects install from uv's shared cache:
torch is downloaded once, if at all."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from render import ROOT, project_files, render
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
    """`make <target>` in `project` as its user runs it, with the caller's TORCH_INDEX (the
    template's own make's variables and flags stay out of it); its output goes to the log."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    env = {k: v for k, v in env.items() if not k.startswith(("VIRTUAL_ENV", "MLFLOW_"))}
    torch = [f"TORCH_INDEX={os.environ['TORCH_INDEX']}"] if "TORCH_INDEX" in os.environ else []
    proc = subprocess.run(
        ["make", target, *torch],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=MAKE_TIMEOUT_S,
        check=False,
    )
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
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "copier copy"]):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=project, check=True
        )
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
