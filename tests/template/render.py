"""Render this repository as Copier's template, for the template's own tests and for
`make template`. The template is a temporary git repository holding the working tree (tracked
files and untracked ones git does not ignore), committed, so that Copier renders what is on disk
now from a clean HEAD.

    python tests/template/render.py   # write each twin's plain file: its default rendering

Imports the standard library and copier alone: it runs before anything else is installed."""

from __future__ import annotations

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


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=template", "-c", "user.email=template@localhost", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )


def template_copy(dest: Path, root: Path = ROOT) -> Path:
    """A git repository at `dest` holding root's working tree in one commit; `dest`."""
    for name in working_tree(root):
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, dest / name)
    _git(dest, "init", "-q", "-b", "main")
    _git(dest, "add", "-A")
    _git(dest, "commit", "-q", "--no-verify", "-m", "template")
    return dest


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
