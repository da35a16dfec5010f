"""mlpipeline.git: the source URL that image labels and build arguments show."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mlpipeline.git import source_url


@pytest.mark.parametrize(
    ("origin", "shown"),
    [
        ("https://user:s3cret@github.com/owner/repo.git", "https://github.com/owner/repo"),
        ("https://s3cret-token@github.com/owner/repo", "https://github.com/owner/repo"),
        ("git@github.com:owner/repo.git", "https://github.com/owner/repo"),
        ("https://github.com/owner/repo.git", "https://github.com/owner/repo"),
    ],
)
def test_the_source_url_never_holds_the_clones_credentials(
    tmp_path: Path, origin: str, shown: str
) -> None:
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["git", "remote", "add", "origin", origin], cwd=tmp_path, check=True)
    assert source_url(tmp_path) == shown
