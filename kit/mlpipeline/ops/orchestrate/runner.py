"""One stage as one task: take the upstream tasks' hand-offs, pull the stage's dependencies
from the DVC remote, `dvc repro --single-item` (DVC's hashes decide whether it runs), push its
outputs, and hand on dvc.lock's entries and the files git would commit.

Runs in the pipeline's environment, in a workspace that is a checkout of the same revision as
every other task's (a worker's clone, or the training image's copy). One task at a time per
workspace: the runner holds a lock on it from the first write to the last."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from importlib.resources import files
from pathlib import Path
from typing import Any

from dvc.dependency.param import ParamsDependency
from dvc.utils.hydra import compose_and_dump
from dvc.utils.serialize import load_yaml, modify_yaml
from filelock import FileLock, Timeout
from scmrepo.git import Git

from mlpipeline.artifacts import atomic_path
from mlpipeline.config.guard import allowed_prefixes, check_overrides
from mlpipeline.errors import PipelineError
from mlpipeline.ops.orchestrate.dvc_steps import last_step
from mlpipeline.ops.orchestrate.graph import address, open_repo, pipeline_stages
from mlpipeline.ops.orchestrate.handoff import (
    Handoff,
    check_size,
    file_bytes,
    file_entry,
    merge,
    state,
)

LOCKFILE = "dvc.lock"
# in the training image the workspace is a snapshot of this source revision (its git history
# is not in the image)
REVISION_ENV = "MLPIPELINE_REVISION"
# how long a task waits for another task to leave the workspace
WORKSPACE_LOCK_TIMEOUT_S = 24 * 3600
_EXP_NAME = re.compile(r"[^A-Za-z0-9_-]")


def workspace_revision(root: Path) -> str:
    """The source revision the workspace holds: MLPIPELINE_REVISION, else git's HEAD."""
    if revision := os.environ.get(REVISION_ENV):
        return revision

    with Git(str(root)) as scm:
        return scm.get_rev()


def changed_files(root: Path) -> dict[str, bytes | None]:
    """Every file that differs from the workspace's git revision and that git does not
    ignore (what a user would commit after `dvc repro`), dvc.lock aside: its content, None
    where it was deleted."""
    with Git(str(root)) as scm:
        staged, unstaged, untracked = scm.status(untracked_files="all")
    paths = {p for group in staged.values() for p in group} | set(unstaged) | set(untracked)
    paths.discard(LOCKFILE)
    return {
        path: (root / path).read_bytes() if (root / path).is_file() else None
        for path in sorted(paths)
    }


def restore(root: Path, paths: list[str]) -> None:
    """Put these files back as the git revision has them (a file it lacks is removed)."""
    if not paths:
        return
    with Git(str(root)) as scm:
        committed = scm.get_fs("HEAD")
        for path in paths:
            if committed.isfile(path):
                with atomic_path(root / path) as tmp:
                    tmp.write_bytes(committed.read_bytes(path))
            else:
                (root / path).unlink(missing_ok=True)


def apply_handoff(root: Path, handoff: Handoff) -> None:
    """Write what the upstream tasks left into the workspace, each file whole: dvc.lock's
    entries, and each file the hand-off names as it says (its content, deleted, or as the
    revision has it). Other files stay as they are (a fix made in this checkout counts)."""
    local = changed_files(root)
    for path, entry in handoff.files.items():
        data = file_bytes(entry)
        if data is not None:
            if local.get(path) != data:
                with atomic_path(root / path) as tmp:
                    tmp.write_bytes(data)
        elif entry.get("deleted"):
            (root / path).unlink(missing_ok=True)
        elif path in local:
            restore(root, [path])
    if handoff.stages:
        write_lock_entries(root / LOCKFILE, handoff.stages)


def handed_on(
    root: Path, stage: str, received: dict[str, dict[str, Any]], managed: set[str]
) -> dict[str, dict[str, Any]]:
    """The files to hand on after `stage`: every deviation from the revision, and every file
    the pipeline writes outside DVC's cache (`managed`) even where it is as the revision has
    it, so that a stale copy in another workspace is put right; each with the stage that wrote
    that version (the received writer where the version is the one received)."""
    files = {}
    deviation = changed_files(root)
    for path in sorted(deviation.keys() | received.keys() | managed):
        new = file_entry(deviation[path], stage) if path in deviation else {"stage": stage}
        old = received.get(path)
        files[path] = old if old is not None and state(old) == state(new) else new
    return files


def write_lock_entries(lockfile: Path, entries: dict[str, Any]) -> None:
    """Set these stages' entries in dvc.lock with DVC's own YAML writer (the file's other
    entries and its layout stay as DVC keeps them)."""
    with atomic_path(lockfile) as tmp:
        if lockfile.is_file():
            tmp.write_bytes(lockfile.read_bytes())
        with modify_yaml(str(tmp)) as data:
            data.setdefault("schema", "2.0")
            stages = data.setdefault("stages", {})
            for name, entry in entries.items():
                stages[name] = entry


def lock_entry(root: Path, stage: str) -> dict[str, Any]:
    """The stage's entry in dvc.lock, read as DVC reads it (YAML 1.2: `1e-05` is a number)."""
    lockfile = root / LOCKFILE
    data = load_yaml(str(lockfile)) if lockfile.is_file() else {}
    entry = (data or {}).get("stages", {}).get(stage)
    if entry is None:
        raise PipelineError(f"dvc.lock has no entry for stage {stage} after it ran")
    return entry


def plan(root: Path, stage: str) -> tuple[list[str], set[str]]:
    """What to pull before the stage (the cached outputs of other stages that its deps name,
    or that lie inside or around them), and the files the pipeline writes outside DVC's
    cache (uncached outputs, parameter files)."""
    repo = open_repo(root)
    try:
        stages = pipeline_stages(repo)
        by_name = {address(s, repo.root_dir): s for s in stages}
        if stage not in by_name:
            raise PipelineError(
                f"no stage {stage} in {root}'s pipeline (stages: {', '.join(by_name)})"
            )
        this = by_name[stage]
        deps = [Path(d.fs_path) for d in this.deps]
        targets = sorted(
            {
                os.path.relpath(out.fs_path, root)
                for s in repo.index.stages
                if s is not this
                for out in s.outs
                if out.use_cache
                for dep in deps
                if Path(out.fs_path) == dep
                or dep in Path(out.fs_path).parents
                or Path(out.fs_path) in dep.parents
            }
        )
        uncached = [o for s in stages for o in s.outs if not o.use_cache]
        params = [d for s in stages for d in s.deps if isinstance(d, ParamsDependency)]
        managed = {os.path.relpath(item.fs_path, root) for item in [*uncached, *params]}
    finally:
        repo.close()
    return targets, managed


def apply_overrides(root: Path, overrides: Sequence[str]) -> None:
    """Compose params.yaml from conf/ with Hydra overrides, as `dvc exp run -S` does (DVC's
    own composition, with the repository's `hydra` settings)."""
    repo = open_repo(root)
    try:
        hydra = repo.config.get("hydra", {})
    finally:
        repo.close()
    if not hydra.get("enabled", False):
        raise PipelineError(
            "overrides need DVC's Hydra composition: `dvc config hydra.enabled true`"
        )
    config_module = hydra.get("config_module")
    config_dir = None if config_module else str(root / hydra.get("config_dir", "conf"))
    # a run's parameters come from whoever may trigger it: refused before anything is written
    check_overrides(overrides, allowed_prefixes(_conf_dir(config_dir, config_module)))
    try:
        compose_and_dump(
            str(root / "params.yaml"),
            config_dir,
            config_module,
            hydra.get("config_name", "config"),
            str(root / hydra.get("plugins_path", "")),
            list(overrides),
        )
    except Exception as err:  # Hydra's many error types: a bad override is input
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PipelineError(f"override {' '.join(overrides)}: {message}") from None


def _conf_dir(config_dir: str | None, config_module: str | None) -> Path:
    """The folder DVC composes: `hydra.config_dir`, or the package `hydra.config_module`."""
    if config_dir is not None:
        return Path(config_dir)
    try:
        return Path(str(files(str(config_module))))
    except (ImportError, TypeError) as err:
        raise PipelineError(f"hydra.config_module {config_module}: {err}") from None


def stream(
    cmd: list[str], cwd: Path, env: dict[str, str], echo: Callable[[str], None]
) -> tuple[int, list[str]]:
    """Run `cmd`, passing each line of its output (stdout and stderr together) to `echo`;
    returns its exit status and those lines."""
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        bufsize=1,
    )  # fmt: skip
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        echo(lines[-1])
    return proc.wait(), lines


def failure(stage: str, step: str, lines: list[str]) -> str:
    """The one line that says why a step failed: the stage's own `error:` line, else DVC's."""
    own = [ln for ln in lines if ln.startswith("error: ")]
    dvc = [ln for ln in lines if ln.startswith("ERROR: ")]
    reason = own[-1][len("error: ") :] if own else (dvc[-1][len("ERROR: ") :] if dvc else "")
    what = f"stage {stage}" if step == "repro" else f"dvc {step} for stage {stage}"
    return f"{what} failed: {reason or 'see the log above'}"


@contextmanager
def workspace_lock(root: Path, echo: Callable[[str], None]):
    """Hold the workspace for one task; a second task here waits (DVC's own lock would fail
    it instead)."""
    path = root / ".dvc" / "tmp" / "orchestrate.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        echo(f"waiting for another task to leave the workspace {root}")
        try:
            lock.acquire(timeout=WORKSPACE_LOCK_TIMEOUT_S)
        except Timeout:
            raise PipelineError(
                f"the workspace {root} stayed locked for {WORKSPACE_LOCK_TIMEOUT_S} s"
            ) from None
    try:
        yield
    finally:
        lock.release()


def run_stage(
    root: Path,
    stage: str,
    upstream: Sequence[Handoff] = (),
    overrides: Sequence[str] = (),
    experiment: str | None = None,
    echo: Callable[[str], None] = print,
) -> Handoff:
    """Run `stage` in the workspace at `root` after its upstream tasks; returns the hand-off
    for the tasks after it. `overrides` (Hydra, as `dvc exp run -S` takes them) are applied
    by the first tasks (those given no upstream hand-off); `experiment` names the run for the stages
    (DVC_EXP_NAME, as under `dvc exp run`). A failing stage raises PipelineError with its
    one-line error."""
    root = root.resolve()
    # stage commands say `python`: the pipeline environment's, as `make pipeline` has it
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    if experiment:
        env["DVC_EXP_NAME"] = _EXP_NAME.sub("-", experiment)
    with workspace_lock(root, echo):
        started = time.perf_counter()
        revision = workspace_revision(root)
        received = merge(revision, upstream)
        # the first tasks start from their workspace as it is; the others take what they got
        if upstream:
            apply_handoff(root, received)
        targets, managed = plan(root, stage)
        echo(f"runner: hand-off in and plan took {time.perf_counter() - started:.2f} s")
        if overrides and not upstream:
            echo(f"applying overrides {' '.join(overrides)} to params.yaml (as dvc exp run -S)")
            apply_overrides(root, overrides)
        steps = [["repro", "--single-item", "--pull", stage], ["push", stage]]
        if targets:
            steps.insert(0, ["pull", "--force", *targets])
        # one DVC process for the three: each start of DVC costs about a second
        steps_cmd = [sys.executable, "-u", "-m", "mlpipeline.ops.orchestrate.dvc_steps"]
        status, lines = stream([*steps_cmd, json.dumps(steps)], root, env, echo)
        if status != 0:
            raise PipelineError(failure(stage, last_step(lines) or "repro", lines))
        started = time.perf_counter()
        files = handed_on(root, stage, received.files, managed)
        check_size(files)
        handoff = Handoff(revision, {**received.stages, stage: lock_entry(root, stage)}, files)
        echo(f"runner: hand-off out took {time.perf_counter() - started:.2f} s")
        return handoff


def dvc_hash(root: Path, path: str) -> str:
    """DVC's hash of `path` as a stage dependency records it (a directory's `.dir` md5),
    computed from the workspace; PipelineError if no stage depends on it."""
    repo = open_repo(root)
    try:
        wanted = os.path.abspath(os.path.join(repo.root_dir, path))
        for stage in repo.index.stages:
            for dep in stage.deps:
                if os.path.abspath(dep.fs_path) == wanted:
                    if not dep.exists:
                        raise PipelineError(f"{path} does not exist in {root}")
                    return dep.get_hash().value
    finally:
        repo.close()
    raise PipelineError(f"no stage of {root}'s pipeline depends on {path}")
