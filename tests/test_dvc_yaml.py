"""dvc.yaml against the code and the config: every path several places use is the one
conf/paths/ declares, and every stage depends on everything its module may run."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml
from helpers import ROOT
from imports import closure

from mlpipeline.plots import EVAL_PLOTS

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
PATHS = yaml.safe_load((ROOT / "conf/paths/default.yaml").read_text())


def entries(stage: str, *kinds: str) -> set[str]:
    found = []
    for kind in kinds:
        found += [e if isinstance(e, str) else next(iter(e)) for e in STAGES[stage].get(kind, [])]
    return set(found)


def outputs(stage: str) -> set[str]:
    return entries(stage, "outs", "metrics", "plots")


def test_each_path_is_written_by_the_stage_that_owns_it() -> None:
    assert PATHS["raw"] in entries("ingest", "deps")
    assert outputs("ingest") == {PATHS["ingested"]}
    assert outputs("prepare") == {PATHS["prepared"]}
    assert outputs("train") == {PATHS["model"], PATHS["history"]}
    eval_files = {f"{PATHS['eval']}/{name}" for name in EVAL_PLOTS.values()}
    assert outputs("evaluate") == {PATHS["metrics"], *eval_files}
    assert outputs("export") == {PATHS["onnx"], PATHS["card"], PATHS["reference"]}
    assert outputs("profile") == {PATHS["profile"]}
    assert outputs("register") == {PATHS["registration"]}


def test_each_path_a_stage_reads_is_one_an_earlier_stage_writes() -> None:
    written = {p for stage in STAGES for p in outputs(stage)}
    written |= {PATHS["eval"], PATHS["raw"]}
    for name in STAGES:
        data = {d for d in entries(name, "deps") if not d.startswith(("src/", "conf"))}
        assert data - {"params.yaml"} <= written, name


def is_marker(path: Path) -> bool:
    """A package __init__ with nothing but a docstring: it cannot change what a stage does."""
    body = ast.parse(path.read_text()).body
    return path.name == "__init__.py" and all(
        isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in body
    )


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_a_stage_depends_on_every_module_it_may_run(stage: str) -> None:
    deps = [Path(d) for d in entries(stage, "deps") if d.startswith("src/")]
    needed = sorted(p.relative_to(ROOT) for p in closure(f"mlpipeline.stages.{stage}"))
    uncovered = [
        str(path)
        for path in needed
        if not is_marker(ROOT / path) and not any(path == d or d in path.parents for d in deps)
    ]
    assert not uncovered, f"add to the deps of {stage} in dvc.yaml: {uncovered}"
