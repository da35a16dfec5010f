"""The serving image's release: deploy.yml's jobs and the scripts that build and ship the
image (scripts/registry.sh, scripts/build-image.sh), run for real with a stand-in `docker`. A
project made without the serving image has none of them, nor this file.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from pathlib import Path

import pytest
from helpers import ROOT, run
from test_workflows import SCRIPTS, load


def test_release_jobs_hold_only_what_they_need() -> None:
    """The release design: an unprivileged build, a small publish job that pushes by digest
    and attests, production promoting that digest once its attestation verifies."""
    workflow = load(ROOT / ".github/workflows/deploy.yml")
    jobs = workflow["jobs"]
    assert workflow["concurrency"] == {
        "group": "${{ github.workflow }}-${{ github.sha }}",
        "cancel-in-progress": False,
    }
    assert {name: job["permissions"] for name, job in jobs.items()} == {
        "model": {"contents": "read", "id-token": "write"},
        "build": {"contents": "read"},
        "publish": {"packages": "write", "id-token": "write", "attestations": "write"},
        "production": {"contents": "read", "packages": "write", "attestations": "read"},
    }
    assert [jobs[n].get("needs") for n in ("build", "publish", "production")] == [
        "model",
        "build",
        "publish",
    ]
    # the keys live in an environment; only the model job (the one that pulls) enters it
    assert jobs["model"]["environment"] == "release"
    deploy = (ROOT / ".github/workflows/deploy.yml").read_text()
    users = [n for n, j in jobs.items() if "secrets.AWS_" in json.dumps(j)]
    assert users == ["model"] and "secrets.AWS_ROLE_ARN" not in deploy
    # publish runs no code of the repository's but the pushing script handed on by build
    publish = [s.get("uses", s.get("run", "")) for s in jobs["publish"]["steps"]]
    assert not any(str(u).startswith("actions/checkout@") for u in publish)
    assert "bash scripts/registry.sh push-oci image.tar" in publish
    attest = next(
        s for s in jobs["publish"]["steps"] if "attest-build-provenance" in s.get("uses", "")
    )
    assert attest["with"] == {
        "subject-name": "${{ steps.push.outputs.image }}",
        "subject-digest": "${{ steps.push.outputs.digest }}",
        "push-to-registry": True,
    }
    promote = next(s for s in jobs["production"]["steps"] if "promote" in s.get("run", ""))
    assert promote["env"]["DIGEST"] == "${{ needs.publish.outputs.digest }}"
    assert jobs["production"]["environment"] == "production"
    assert "startsWith(github.ref, 'refs/tags/v')" in jobs["production"]["if"]
    build = [s.get("run", "") for s in jobs["build"]["steps"]]
    assert "scripts/build-image.sh image.tar" in build and "make check-image" in build


# --- scripts/registry.sh ------------------------------------------------------------------

SHA = "0123456789abcdef0123456789abcdef01234567"
ONNX_MD5 = "7a84818aff1028f04265e31d3f944276"


DIGEST = "sha256:" + "ab" * 32


@pytest.fixture
def fake_tools(tmp_path: Path) -> Path:
    """`skopeo` and `gh` that log their arguments (one call a line) and succeed; `skopeo
    inspect` prints DIGEST, and `gh` fails when FAKE_GH_FAILS is set."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = shlex.quote(str(tmp_path / "calls.log"))
    (bin_dir / "skopeo").write_text(
        f'#!/bin/sh\necho "skopeo $*" >> {log}\n[ "$1" = inspect ] && echo {DIGEST}\nexit 0\n'
    )
    (bin_dir / "gh").write_text(f'#!/bin/sh\necho "gh $*" >> {log}\n[ -z "$FAKE_GH_FAILS" ]\n')
    for tool in ("skopeo", "gh"):
        (bin_dir / tool).chmod(0o755)
    return bin_dir


def registry(tmp_path: Path, bin_dir: Path | None, *args: str, **env: str):
    card = tmp_path / "card.json"
    if not card.exists():
        card.write_text(json.dumps({"hashes": {"onnx": ONNX_MD5}}))
    path = f"{bin_dir}:{os.environ['PATH']}" if bin_dir else os.environ["PATH"]
    base = {
        "GITHUB_SHA": SHA,
        "GITHUB_REPOSITORY": "Some-Org/ML-Repo",
        "GITHUB_REF_TYPE": "branch",
        "GITHUB_REF_NAME": "main",
        "MODEL_CARD": str(card),
        "REGISTRY_IMAGE": "",
        "PATH": path,
    }
    return run([str(SCRIPTS / "registry.sh"), *args], tmp_path, check=False, **{**base, **env})


def test_image_tags_commit_model_and_version(tmp_path: Path) -> None:
    image = "ghcr.io/some-org/ml-repo"  # registries want lower case
    main = registry(tmp_path, None, "tags")
    assert main.stdout.split() == [f"{image}:{SHA}", f"{image}:model-{ONNX_MD5}"]
    tag = registry(tmp_path, None, "tags", GITHUB_REF_TYPE="tag", GITHUB_REF_NAME="v1.2.0")
    assert tag.stdout.split()[-1] == f"{image}:v1.2.0"
    other = registry(tmp_path, None, "tags", REGISTRY_IMAGE="registry.example.com/team/app")
    assert other.stdout.split()[0] == f"registry.example.com/team/app:{SHA}"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GITHUB_REF_TYPE": "tag", "GITHUB_REF_NAME": "v1/$(id)"}, "not a valid image tag"),
        ({"MODEL_CARD": "/nonexistent/card.json"}, "reproduce or pull the model first"),
        ({"GITHUB_SHA": "main"}, "not a 40-character commit hash"),
        ({"GITHUB_REPOSITORY": ""}, "set REGISTRY_IMAGE"),
    ],
)
def test_image_tags_refuse_bad_input(tmp_path: Path, env: dict[str, str], message: str) -> None:
    proc = registry(tmp_path, None, "tags", **env)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith("error: ") and message in proc.stderr
    assert len(proc.stderr.splitlines()) == 1


def test_push_oci_pushes_the_archive_by_digest_under_each_tag(
    tmp_path: Path, fake_tools: Path
) -> None:
    archive = tmp_path / "image.tar"
    archive.write_bytes(b"oci")
    output = tmp_path / "github_output"
    version = {"GITHUB_REF_TYPE": "tag", "GITHUB_REF_NAME": "v2.0.0", "GITHUB_OUTPUT": str(output)}
    proc = registry(tmp_path, fake_tools, "push-oci", str(archive), **version)
    assert proc.returncode == 0, proc.stderr
    image = "ghcr.io/some-org/ml-repo"
    assert proc.stdout.strip() == f"{image}@{DIGEST}"
    refs = [f"{image}:{SHA}", f"{image}:model-{ONNX_MD5}", f"{image}:v2.0.0"]
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert calls == [
        *(
            f"skopeo copy --quiet --preserve-digests oci-archive:{archive} docker://{r}"
            for r in refs
        ),
        f"skopeo inspect --format {{{{.Digest}}}} docker://{refs[0]}",
    ]
    assert output.read_text() == f"digest={DIGEST}\nimage={image}\n"
    missing = registry(tmp_path, fake_tools, "push-oci", str(tmp_path / "none.tar"))
    assert missing.returncode == 1 and "not found" in missing.stderr


def test_promote_tags_the_digest_only_once_its_attestation_verifies(
    tmp_path: Path, fake_tools: Path
) -> None:
    image = "ghcr.io/some-org/ml-repo"
    proc = registry(tmp_path, fake_tools, "promote", "production", DIGEST=DIGEST)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "calls.log").read_text().splitlines() == [
        f"gh attestation verify oci://{image}@{DIGEST} --repo Some-Org/ML-Repo",
        f"skopeo copy --quiet --preserve-digests docker://{image}@{DIGEST} docker://{image}:production",
    ]
    (tmp_path / "calls.log").unlink()
    unverified = registry(
        tmp_path, fake_tools, "promote", "production", DIGEST=DIGEST, FAKE_GH_FAILS="1"
    )
    assert unverified.returncode == 1 and "not promoted" in unverified.stderr
    assert "skopeo" not in (tmp_path / "calls.log").read_text()
    for bad in ({"DIGEST": "latest"}, {"DIGEST": DIGEST, "NAME": ""}):
        name = bad.pop("NAME", "production") or "prod/uction"
        proc = registry(tmp_path, fake_tools, "promote", name, **bad)
        assert proc.returncode == 1 and proc.stderr.startswith("error: ")


# --- scripts/build-image.sh -----------------------------------------------------------------


def test_build_image_builds_with_buildkit_and_prints_the_archive_digest(tmp_path: Path) -> None:
    """A stand-in `docker` (no BuildKit here) logs the calls; for the OCI export it writes an
    archive whose index names DIGEST, which the script must print."""
    from helpers import export_tiny_model

    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy2(ROOT / "Dockerfile", repo / "Dockerfile")
    shutil.copy2(SCRIPTS / "build-image.sh", repo / "scripts/build-image.sh")
    export_tiny_model(repo / "models")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "docker.log"
    (bin_dir / "docker").write_text(
        "#!/usr/bin/env python3\nimport io, json, sys, tarfile\n"
        f"open({str(log)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
        "out = [a.split('dest=', 1)[1] for a in sys.argv if a.startswith('type=oci,dest=')]\n"
        "if out:\n"
        f"    index = json.dumps({{'manifests': [{{'digest': {DIGEST!r}}}]}}).encode()\n"
        "    with tarfile.open(out[0], 'w') as tar:\n"
        "        info = tarfile.TarInfo('index.json'); info.size = len(index)\n"
        "        tar.addfile(info, io.BytesIO(index))\n"
        "sys.exit(1 if sys.argv[1:3] == ['buildx', 'inspect'] else 0)\n"
    )
    (bin_dir / "docker").chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "VENV": sys.prefix, "IMAGE_TAG": "serve:ci"}
    env["BASE_IMAGE"] = ""  # the Dockerfile's own default, whatever this machine sets
    proc = run(["scripts/build-image.sh", str(tmp_path / "image.tar")], repo, check=False, **env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == DIGEST
    calls = log.read_text().splitlines()
    assert calls[:3] == [
        "buildx version",
        "buildx inspect mlpipeline-release",
        "buildx create --name mlpipeline-release --driver docker-container",
    ]
    load, oci = calls[3:]
    assert "--load" in load and "--tag serve:ci" in load
    assert "--sbom=true --provenance=mode=max" in oci and f"dest={tmp_path}/image.tar" in oci
    for call in (load, oci):
        assert "--build-arg BASE_IMAGE=python:3.11-slim@sha256:" in call
        assert "--build-arg MODEL_MD5=" in call
