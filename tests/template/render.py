"""Render this repository as Copier's template, for the template's own tests and for
`make template`. The template is a temporary git repository holding the working tree (tracked
files and untracked ones git does not ignore), committed, so that Copier renders what is on disk
now from a clean HEAD.

    python tests/template/render.py   # write each twin's plain file: its default rendering

Imports the standard library and copier alone: it runs before anything else is installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SUFFIX = ".jinja"
ANSWERS = ".copier-answers.yml"
# the template's own files, never rendered: copier.yml, these tests, the CI machine's script,
# the twins (X.jinja renders to X) and the answers file's template
OWN_DIRS = ("tests/template/", ".ci/")
OWN_FILES = ("copier.yml",)


def working_tree(root: Path = ROOT) -> list[str]:
    """The files of root's working tree git knows or would add: tracked ones that exist, and
    untracked ones that are not ignored, as sorted relative POSIX paths."""
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sorted({name for name in listing.split("\0") if name and (root / name).is_file()})


def is_template_own(name: str) -> bool:
    """Whether a file of the template is the template's own: never copied into a project."""
    return name in OWN_FILES or name.endswith(SUFFIX) or name.startswith(OWN_DIRS)


def twins(root: Path = ROOT) -> list[str]:
    """The plain files that have a templated twin X.jinja beside them."""
    return [
        name[: -len(SUFFIX)]
        for name in working_tree(root)
        if name.endswith(SUFFIX) and (root / name[: -len(SUFFIX)]).is_file()
    ]


GIT_ID = {
    "GIT_AUTHOR_NAME": "template test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "template test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
}


def git(repo: Path, *args: str) -> bytes:
    """git in `repo` with a fixed identity; its stdout, or an error with git's message."""
    proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, env=os.environ | GIT_ID)
    if proc.returncode:
        raise RuntimeError(f"git {' '.join(args)}: {proc.stderr.decode()[-2000:]}")
    return proc.stdout


def commit_all(repo: Path, message: str) -> None:
    """Commit every file of `repo`, a git repository made first if it is none yet."""
    if not (repo / ".git").exists():
        git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "--all")
    git(repo, "commit", "-q", "--no-verify", "-m", message)


def copy_tree(dest: Path, root: Path = ROOT) -> None:
    """Copy root's working tree (`working_tree`) into `dest`."""
    for name in working_tree(root):
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, dest / name, follow_symlinks=False)


def template_copy(dest: Path, root: Path = ROOT) -> Path:
    """A git repository at `dest` holding root's working tree in one commit; `dest`."""
    copy_tree(dest, root)
    commit_all(dest, "template")
    return dest


def as_a_user(cmd: list[str], cwd: Path, timeout: int) -> subprocess.CompletedProcess:
    """Run `cmd` in a project as its user would: without this test run's variables (pytest's,
    the venv's, MLflow's, the template's own make's flags); TORCH_INDEX passes through."""
    own = ("PYTEST_", "MLFLOW_", "VIRTUAL_ENV")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(own) and k not in {"PYTHONPATH", "MAKEFLAGS", "MFLAGS", "MAKELEVEL"}
    }
    return subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env | GIT_ID
    )


def render(template: Path, dest: Path, answers: Mapping[str, object] | None = None) -> Path:
    """`copier copy --defaults --trust --vcs-ref HEAD` of `template` into `dest`, the answers
    given in `answers` and every other one its default; `dest`."""
    from copier import run_copy

    run_copy(
        str(template),
        dest,
        data=dict(answers or {}),
        defaults=True,
        unsafe=True,
        vcs_ref="HEAD",
        quiet=True,
    )
    return dest


def project_files(project: Path) -> list[str]:
    """A rendered project's files as sorted relative POSIX paths."""
    return sorted(p.relative_to(project).as_posix() for p in project.rglob("*") if p.is_file())


def write_twins(root: Path = ROOT) -> list[str]:
    """Rewrite each twin's plain file in `root` with its default rendering; the files changed."""
    with tempfile.TemporaryDirectory(prefix="template-") as tmp:
        project = render(template_copy(Path(tmp) / "template", root), Path(tmp) / "project")
        changed = []
        for name in twins(root):
            rendered = (project / name).read_bytes()
            if (root / name).read_bytes() != rendered:
                (root / name).write_bytes(rendered)
                changed.append(name)
    return changed


def main() -> int:
    """`make template`: write the twins' plain files and name those that changed."""
    changed = write_twins()
    print(f"rewrote {', '.join(changed)}" if changed else "every twin's plain file is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
