"""The one place that asks git about the working tree: commit, dirtiness, origin URL."""

from __future__ import annotations

import subprocess
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit


def git(root: Path, *args: str, strip: bool = True) -> str:
    """Output of `git <args>` in `root`; raises OSError or CalledProcessError (with stderr)."""
    out = subprocess.run(
        ["git", *args], cwd=root, capture_output=True, text=True, check=True
    ).stdout
    return out.strip() if strip else out


def revision(root: Path) -> str:
    """HEAD's commit, with `-dirty` when tracked files differ from it; `unknown` outside git."""
    try:
        commit = git(root, "rev-parse", "HEAD")
        dirty = git(root, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def state(root: Path) -> dict[str, str | bool | None]:
    """Commit and dirtiness (untracked files included) for MLflow tags; 'unknown' outside git."""
    try:
        return {
            "commit": git(root, "rev-parse", "HEAD"),
            "dirty": bool(git(root, "status", "--porcelain")),
        }
    except (OSError, subprocess.CalledProcessError):
        return {"commit": "unknown", "dirty": None}


def source_url(root: Path) -> str:
    """The `origin` remote as an https URL (OCI's image.source), else `unknown`; without the
    credentials a clone URL may hold (`https://user:token@host/...`), as it ends up in image
    labels and printed build arguments."""
    try:
        url = git(root, "remote", "get-url", "origin")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    if url.startswith("git@") and ":" in url:
        host, path = url[4:].split(":", 1)
        url = f"https://{host}/{path}"
    parts = urlsplit(url)
    if parts.scheme and "@" in parts.netloc:
        url = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    return url.removesuffix(".git")
