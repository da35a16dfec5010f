"""The GitHub Actions workflows and the scripts they call.

No runner exists here, so the workflows stay thin: every `run:` step is a make target or a
script of this repository, and these tests run each script for real (a stand-in `docker`
records registry commands, a local HTTP server plays GitHub's REST API).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import ROOT, run

WORKFLOWS = sorted((ROOT / ".github/workflows").glob("*.yml"))
SCRIPTS = ROOT / "scripts"
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")
VERSION_COMMENT = re.compile(r"#\s*v\d+\.\d+\.\d+\s*$")
MAKE_TARGET = re.compile(r"^([a-z][a-z-]*):", re.MULTILINE)
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the key `on` as the boolean true
    data["on"] = data.pop(True, data.get("on"))
    return data


def steps(workflow: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for job_id, job in workflow["jobs"].items():
        for step in job.get("steps", []):
            yield job_id, step


def run_commands() -> list[tuple[str, str]]:
    return [(p.name, s["run"]) for p in WORKFLOWS for _, s in steps(load(p)) if "run" in s]


def test_the_three_workflows_exist() -> None:
    assert {p.name for p in WORKFLOWS} == {"ci.yml", "retrain.yml", "deploy.yml"}


def test_every_run_step_is_one_make_target_or_repository_script() -> None:
    targets = set(MAKE_TARGET.findall((ROOT / "Makefile").read_text()))
    commands = run_commands()
    assert commands
    for name, command in commands:
        assert "\n" not in command.strip(), f"{name}: multi-line run step: {command!r}"
        assert "${{" not in command, f"{name}: expression inside a run step: {command!r}"
        words = shlex.split(command)
        if words[0] == "make":
            goals = [w for w in words[1:] if "=" not in w and not w.startswith("-")]
            assert goals and set(goals) <= targets, f"{name}: {command!r}: unknown make target"
        else:
            script = ROOT / words[0]
            assert words[0].startswith("scripts/"), f"{name}: {command!r} is no make/script call"
            assert script.is_file() and os.access(script, os.X_OK), f"{script} not executable"


def test_scripts_the_workflows_call_are_run_by_the_tests() -> None:
    """.ci/run runs `make lint` and `make test`: a script nobody runs here could rot unseen."""
    tests = "".join(p.read_text() for p in (ROOT / "tests").rglob("test_*.py"))
    makefile = (ROOT / "Makefile").read_text()
    for name, command in run_commands():
        first = shlex.split(command)[0]
        if first.startswith("scripts/"):
            assert f'"{Path(first).name}"' in tests or first in makefile, f"{name}: {first}"


def test_workflows_are_hardened() -> None:
    for path in WORKFLOWS:
        text, workflow = path.read_text(), load(path)
        assert "pull_request_target" not in text, path.name
        assert workflow["permissions"] == {}, f"{path.name}: top-level permissions must be {{}}"
        assert "concurrency" in workflow, path.name
        for job_id, job in workflow["jobs"].items():
            assert "timeout-minutes" in job, f"{path.name}: job {job_id} has no timeout"
            assert "permissions" in job, f"{path.name}: job {job_id} has no permissions"
        for job_id, step in steps(workflow):
            uses = step.get("uses")
            if not uses:
                continue
            assert PINNED.match(uses), f"{path.name}/{job_id}: {uses} not pinned by commit"
            line = next(line for line in text.splitlines() if f"uses: {uses}" in line)
            assert VERSION_COMMENT.search(line), f"{path.name}: {uses} lacks a # vX.Y.Z comment"
            if uses.startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False, f"{path.name}/{job_id}"


def test_retrain_triggers_and_fork_safety() -> None:
    workflow = load(ROOT / ".github/workflows/retrain.yml")
    assert set(workflow["on"]["pull_request"]["paths"]) == {
        "conf/**",
        "params.yaml",
        "dvc.yaml",
        "dvc.lock",
        "src/**",
        "**/*.dvc",
    }
    comment = workflow["jobs"]["comment"]
    assert comment["continue-on-error"] is True
    assert "github.event.pull_request.head.repo.full_name == github.repository" in comment["if"]
    assert workflow["jobs"]["retrain"]["permissions"].get("pull-requests") is None


# --- scripts/lint-workflows.sh ------------------------------------------------------------


def test_workflow_linters_report_findings(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "name: bad\non: pull_request\npermissions: {}\njobs:\n  a:\n    name: a\n"
        "    runs-on: ubuntu-latest\n    steps:\n      - uses: actions/checkout@v4\n"
        '      - run: echo "${{ github.event.pull_request.title }}"\n'
    )
    proc = run([str(SCRIPTS / "lint-workflows.sh"), str(bad)], tmp_path, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "potentially untrusted" in out  # actionlint
    assert "template-injection" in out and "unpinned-uses" in out  # zizmor


# --- scripts/dvc-remote.sh ----------------------------------------------------------------


@pytest.fixture
def dvc_repo(tmp_path: Path) -> Path:
    """A git + DVC repository tracking one small file, committed."""
    repo = tmp_path / "origin"
    repo.mkdir()
    run(["git", "init", "-q"], repo)
    run(["dvc", "init", "-q"], repo)
    (repo / "data.txt").write_text("some data\n")
    run(["dvc", "add", "-q", "data.txt"], repo)
    run(["git", "add", "-A"], repo)
    run([*GIT, "commit", "-qm", "data"], repo)
    return repo


def remote_script(repo: Path, *args: str, **env: str):
    base = {"DVC_REMOTE_URL": "", "HAS_OIDC_ROLE": "", "HAS_STATIC_KEYS": "", "GITHUB_OUTPUT": ""}
    return run([str(SCRIPTS / "dvc-remote.sh"), *args], repo, check=False, **{**base, **env})


@pytest.mark.parametrize(
    ("env", "pull", "oidc", "says"),
    [
        ({}, "false", "false", "no DVC remote configured"),
        ({"DVC_REMOTE_URL": "s3://bucket/dvc"}, "false", "false", "no credentials"),
        ({"DVC_REMOTE_URL": "s3://bucket/dvc", "HAS_OIDC_ROLE": "true"}, "true", "true", "OIDC"),
        ({"DVC_REMOTE_URL": "s3://b/d", "HAS_STATIC_KEYS": "true"}, "true", "false", "keys"),
        ({"DVC_REMOTE_URL": "s3://b/d", "HAS_STATIC_KEYS": "false"}, "false", "false", "fork"),
    ],
)
def test_remote_plan(dvc_repo: Path, tmp_path: Path, env, pull, oidc, says) -> None:
    output = tmp_path / "github_output"
    proc = remote_script(dvc_repo, "plan", GITHUB_OUTPUT=str(output), **env)
    assert proc.returncode == 0, proc.stderr
    assert says in proc.stdout
    assert output.read_text() == f"pull={pull}\noidc={oidc}\n"


def test_remote_plan_reads_the_committed_default_remote(dvc_repo: Path, tmp_path: Path) -> None:
    run(["dvc", "remote", "add", "-d", "store", "s3://bucket/dvc"], dvc_repo)
    assert "pull=false" in remote_script(dvc_repo, "plan").stdout
    assert "pull=true" in remote_script(dvc_repo, "plan", HAS_STATIC_KEYS="true").stdout
    run(["dvc", "remote", "modify", "store", "url", str(tmp_path / "store")], dvc_repo)
    assert "pull=true" in remote_script(dvc_repo, "plan").stdout  # a local path needs no keys


def test_remote_pull_restores_outputs_in_a_fresh_clone(dvc_repo: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    run(["dvc", "remote", "add", "--local", "tmp", str(store)], dvc_repo)
    run(["dvc", "push", "-r", "tmp"], dvc_repo)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(dvc_repo), str(clone)], tmp_path)
    assert not (clone / "data.txt").exists()

    proc = remote_script(clone, "pull", DVC_REMOTE_URL=str(store))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (clone / "data.txt").read_text() == "some data\n"
    assert "ci" in (clone / ".dvc/config.local").read_text()  # not in the tracked config
    assert run(["git", "status", "--porcelain"], clone).stdout == ""


def test_remote_pull_failure_is_a_warning_and_skipped_pulls_do_nothing(
    dvc_repo: Path, tmp_path: Path
) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    (dvc_repo / "data.txt").unlink()
    shutil.rmtree(dvc_repo / ".dvc/cache")
    proc = remote_script(dvc_repo, "pull", DVC_REMOTE_URL=str(not_a_dir))
    assert proc.returncode == 0
    assert "::warning title=dvc pull failed::" in proc.stdout

    proc = remote_script(dvc_repo, "pull", DVC_REMOTE_URL="s3://bucket/dvc")
    assert proc.returncode == 0 and "rebuilding from the source" in proc.stdout
    assert not (dvc_repo / "data.txt").exists()


# --- scripts/registry.sh ------------------------------------------------------------------

SHA = "0123456789abcdef0123456789abcdef01234567"
ONNX_MD5 = "7a84818aff1028f04265e31d3f944276"


@pytest.fixture
def fake_docker(tmp_path: Path) -> Path:
    """A `docker` that logs its arguments (one call a line) and succeeds."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "docker.log"
    docker = bin_dir / "docker"
    docker.write_text(f'#!/bin/sh\necho "$*" >> {shlex.quote(str(log))}\n')
    docker.chmod(0o755)
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


def test_push_tags_and_pushes_each_reference(tmp_path: Path, fake_docker: Path) -> None:
    version = {"GITHUB_REF_TYPE": "tag", "GITHUB_REF_NAME": "v2.0.0"}
    proc = registry(tmp_path, fake_docker, "push", IMAGE_TAG="serve:ci", **version)
    assert proc.returncode == 0, proc.stderr
    image = "ghcr.io/some-org/ml-repo"
    refs = [f"{image}:{SHA}", f"{image}:model-{ONNX_MD5}", f"{image}:v2.0.0"]
    calls = (tmp_path / "docker.log").read_text().splitlines()
    assert calls == [
        "image inspect serve:ci",
        *(call for ref in refs for call in (f"tag serve:ci {ref}", f"push {ref}")),
    ]


def test_promote_retags_this_commits_image(tmp_path: Path, fake_docker: Path) -> None:
    assert registry(tmp_path, fake_docker, "promote", "production").returncode == 0
    image = "ghcr.io/some-org/ml-repo"
    assert (tmp_path / "docker.log").read_text().splitlines() == [
        f"pull {image}:{SHA}",
        f"tag {image}:{SHA} {image}:production",
        f"push {image}:production",
    ]
    bad = registry(tmp_path, fake_docker, "promote", "prod/uction")
    assert bad.returncode == 1 and "usage" in bad.stderr


# --- scripts/publish_report.py --------------------------------------------------------------


class FakeGitHub(BaseHTTPRequestHandler):
    """The issue-comment endpoints of GitHub's REST API, kept in memory."""

    comments: list[dict[str, Any]]
    requests: list[tuple[str, str]]
    refuse_writes: bool = False

    def log_message(self, *args: object) -> None:
        pass

    def _reply(self, code: int, payload: object) -> None:
        body = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> dict[str, Any]:
        return json.loads(self.rfile.read(int(self.headers["Content-Length"])))

    def do_GET(self) -> None:
        self.requests.append(("GET", self.path))
        page = int(re.search(r"[?&]page=(\d+)", self.path)[1])
        self._reply(200, self.comments[(page - 1) * 100 : page * 100])

    def do_POST(self) -> None:
        self.requests.append(("POST", self.path))
        if self.refuse_writes:
            return self._reply(403, {"message": "Resource not accessible by integration"})
        comment = {"id": 1000 + len(self.comments), "body": self._body()["body"]}
        self.comments.append(comment)
        self._reply(201, comment)

    def do_PATCH(self) -> None:
        self.requests.append(("PATCH", self.path))
        comment_id = int(self.path.rsplit("/", 1)[1])
        comment = next(c for c in self.comments if c["id"] == comment_id)
        comment["body"] = self._body()["body"]
        self._reply(200, comment)


@pytest.fixture
def github() -> Iterator[tuple[str, type[FakeGitHub]]]:
    handler = type("Handler", (FakeGitHub,), {"comments": [], "requests": []})
    # other people's comments, more than one page of them
    handler.comments.extend({"id": i, "body": f"comment {i}"} for i in range(150))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", handler
    server.shutdown()
    server.server_close()


def report_dir(tmp_path: Path, text: str) -> Path:
    out = tmp_path / "pr"
    out.mkdir(exist_ok=True)
    (out / "report.md").write_text(text)
    return out


def publish(tmp_path: Path, *args: str, **env: str):
    actions = {
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_REPOSITORY": "org/repo",
        "GITHUB_RUN_ID": "42",
        "GITHUB_TOKEN": "token",
        "PR_NUMBER": "7",
    }
    cmd = [sys.executable, str(SCRIPTS / "publish_report.py"), *args]
    return run(cmd, tmp_path, check=False, **{**actions, **env})


def test_comment_is_created_once_then_updated(tmp_path: Path, github) -> None:
    api, handler = github
    first = report_dir(tmp_path, "# Report\n\n| a | b |\n\n![Confusion matrix](confusion.png)\n")
    proc = publish(tmp_path, "comment", str(first), GITHUB_API_URL=api)
    assert proc.returncode == 0, proc.stderr
    assert "created comment 1150 on #7" in proc.stdout
    body = handler.comments[-1]["body"]
    assert body.startswith("<!-- mlpipeline-pr-report -->") and "| a | b |" in body
    assert "![" not in body and "- Confusion matrix: `confusion.png`" in body
    assert "https://github.com/org/repo/actions/runs/42" in body

    report_dir(tmp_path, "# Report\n\nsecond push\n")
    proc = publish(tmp_path, "comment", str(first), GITHUB_API_URL=api)
    assert "updated comment 1150 on #7" in proc.stdout
    assert len(handler.comments) == 151 and "second push" in handler.comments[-1]["body"]
    assert [c["body"] for c in handler.comments[:150]] == [f"comment {i}" for i in range(150)]
    assert ("GET", "/repos/org/repo/issues/7/comments?per_page=100&page=2") in handler.requests
    assert handler.requests[-1] == ("PATCH", "/repos/org/repo/issues/comments/1150")


def test_missing_report_replaces_the_comment_with_a_notice(tmp_path: Path, github) -> None:
    api, handler = github
    publish(tmp_path, "comment", str(report_dir(tmp_path, "# old numbers\n")), GITHUB_API_URL=api)
    proc = publish(tmp_path, "comment", str(tmp_path / "absent"), GITHUB_API_URL=api)
    assert proc.returncode == 0, proc.stderr
    assert "No report was written" in handler.comments[-1]["body"]
    assert "old numbers" not in handler.comments[-1]["body"]


def test_refused_comment_is_one_line_and_exit_1(tmp_path: Path, github) -> None:
    api, handler = github
    handler.refuse_writes = True
    proc = publish(tmp_path, "comment", str(report_dir(tmp_path, "# r\n")), GITHUB_API_URL=api)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: POST ") and "HTTP 403" in proc.stderr
    assert "read-only token" in proc.stderr and len(proc.stderr.splitlines()) == 1
    missing = publish(tmp_path, "comment", str(tmp_path), GITHUB_TOKEN="", GITHUB_API_URL=api)
    assert missing.returncode == 1 and "GITHUB_TOKEN not set" in missing.stderr


def test_summary_appends_the_report(tmp_path: Path) -> None:
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    out = report_dir(tmp_path, "# Report\n\n![Curves](curves.png)\n")
    proc = publish(tmp_path, "summary", str(out), GITHUB_STEP_SUMMARY=str(summary))
    assert proc.returncode == 0, proc.stderr
    text = summary.read_text()
    assert text.startswith("earlier step\n") and "- Curves: `curves.png`" in text
    assert "`pr-report` artifact" in text
    outside = publish(tmp_path, "summary", str(out), GITHUB_STEP_SUMMARY="")
    assert outside.returncode == 1 and "GITHUB_STEP_SUMMARY is not set" in outside.stderr
