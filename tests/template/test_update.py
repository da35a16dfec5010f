"""`copier update`, for real: a project generated from the previous release and edited by its
user (their network, a conf value, a stage of their own in dvc.yaml, a test) takes the current
release. Their edits survive, the template's changes arrive, no file has a conflict, and the
project's own `make test` passes. The template is a temporary git repository holding the
previous release and the working tree on top, each tagged `vX.Y.Z` as a release is."""

from __future__ import annotations

import difflib
import io
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml
from packaging.version import InvalidVersion, Version
from render import ANSWERS, ROOT, as_a_user, commit_all, copy_tree, git, working_tree

pytestmark = pytest.mark.slow

VERSION_FILE = "kit/mlpipeline/__init__.py"
# the project's `make test` installs the whole lock and runs the fast tier: far longer than a
# render, and bounded so that a hang fails the test
MAKE_TIMEOUT_S = 3600

# the user's edits: a network of their own, a stage of their own (its module and its dvc.yaml
# entry; its output outside the kit's folders, as a release before 0.3.0 took no path of a
# project's own in conf/paths/) and a test of their own
NET = '''

class Wide(MLP):
    """My network: the template's MLP, wider."""

    def __init__(self, in_shape: Sequence[int], num_classes: int) -> None:
        super().__init__(in_shape, num_classes, hidden=(256, 128), dropout=0.2)
'''
STAGE_MODULE = '''"""My own stage: the test metrics on one line, in the bundle my team ships."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def summarize(metrics: Path, out: Path) -> None:
    """Write the metrics file's values as `name=value` pairs on one line."""
    values = json.loads(metrics.read_text())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(" ".join(f"{k}={v}" for k, v in sorted(values.items())) + "\\n")
    print(f"summary: {len(values)} metrics -> {out}")


def main() -> None:
    summarize(Path(sys.argv[1]), Path(sys.argv[2]))


if __name__ == "__main__":
    main()
'''
STAGE = """  summary:
    cmd: python -m myproject.summary ${paths.metrics} dist/summary.txt
    deps:
      - kit/mlpipeline
      - src/myproject
      - ${paths.metrics}
    outs:
      - dist/summary.txt

"""
USER_TEST = '''"""My network's test."""

import torch

from myproject.models.nets import Wide


def test_wide_maps_a_batch_to_one_score_per_class() -> None:
    assert Wide((8, 8), 10)(torch.zeros(2, 8, 8)).shape == (2, 10)
'''
CONF_FILE, CONF_FROM, CONF_TO = "conf/optimizer/adamw.yaml", "lr: 0.003\n", "lr: 0.002\n"


def run(cmd: list[str], cwd: Path, timeout: int = 600) -> str:
    """Run a command as the project's user would (`render.as_a_user`); fail with its output's
    tail."""
    proc = as_a_user(cmd, cwd, timeout)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}:\n{output[-6000:]}"
    return output


def kit_version(text: str) -> Version | None:
    found = re.search(r'^__version__ = "([^"]+)"', text, re.MULTILINE)
    return Version(found.group(1)) if found else None


def previous_release(current: Version) -> tuple[str, Version] | None:
    """The commit of the release before `current`: the newest tag `vX.Y.Z` older than it, else
    the newest commit in history with an older kit version and a copier.yml."""
    tags = []
    for tag in git(ROOT, "tag", "--list", "v*").decode().split():
        try:
            tags.append((Version(tag[1:]), tag))
        except InvalidVersion:
            continue
    older = sorted(t for t in tags if t[0] < current)
    if older:
        version, tag = older[-1]
        return git(ROOT, "rev-parse", f"{tag}^{{commit}}").decode().strip(), version
    for commit in git(ROOT, "rev-list", "HEAD").decode().split():
        shown = subprocess.run(
            ["git", "show", f"{commit}:{VERSION_FILE}"], cwd=ROOT, capture_output=True, text=True
        )
        version = kit_version(shown.stdout) if shown.returncode == 0 else None
        has_copier = not subprocess.run(
            ["git", "cat-file", "-e", f"{commit}:copier.yml"], cwd=ROOT, capture_output=True
        ).returncode
        if version is not None and version < current and has_copier:
            return commit, version
    return None


def template_repository(tmp: Path, previous: str, old: Version, new: Version) -> Path:
    """A git repository holding the previous release (tagged) and the working tree on top
    (tagged with the current version), as the template's history will."""
    repo = tmp / "template"
    repo.mkdir()
    with tarfile.open(fileobj=io.BytesIO(git(ROOT, "archive", "--format=tar", previous))) as tar:
        tar.extractall(repo, filter="tar")
    commit_all(repo, f"release {old}")
    git(repo, "tag", f"v{old}")
    for path in git(repo, "ls-files", "-z").decode().split("\0"):
        if path:
            (repo / path).unlink()
    copy_tree(repo)
    commit_all(repo, f"release {new}")
    git(repo, "tag", f"v{new}")
    return repo


def copier(*args: str, cwd: Path) -> str:
    return run([sys.executable, "-m", "copier", *args], cwd=cwd)


def snapshot(project: Path) -> dict[str, bytes]:
    """Every file a commit of `project` would hold, but Copier's answers file."""
    return {p: (project / p).read_bytes() for p in working_tree(project) if p != ANSWERS}


def edit_as_a_user(project: Path) -> None:
    """The user's edits, each of a part README says is theirs, then params.yaml composed."""
    with (project / "src/myproject/models/nets.py").open("a") as nets:
        nets.write(NET)
    conf = project / CONF_FILE
    assert CONF_FROM in conf.read_text(), f"{CONF_FILE} no longer says {CONF_FROM!r}"
    conf.write_text(conf.read_text().replace(CONF_FROM, CONF_TO))
    (project / "src/myproject/summary.py").write_text(STAGE_MODULE)
    dvc_yaml = project / "dvc.yaml"
    text = dvc_yaml.read_text()
    tail = text.index("\n# `dvc plots show`") + 1 if "\n# `dvc plots show`" in text else len(text)
    dvc_yaml.write_text(text[:tail] + STAGE + text[tail:])
    (project / "tests/test_my_network.py").write_text(USER_TEST)
    # params.yaml follows conf/ (a fast test checks it), composed by the project's own kit
    env = os.environ | {"PYTHONPATH": f"{project / 'kit'}:{project / 'src'}"}
    subprocess.run(
        [sys.executable, "-m", "mlpipeline.stages.compose"], cwd=project, env=env, check=True,
        capture_output=True,
    )  # fmt: skip


def markers(text: bytes | None) -> set[bytes]:
    """The lines of `text` that look like a merge's conflict markers."""
    return set(re.findall(rb"^(?:<<<<<<<|>>>>>>>) .*$", text or b"", re.MULTILINE))


def added_lines(before: bytes | None, after: bytes) -> list[bytes]:
    old = (before or b"").splitlines(keepends=True)
    return [
        line[1:]
        for line in difflib.diff_bytes(
            difflib.unified_diff, old, after.splitlines(keepends=True), n=0
        )
        if line.startswith(b"+") and not line.startswith(b"+++")
    ]


def test_a_users_project_takes_the_next_release_with_copier_update(tmp_path: Path) -> None:
    current = kit_version((ROOT / VERSION_FILE).read_text())
    assert current is not None
    found = previous_release(current)
    if found is None:
        pytest.skip(f"no release before {current} in this clone's history (a shallow clone?)")
    previous, old = found
    template = template_repository(tmp_path, previous, old, current)

    # a project from the previous release, in git, as Copier's update needs
    project = tmp_path / "my-project"
    copier("copy", "--trust", "--defaults", "--vcs-ref", f"v{old}", str(template), str(project),
           cwd=tmp_path)  # fmt: skip
    commit_all(project, "generated")
    generated = snapshot(project)
    edit_as_a_user(project)
    commit_all(project, "my network, my learning rate, my stage and its test")
    edited = snapshot(project)

    # the current release rendered afresh with the same answers: what the update must bring
    fresh = tmp_path / "fresh"
    copier("copy", "--trust", "--defaults", "--vcs-ref", f"v{current}", str(template), str(fresh),
           cwd=tmp_path)  # fmt: skip
    git(fresh, "init", "--quiet")
    released = snapshot(fresh)

    print(copier("update", "--trust", "--defaults", cwd=project))
    git(project, "add", "--all")
    print(f"what the user sees (v{old} -> v{current}):")
    print(git(project, "diff", "--cached", "--stat").decode())
    updated = snapshot(project)

    rejected = sorted(p for p in updated if p.endswith(".rej"))
    assert not rejected, rejected
    marked = sorted(p for p, text in updated.items() if markers(text) - markers(released.get(p)))
    assert not marked, f"conflict markers in {marked}"
    for path in sorted(generated.keys() | edited.keys() | released.keys() | updated.keys()):
        was, mine, theirs, got = (s.get(path) for s in (generated, edited, released, updated))
        if mine == was:  # the user never touched it: the release's version, or gone with it
            assert got == theirs, f"{path}: not the current release's"
        elif theirs == was:  # the release never touched it: the user's, byte for byte
            assert got == mine, f"{path}: the user's edit is lost"
        else:  # both changed it: every line the user added is there
            assert got is not None, f"{path}: removed, though the user edited it"
            lost = [line for line in added_lines(was, mine) if line not in got.splitlines(True)]
            assert not lost, f"{path}: the user's lines are lost: {lost}"
    kit = {p: b for p, b in updated.items() if p.startswith("kit/")}
    assert kit == {p: b for p, b in released.items() if p.startswith("kit/")}
    assert yaml.safe_load((project / ANSWERS).read_text())["_commit"] == f"v{current}"

    commit_all(project, f"copier update to v{current}")
    print(run(["make", "test"], cwd=project, timeout=MAKE_TIMEOUT_S)[-3000:])
