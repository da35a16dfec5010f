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
import subprocess
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


def test_every_run_step_is_one_make_target_or_repository_script() -> None:
    targets = set(MAKE_TARGET.findall((ROOT / "Makefile").read_text()))
    commands = run_commands()
    assert commands
    for name, command in commands:
        assert "\n" not in command.strip(), f"{name}: multi-line run step: {command!r}"
        assert "${{" not in command, f"{name}: expression inside a run step: {command!r}"
        words = shlex.split(command)
        if words[0] == "bash":  # a script from an artifact, which keeps no file modes
            words = words[1:]
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
        words = shlex.split(command)
        first = words[1] if words[0] == "bash" else words[0]
        if first.startswith("scripts/"):
            assert f'"{Path(first).name}"' in tests or first in makefile, f"{name}: {first}"


def test_ci_runs_the_fast_tier_on_every_python_and_everything_on_one() -> None:
    jobs = load(ROOT / ".github/workflows/ci.yml")["jobs"]

    def runs(job: dict[str, Any]) -> list[str]:
        return [s["run"] for s in job["steps"] if "run" in s]

    def python(job: dict[str, Any]) -> str:
        (setup,) = [s for s in job["steps"] if str(s.get("uses")).startswith("actions/setup-py")]
        return str(setup["with"]["python-version"])

    assert "make test" in runs(jobs["test"]) and "make test-all" in runs(jobs["test-all"])
    assert python(jobs["test"]) == "${{ matrix.python }}"
    pythons = {*jobs["test"]["strategy"]["matrix"]["python"], python(jobs["test-all"])}
    assert pythons == {"3.10", "3.11", "3.12"}
    required = jobs["test-all"]["env"]
    assert {k for k, v in required.items() if v == "1"} >= {
        "MLPIPELINE_REQUIRE_DOCKER", "MLPIPELINE_REQUIRE_PROMETHEUS",
    }  # fmt: skip


def test_workflows_are_hardened() -> None:
    for path in WORKFLOWS:
        text, workflow = path.read_text(), load(path)
        assert "pull_request_target" not in text, path.name
        assert workflow["permissions"] == {}, f"{path.name}: top-level permissions must be {{}}"
        assert "concurrency" in workflow, path.name
        for job_id, job in workflow["jobs"].items():
            assert "timeout-minutes" in job, f"{path.name}: job {job_id} has no timeout"
            assert "permissions" in job, f"{path.name}: job {job_id} has no permissions"
            checks_out = any(
                str(s.get("uses", "")).startswith("actions/checkout@") for s in job["steps"]
            )
            if checks_out:
                assert job["permissions"].get("contents") == "read", f"{path.name}/{job_id}"
            assert "ubuntu-latest" not in str(job.get("runs-on")), f"{path.name}/{job_id}"
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
        "kit/**",
        "**/*.dvc",
        "uv.lock",
        "pyproject.toml",
    }
    comment = workflow["jobs"]["comment"]
    assert comment["continue-on-error"] is True
    assert "github.event.pull_request.head.repo.full_name == github.repository" in comment["if"]
    assert workflow["jobs"]["retrain"]["permissions"].get("pull-requests") is None
    # pull requests never see long-lived keys: no secret but the job's own token
    retrain = (ROOT / ".github/workflows/retrain.yml").read_text()
    assert set(re.findall(r"secrets\.(\w+)", retrain)) == {"GITHUB_TOKEN"}
    report = next(s for _, s in steps(workflow) if s.get("run") == "make report")
    assert report["env"] == {"BASE": "origin/${{ github.base_ref }}"}


def step_env(
    step: dict[str, Any], context: dict[str, str], job_env: dict[str, str]
) -> dict[str, str]:
    """The environment GitHub Actions gives a step: the job's (GITHUB_ENV included), then the
    step's `env`, where an unset secret or variable is an empty string."""
    env = dict(job_env)
    for key, value in (step.get("env") or {}).items():
        value = str(value)
        if match := re.fullmatch(r"\$\{\{ ((?:secrets|vars)\.\w+) \}\}", value):
            value = context.get(match[1], "")
        elif match := re.fullmatch(r"\$\{\{ ((?:secrets|vars)\.\w+) != '' \}\}", value):
            value = "true" if context.get(match[1]) else "false"
        env[key] = value
    return env


# deploy.yml comes with the serving image (a project without it has retrain.yml alone)
@pytest.mark.parametrize(
    "workflow",
    [w for w in ("deploy.yml", "retrain.yml") if (ROOT / ".github/workflows" / w).is_file()],
)
def test_the_pull_keeps_the_oidc_session(workflow: str, tmp_path: Path) -> None:
    """With a role assumed through OIDC (configure-aws-credentials writes its session into the
    job's environment) and no static keys, the step that pulls sees the session: a fake `dvc`
    records the credentials `scripts/dvc-remote.sh pull` hands it."""
    session = {
        "AWS_ACCESS_KEY_ID": "ASIAOIDCSESSION",
        "AWS_SECRET_ACCESS_KEY": "oidc-secret",
        "AWS_SESSION_TOKEN": "oidc-token",
    }
    # a role to assume, a remote; the static-key secrets are unset
    context = {
        "vars.AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/dvc",
        "vars.DVC_REMOTE_URL": "s3://bucket/dvc",
        "secrets.DVC_REMOTE_URL": "s3://bucket/dvc",
    }
    pulls = [
        s
        for _, s in steps(load(ROOT / ".github/workflows" / workflow))
        if s.get("run") == "scripts/dvc-remote.sh pull" and "oidc != 'true'" not in s.get("if", "")
    ]
    assert pulls, "no step pulls with the OIDC session"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    seen = tmp_path / "seen.json"
    (bin_dir / "dvc").write_text(
        "#!/usr/bin/env python3\nimport json, os, sys\n"
        f"keys = {sorted(session)!r}\n"
        f"json.dump({{k: os.environ.get(k) for k in keys}}, open({str(seen)!r}, 'w'))\n"
    )
    (bin_dir / "dvc").chmod(0o755)
    for step in pulls:
        env = step_env(step, context, session)
        assert env["HAS_OIDC_ROLE"] == "true", step["name"]
        env |= {"PATH": f"{bin_dir}:/usr/bin:/bin", "VENV": str(tmp_path / "no-venv")}
        cmd = [str(SCRIPTS / "dvc-remote.sh"), "pull"]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        assert proc.returncode == 0 and "OIDC role" in proc.stdout, proc.stdout + proc.stderr
        assert json.loads(seen.read_text()) == session, step["name"]


# --- scripts/lint-workflows.sh ------------------------------------------------------------


def test_workflow_linters_report_findings(tmp_path: Path) -> None:
    """One planted defect of each kind: an untrusted input in a script (actionlint), an
    unquoted variable (shellcheck, through actionlint), an unpinned action and a template
    injection (zizmor)."""
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "name: bad\non: pull_request\npermissions: {}\njobs:\n  a:\n    name: a\n"
        "    runs-on: ubuntu-24.04\n    steps:\n      - uses: actions/checkout@v4\n"
        '      - run: echo "${{ github.event.pull_request.title }}"\n'
        "      - run: rm -rf $TARGET/cache\n"
    )
    lint = [str(SCRIPTS / "lint-workflows.sh"), str(bad)]
    proc = run(lint, tmp_path, check=False, VENV=sys.prefix)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "potentially untrusted" in out  # actionlint
    assert "SC2086" in out  # shellcheck
    assert "template-injection" in out and "unpinned-uses" in out  # zizmor
    # and the repository's own workflows are clean
    clean = run([str(SCRIPTS / "lint-workflows.sh")], ROOT, check=False, VENV=sys.prefix)
    assert clean.returncode == 0, clean.stdout + clean.stderr


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
        comment = {
            "id": 1000 + len(self.comments),
            "body": self._body()["body"],
            "user": {"login": "github-actions[bot]"},
        }
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
    # other people's comments, more than one page of them, one with the marker in it
    handler.comments.extend(
        {"id": i, "body": f"comment {i}", "user": {"login": "someone"}} for i in range(149)
    )
    handler.comments.append(
        {"id": 149, "body": "<!-- mlpipeline-pr-report --> hijack", "user": {"login": "mallory"}}
    )
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
    # other people's comments, the one faking the marker too, are never touched
    assert [c["body"] for c in handler.comments[:149]] == [f"comment {i}" for i in range(149)]
    assert handler.comments[149]["body"].endswith("hijack")
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


def test_a_report_over_the_limit_is_cut_at_a_section(tmp_path: Path) -> None:
    limit = int(re.search(r"^MAX_BODY = ([\d_]+)", (SCRIPTS / "publish_report.py").read_text(),
                          re.MULTILINE)[1])  # fmt: skip
    table = "\n".join(
        ["| column | value |", "|---|---|"] + [f"| c{i} | {i} |" for i in range(2000)]
    )
    sections = [f"## Section {n} (`file{n}`)\n\n{table}\n" for n in range(6)]
    out = report_dir(tmp_path, "# Report\n\nthe lock matches\n\n" + "\n".join(sections))
    summary = tmp_path / "summary.md"
    proc = publish(tmp_path, "summary", str(out), GITHUB_STEP_SUMMARY=str(summary))
    assert proc.returncode == 0, proc.stderr
    body = summary.read_text()
    assert len(body) <= limit
    kept, note = body.rsplit("\n\n… ", 1)
    # whole sections: each one kept ends with its table's last row
    whole = kept.count("## Section")
    assert whole >= 1 and kept.count("| c1999 | 1999 |") == whole
    assert kept.rstrip().endswith("| c1999 | 1999 |")
    left_out = ", ".join(f"Section {n}" for n in range(whole, 6))
    assert note.startswith(
        f"Cut here to fit GitHub's comment limit: the rest of the report ({left_out}) is in "
        "the `pr-report` artifact of [this run]"
    )

    # one section longer than the limit: cut before its table, never inside it
    out = report_dir(tmp_path, "# Report\n\nthe lock matches\n\n## Huge\n\n" + table * 20)
    proc = publish(tmp_path, "summary", str(out), GITHUB_STEP_SUMMARY=str(tmp_path / "s2.md"))
    body = (tmp_path / "s2.md").read_text()
    assert len(body) <= limit and "| c0 |" not in body and "Cut here" in body
