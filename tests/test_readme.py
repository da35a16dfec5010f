"""The README is a manual a newcomer can follow: every command of its quickstart
and of its "where to change what" table runs, in a test here or on the CI machine (.ci/run)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from helpers import (
    ROOT,
    commit_all,
    free_port,
    make_command,
    run,
    serving,
    stages_run,
    stop,
    wait_for_server,
)

README = (ROOT / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    return README.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def quickstart() -> list[str]:
    block = section("Quickstart").split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def table_commands() -> list[str]:
    rows = [r for r in section("Where to change what").splitlines() if r.startswith("| ")][2:]
    return [cmd for row in rows for cmd in re.findall(r"`([^`]+)`", row.split(" | ")[-1])]


def as_python(command: str) -> str:
    """How a test spells the command: its words as string literals, make's through
    helpers.make_command."""
    words = [f'"{word}"' for word in shlex.split(command)]
    return f"make_command({', '.join(words[1:])})" if words[0] == '"make"' else ", ".join(words)


# what the template's CI machine runs on the repository (.ci/run: the template's own file, which
# tests/template/test_projects.py holds to this list; a generated project has no .ci/)
RUN_BY_CI = ("make lint", "make test-all", "make test", "make pipeline", "make smoke")


def test_every_command_of_the_quickstart_and_the_table_is_run_somewhere() -> None:
    tests = "".join(p.read_text() for p in (ROOT / "tests").rglob("test_*.py"))
    # the quickstart's curl line and the table's own-data command are run below, as written
    here = ("curl ", "dvc exp run -S data=tabular")
    commands = [c for c in quickstart() + table_commands() if not c.startswith(here)]
    assert commands
    not_run = [c for c in commands if c not in RUN_BY_CI and as_python(c) not in tests]
    assert not not_run, f"run these in a test or in .ci/run (RUN_BY_CI): {not_run}"


@pytest.mark.slow
def test_make_serve_answers_the_quickstarts_curl(tiny_repo: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    server = subprocess.Popen(
        make_command("serve"),
        cwd=tiny_repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        wait_for_server(server, f"http://127.0.0.1:{port}/ready", 120)
        (curl,) = [line for line in quickstart() if line.startswith("curl ")]
        curl = curl.replace("localhost:8080", f"localhost:{port}")
        curl = curl.replace(".venv/bin/python", sys.executable)
        answer = run(["bash", "-c", curl], tiny_repo).stdout
        assert '"predictions":[' in answer and '"probabilities":[{' in answer, answer
    finally:
        stop(server)


@pytest.mark.slow
def test_your_own_table_with_the_readmes_commands(repo_copy: Path) -> None:
    """The Palmer penguins (text categories, missing values) as `data/raw/mydata.csv`, with the
    table's command exactly as the README writes it: only config changes. The served model
    answers records as a classification does (tests/pipeline/test_tables.py runs the
    regressions)."""
    import palmerpenguins

    source = Path(palmerpenguins.__file__).parent / "data/penguins.csv"
    (repo_copy / "data/raw").mkdir(parents=True, exist_ok=True)
    (repo_copy / "data/raw/mydata.csv").write_bytes(source.read_bytes())
    run(["dvc", "add", "data/raw/mydata.csv"], repo_copy)
    commit_all(repo_copy, "add the table")
    (command,) = [c for c in table_commands() if "data=tabular" in c]
    out = run(shlex.split(command), repo_copy).stdout
    stages = {"ingest", "prepare", "data_report", "features", "train", "evaluate", "export"}
    stages |= {"profile", "register"}
    assert stages <= set(stages_run(out))
    assert json.loads((repo_copy / "reports/metrics.json").read_text())["accuracy"] >= 0.95
    card = json.loads((repo_copy / "models/model_card.json").read_text())
    assert card["classes"] == ["Adelie", "Chinstrap", "Gentoo"]
    assert [c["name"] for c in card["input"]["columns"]] == [
        "island", "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "sex",
        "year",
    ]  # fmt: skip
    with serving(repo_copy) as url:
        record = {
            "island": "Biscoe",
            "bill_length_mm": 48.6,
            "bill_depth_mm": 16.0,
            "flipper_length_mm": 230.0,
            "body_mass_g": 5800.0,
            "sex": None,
            "year": 2009,
        }
        # an unseen island and a record with no values at all are inputs the model takes
        body = {"records": [record, {**record, "island": "Atlantis"}, {}]}
        answer = httpx.post(f"{url}/predict", json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        predictions, probabilities = answer.json()["predictions"], answer.json()["probabilities"]
        assert predictions[0] == "Gentoo" and set(predictions) <= set(card["classes"])
        assert all(set(p) == set(card["classes"]) for p in probabilities)
        assert all(abs(sum(p.values()) - 1) < 1e-5 for p in probabilities)
        wrong = {"records": [{**record, "body_mass_g": "heavy"}]}
        answer = httpx.post(f"{url}/predict", json=wrong, timeout=30)
        assert answer.status_code == 422 and "column 'body_mass_g' takes a number" in answer.text
