"""A newcomer's own table, as docs/your-data.md writes it: its git and DVC commands in order
in a temporary copy of this repository, with the state of git after them, and the experiment
compared with `make exps`."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import ROOT, make_command, run

pytestmark = pytest.mark.slow


def penguins_commands() -> list[str]:
    """The git and DVC commands of the page's Palmer penguins block, up to the experiment."""
    page = (ROOT / "docs/your-data.md").read_text(encoding="utf-8")
    block = page.split("## A classification: the Palmer penguins", 1)[1]
    block = block.split("```bash\n", 1)[1].split("```", 1)[0]
    lines = [line.split("  #")[0].strip() for line in block.splitlines()]
    commands = [line for line in lines if line.startswith(("dvc ", "git "))]
    return commands[: next(i for i, c in enumerate(commands) if c.startswith("dvc exp run")) + 1]


def test_the_penguins_walk_leaves_git_as_a_user_expects(repo_copy: Path) -> None:
    import palmerpenguins

    source = Path(palmerpenguins.__file__).parent / "data/penguins.csv"
    (repo_copy / "data/raw").mkdir(parents=True, exist_ok=True)
    (repo_copy / "data/raw/penguins.csv").write_bytes(source.read_bytes())
    commands = penguins_commands()
    assert commands[-1].startswith("dvc exp run -S data=tabular"), commands
    for command in commands:
        run(["bash", "-c", command], repo_copy)
    # the table's .dvc file is committed, as the experiment it fed: nothing is left untracked
    # but the data report's histograms of the table's own columns, new committed outputs
    # (cache: false) that the user commits with the experiment
    status = run(["git", "status", "--porcelain"], repo_copy).stdout.splitlines()
    columns = "?? reports/data/columns/"
    assert not [s for s in status if s.startswith("??") and not s.startswith(columns)], status
    assert [s for s in status if s.startswith(columns)], status
    tracked = run(["git", "ls-files", "data/raw"], repo_copy).stdout.split()
    assert "data/raw/penguins.csv.dvc" in tracked

    # the experiment beside the baseline: the values that differ and the metrics, no hashes
    # wide enough that DVC's table (rich) shows each cell whole
    table = run(make_command("exps"), repo_copy, COLUMNS="400").stdout
    header = next(line for line in table.splitlines() if "Experiment" in line).split()
    assert {"accuracy", "data.source.path", "data.source.label"} <= set(header), header
    assert not [c for c in header if "/" in c or c.endswith("_target_") or c == "Created"]
    assert len(header) < 30  # plain `dvc exp show` has over a hundred
    assert "data/raw/penguins.csv" in table and "…" not in table
