"""dvc.yaml against the code and the config: every path is one conf/paths/ declares (dvc.yaml
names them as ${paths.*}), and every stage depends on the kit as one unit and on the part of
the project's code it may run."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from helpers import ROOT
from imports import closure

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
PATHS = {
    k: f"${{paths.{k}}}" for k in yaml.safe_load((ROOT / "conf/paths/default.yaml").read_text())
}
KIT = "kit/mlpipeline"
# the project's code: its data sources (what the data stages may run) and all of it
PROJECT_DATA, PROJECT = "src/myproject/data", "src/myproject"
DATA_STAGES = ("ingest", "prepare", "data_report", "features")


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
    assert outputs("data_report") == {PATHS["data_report"]}
    assert outputs("train") == {PATHS["model"], PATHS["history"]}
    assert outputs("explain") == {PATHS["attributions"], PATHS["explain"]}
    assert outputs("evaluate") == {PATHS["metrics"], PATHS["eval"], PATHS["figures"]}
    assert outputs("export") == {PATHS["onnx"], PATHS["card"], PATHS["reference"]}
    assert outputs("profile") == {PATHS["profile"]}
    assert outputs("register") == {PATHS["registration"]}


def test_plots_are_the_tasks_alone() -> None:
    """`dvc plots show` draws the definitions compose writes for the task (paths.plots): a
    plot declared here too, or a stage's plot file without a definition, would be drawn beside
    them (untitled, every column against the row number)."""
    assert "plots" not in yaml.safe_load((ROOT / "dvc.yaml").read_text())
    assert not [stage for stage in STAGES if entries(stage, "plots")]


def test_compose_runs_on_every_repro() -> None:
    """An experiment left in the workspace changes no hash (params.yaml and dvc.lock agree):
    only composing conf/ again can tell that params.yaml no longer follows it."""
    assert STAGES["compose"].get("always_changed") is True


def test_the_metrics_files_are_the_test_metrics_and_the_attributions() -> None:
    """`dvc metrics show` has a row per metrics file, of dashes when it holds no number: the
    crossval stage's file (off by default) is a plain output, which evaluate reads; the
    attributions are numbers on every run, so `dvc metrics diff` shows how importance moved."""
    declared = {s: entries(s, "metrics") for s in STAGES if entries(s, "metrics")}
    assert declared == {"evaluate": {PATHS["metrics"]}, "explain": {PATHS["attributions"]}}
    assert entries("crossval", "outs") == {PATHS["cv"]}
    assert PATHS["cv"] in entries("evaluate", "deps")


def test_no_path_is_written_out() -> None:
    """Paths come from conf/paths/ alone: dvc.yaml names no data, model or report file."""
    literal = [
        f"{stage}: {e}"
        for stage in STAGES
        for e in entries(stage, "deps", "outs", "metrics", "plots")
        if e.startswith(("data/", "models/", "reports/")) and e != "data/.composed"
    ]
    assert not literal


def test_each_path_a_stage_reads_is_one_an_earlier_stage_writes() -> None:
    written = {p for stage in STAGES for p in outputs(stage)}
    # the user's inputs: the raw data and the pretrained weights files
    written |= {PATHS["raw"], PATHS["weights"]}
    for name in STAGES:
        data = {d for d in entries(name, "deps") if not d.startswith(("src/", "kit/", "conf"))}
        assert data - {"params.yaml"} <= written, name


# the kit's stages; a project's own stage (README: a stage of your own) runs its own module
KIT_STAGES = sorted(s for s in STAGES if STAGES[s]["cmd"] == f"python -m mlpipeline.stages.{s}")


@pytest.mark.parametrize("stage", KIT_STAGES)
def test_a_stage_depends_on_the_kit_and_the_project_code_it_may_run(stage: str) -> None:
    code = {d for d in entries(stage, "deps") if d.startswith(("src/", "kit/"))}
    expected = {KIT} | (
        set() if stage == "compose" else {PROJECT_DATA if stage in DATA_STAGES else PROJECT}
    )
    assert code == expected
    # what the stage's module imports lies in the kit, or in the project code it depends on
    needed = {p.relative_to(ROOT) for p in closure(f"mlpipeline.stages.{stage}")}
    outside = [str(p) for p in needed if not any(Path(d) in p.parents for d in code)]
    assert not outside, f"{stage} imports {outside}: add them to its deps in dvc.yaml"
