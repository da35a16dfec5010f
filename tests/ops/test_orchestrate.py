"""The orchestration's parts that need no Airflow: the hand-off between tasks, the settings,
the runner's workspace lock, and the stage graph as DVC resolves it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import ROOT, one_line_error, run

from mlpipeline.errors import PipelineError
from mlpipeline.ops.orchestrate.graph import from_json, read_graph, task_id, to_json
from mlpipeline.ops.orchestrate.handoff import Handoff, file_bytes, file_entry, merge
from mlpipeline.ops.orchestrate.settings import Settings


def handoff(stages: list[str], **files: tuple[str, str]) -> Handoff:
    """A hand-off that saw `stages`, with files as (content, writer)."""
    return Handoff(
        "rev",
        {s: {"cmd": s} for s in stages},
        {p.replace("_", "/"): file_entry(c.encode(), w) for p, (c, w) in files.items()},
    )


def test_a_descendants_version_of_a_file_supersedes_its_ancestors() -> None:
    # compose handed on a stale history; train (after prepare, after compose) rewrote it
    prepare = handoff(["compose", "prepare"], reports_h=("stale", "compose"))
    train = handoff(["compose", "prepare", "train"], reports_h=("new", "train"))
    for order in ([prepare, train], [train, prepare]):
        merged = merge("rev", order)
        assert file_bytes(merged.files["reports/h"]) == b"new"
        assert sorted(merged.stages) == ["compose", "prepare", "train"]


def test_two_parallel_writers_of_one_file_are_an_error() -> None:
    left = handoff(["compose", "a"], f=("one", "a"))
    right = handoff(["compose", "b"], f=("two", "b"))
    with pytest.raises(PipelineError, match="stages a and b both wrote f"):
        merge("rev", [left, right])


def test_another_revision_is_an_error() -> None:
    with pytest.raises(PipelineError, match="one git revision"):
        merge("other", [handoff(["compose"])])


def test_the_hand_off_is_one_line_and_keeps_binary_files() -> None:
    binary = Handoff("rev", {"s": {"outs": [{"md5": "x"}]}}, {"b": file_entry(b"\xff\x00", "s")})
    line = binary.encode()
    assert "\n" not in line
    assert file_bytes(Handoff.decode(line).files["b"]) == b"\xff\x00"
    with pytest.raises(PipelineError, match="not a hand-off"):
        Handoff.decode("ERROR: something else")


def test_settings_from_the_environment(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "MLPIPELINE_REPO": str(tmp_path),
            "MLPIPELINE_QUEUES": '{"train": "gpu"}',
            "MLPIPELINE_SCHEDULE": "none",
            "MLPIPELINE_WATCH": "",
        }
    )
    assert settings.python == tmp_path / ".venv/bin/python"
    assert settings.queues == {"train": "gpu"} and settings.schedule is None
    assert settings.watch == () and settings.workspace("train") == tmp_path
    with pytest.raises(PipelineError, match="MLPIPELINE_REPO is not set"):
        Settings.from_env({})
    with pytest.raises(PipelineError, match="MLPIPELINE_MODE='k8s'"):
        Settings.from_env({"MLPIPELINE_REPO": "x", "MLPIPELINE_MODE": "k8s"})
    with pytest.raises(PipelineError, match="MLPIPELINE_QUEUES is not JSON"):
        Settings.from_env({"MLPIPELINE_REPO": "x", "MLPIPELINE_QUEUES": "train=gpu"})


def test_the_graph_is_dvcs_own(repo_copy: Path) -> None:
    spec = yaml.safe_load((repo_copy / "dvc.yaml").read_text())
    # foreach and vars are DVC's to expand
    spec["vars"] = [{"splits": ["train", "test"]}]
    spec["stages"]["audit"] = {
        "foreach": "${splits}",
        "do": {"cmd": "ls data/prepared/${item}", "deps": ["data/prepared"]},
    }
    (repo_copy / "dvc.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    stages = {s.name: s for s in read_graph(repo_copy)}
    assert stages["audit@train"].upstream == ("prepare",)
    assert stages["audit@train"].task_id == "audit_train"
    assert stages["register"].upstream == (
        "data_report", "evaluate", "explain", "export", "prepare", "profile", "train",
    )  # fmt: skip
    assert from_json(to_json(list(stages.values()))) == list(stages.values())
    assert task_id("sub/dvc.yaml:train") == "sub_dvc.yaml_train"


def test_the_runner_says_what_is_wrong_in_one_line(tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "mlpipeline.ops.orchestrate"]
    one_line_error(run([*cli, "graph", "--repo", str(tmp_path)], tmp_path, check=False),
                   "is not a DVC repository")  # fmt: skip
    one_line_error(run([*cli, "run", "nope", "--repo", str(ROOT)], tmp_path, check=False,
                       MLPIPELINE_UPSTREAM="not json"), "not a hand-off")  # fmt: skip


@pytest.mark.parametrize(
    ("overrides", "parts"),
    [
        (
            ["+callbacks.x._target_=builtins.open", "+callbacks.x.file={victim}",
             "+callbacks.x.mode=w"],
            ["callbacks.x._target_: 'builtins.open' is not in a package a _target_ may name"],
        ),
        (["tracking.experiment=${{oc.env:HOME}}"], ["calls the resolver oc.env"]),
    ],
    ids=["target", "environment"],
)  # fmt: skip
def test_the_runner_refuses_a_runs_forbidden_overrides_before_writing(
    repo_copy: Path, overrides: list[str], parts: list[str]
) -> None:
    # the DAG's `overrides` run parameter reaches the runner as these --override arguments
    victim = repo_copy.parent / "victim.txt"
    victim.write_text("keep me")
    params = (repo_copy / "params.yaml").read_text()
    args = [f"--override={o.format(victim=victim)}" for o in overrides]
    cmd = [sys.executable, "-m", "mlpipeline.ops.orchestrate", "run", "compose", "--repo", "."]
    proc = run([*cmd, *args, "--experiment", "manual"], repo_copy, check=False)
    one_line_error(proc, *parts)
    assert "$ dvc" not in proc.stdout  # no DVC command ran
    assert (repo_copy / "params.yaml").read_text() == params
    assert victim.read_text() == "keep me"


@pytest.mark.slow
def test_a_second_task_in_one_workspace_waits_for_the_first(repo_copy: Path) -> None:
    from filelock import FileLock

    holder = FileLock(str(repo_copy / ".dvc/tmp/orchestrate.lock"))
    (repo_copy / ".dvc/tmp").mkdir(parents=True, exist_ok=True)
    with holder:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlpipeline.ops.orchestrate", "run", "compose", "--repo", "."],
            cwd=repo_copy, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("waiting for another task to leave the workspace"), first
        # it waits while the lock is held (no time bound is asserted, only that it is waiting)
        time.sleep(1)
        assert proc.poll() is None
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert "Running stage 'compose'" in out
    assert Handoff.decode(out.splitlines()[-1]).stages["compose"]["cmd"]


def test_the_runner_takes_a_json_list_of_overrides_and_a_file_per_upstream_task(
    repo_copy: Path, tmp_path: Path
) -> None:
    # how Kubeflow Pipelines passes them: one list parameter, one artifact per upstream task
    from mlpipeline.ops.orchestrate.__main__ import upstream_lines

    first, second = tmp_path / "a", tmp_path / "b"
    first.write_text("one\n")
    second.write_text("two\n\n")
    assert upstream_lines([first, second]) == ["one", "two"]
    cmd = [sys.executable, "-m", "mlpipeline.ops.orchestrate", "run", "compose", "--repo", "."]
    proc = run([*cmd, "--overrides", '["tracking.experiment=${oc.env:HOME}"]'], repo_copy,
               check=False)  # fmt: skip
    one_line_error(proc, "calls the resolver oc.env")
    one_line_error(run([*cmd, "--overrides", "a=1"], repo_copy, check=False),
                   "--overrides is not JSON")  # fmt: skip
    first.write_text("{}")
    proc = run([*cmd, "--upstream", str(first), "--upstream", str(second)], repo_copy, check=False)
    one_line_error(proc, "not a hand-off")
