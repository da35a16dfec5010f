"""The README is a manual a newcomer can follow: short, and every command of its quickstart
and of its "where to change what" table runs, in a test here or in .ci/run."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import ROOT, free_port, make_command, run, stages_run, stop, wait_for_server

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


def test_the_readme_is_at_most_250_lines() -> None:
    assert len(README.splitlines()) <= 250


def test_every_command_of_the_quickstart_and_the_table_is_run_somewhere() -> None:
    ci = (ROOT / ".ci/run").read_text()
    tests = "".join(p.read_text() for p in (ROOT / "tests").rglob("test_*.py"))
    # the quickstart's curl line and the table's own-data command are run below, as written
    here = ("curl ", "dvc exp run -S data=tabular")
    commands = [c for c in quickstart() + table_commands() if not c.startswith(here)]
    assert commands
    not_run = [c for c in commands if c not in ci and as_python(c) not in tests]
    assert not not_run, f"run these in a test or in .ci/run: {not_run}"


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
        assert '"classes":[' in answer and '"probabilities":[[' in answer, answer
    finally:
        stop(server)


@pytest.mark.slow
def test_your_own_table_with_the_readmes_commands(repo_copy: Path) -> None:
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=300, n_features=6, n_informative=4, n_classes=3, random_state=0
    )
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(6)])
    frame["species"] = np.array(["ant", "bee", "cat"])[y]
    frame.to_csv(repo_copy / "data/raw/mydata.csv", index=False)
    run(["dvc", "add", "data/raw/mydata.csv"], repo_copy)
    (command,) = [c for c in table_commands() if "data=tabular" in c]
    out = run([*shlex.split(command), "-S", "trainer.max_epochs=3"], repo_copy).stdout
    assert stages_run(out) == [
        "compose",
        "ingest",
        "prepare",
        "features",
        "train",
        "crossval",
        "evaluate",
        "export",
        "profile",
        "register",
    ]
    card = json.loads((repo_copy / "models/model_card.json").read_text())
    assert card["classes"] == ["ant", "bee", "cat"]
    # a table model takes its raw columns by name (records), each with its kind
    assert card["input"]["kind"] == "records"
    assert [c["name"] for c in card["input"]["columns"]] == [f"f{i}" for i in range(6)]
