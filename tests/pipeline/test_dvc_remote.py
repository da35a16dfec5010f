"""DVC remote round trip: reproduce, `dvc push` to a remote, `git clone`, `dvc pull`; the
clone then has every output with the hashes of dvc.lock, and `dvc repro` runs nothing.

The local-directory remote is configured as the template's default would be: a path outside
the repository, committed in .dvc/config (relative to .dvc/, so every clone beside it shares
it). The S3 variant runs the same round trip against moto's S3-compatible server on loopback;
`moto[server]` and `dvc-s3` are pinned in uv.lock, so it runs wherever `make install-dev`
did (a missing package is an error, not a skip)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml
from helpers import UP_TO_DATE, run, s3_client, s3_env, stages_run

pytestmark = pytest.mark.slow

OUTPUTS = ["models/model.pt", "models/model.onnx", "data/prepared"]


def lock_md5(repo: Path) -> dict[str, str]:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {o["path"]: o["md5"] for s in lock["stages"].values() for o in s.get("outs", [])}


def md5_dir(path: Path) -> str:
    """DVC's hash of a directory: md5 of its .dir listing (relpath, md5), sorted by path."""
    entries = sorted(
        (p.relative_to(path).as_posix(), hashlib.md5(p.read_bytes()).hexdigest())
        for p in path.rglob("*")
        if p.is_file()
    )
    listing = "[" + ", ".join(f'{{"md5": "{m}", "relpath": "{r}"}}' for r, m in entries) + "]"
    return hashlib.md5(listing.encode()).hexdigest() + ".dir"


def md5_out(path: Path) -> str:
    return md5_dir(path) if path.is_dir() else hashlib.md5(path.read_bytes()).hexdigest()


def round_trip(
    repo: Path,
    clone: Path,
    configure: list[list[str]],
    configure_clone: Sequence[list[str]] = (),
    **env: str,
) -> None:
    """In `repo` (reproduced), run the `configure` commands, commit, push; clone, run
    `configure_clone` there (settings kept out of git), pull, and check the clone against
    dvc.lock: same hashes, nothing to reproduce, in sync with the remote."""
    for cmd in configure:
        run(cmd, repo, **env)
    run(["git", "add", "-A"], repo)
    # the default remote is committed already: the local-directory case changes nothing
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    run([*git, "commit", "-q", "--allow-empty", "-m", "remote"], repo)
    pushed = run(["dvc", "push"], repo, **env)
    assert "pushed" in pushed.stdout, pushed.stdout

    run(["git", "clone", "-q", str(repo), str(clone)], clone.parent)
    assert not (clone / "models/model.pt").exists()
    for cmd in configure_clone:
        run(cmd, clone, **env)
    run(["dvc", "pull"], clone, **env)
    recorded = lock_md5(clone)
    assert recorded == lock_md5(repo)
    for out in OUTPUTS:
        assert md5_out(clone / out) == recorded[out], out
    assert stages_run(run(["dvc", "repro"], clone, **env).stdout) == ["compose"]
    assert run(["dvc", "status"], clone, **env).stdout == UP_TO_DATE
    assert "in sync" in run(["dvc", "status", "--cloud"], clone, **env).stdout


def test_local_directory_remote_round_trip(tiny_repo: Path, tmp_path: Path) -> None:
    # from the repository root DVC stores this as `url = ../../dvc-storage` (relative to .dvc/):
    # a directory beside the repository, the same for every clone beside it
    add = ["dvc", "remote", "add", "--default", "--force", "storage", "../dvc-storage"]
    round_trip(tiny_repo, tmp_path / "clone", [add])
    assert (tmp_path / "dvc-storage/files/md5").is_dir()
    assert run(["dvc", "remote", "default"], tmp_path / "clone").stdout.strip() == "storage"


# S3-compatible: moto's standalone server on loopback (conftest.s3_server)


def test_s3_remote_round_trip(tiny_repo: Path, tmp_path: Path, s3_server: str) -> None:
    # pinned in uv.lock: if missing, fail here, never skip
    import dvc_s3  # noqa: F401  (without it `dvc push` to s3:// fails further in)

    env = s3_env(tmp_path)
    s3 = s3_client(s3_server)
    s3.create_bucket(Bucket="dvc-storage")
    configure = [
        ["dvc", "remote", "add", "--default", "--force", "storage", "s3://dvc-storage/mlpipeline"],
        # the one extra setting an S3-compatible (non-AWS) store needs; --local keeps it
        # out of git, so the clone sets it again
        ["dvc", "remote", "modify", "--local", "storage", "endpointurl", s3_server],
    ]
    endpoint = ["dvc", "remote", "modify", "--local", "storage", "endpointurl", s3_server]
    round_trip(tiny_repo, tmp_path / "clone", configure, [endpoint], **env)
    keys = s3.list_objects_v2(Bucket="dvc-storage", Prefix="mlpipeline/files/md5/")
    assert keys.get("KeyCount", 0) > 0
