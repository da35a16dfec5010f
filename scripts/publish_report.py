#!/usr/bin/env python3
"""Publish the pull-request report (`make report`) on GitHub: job summary and sticky comment.

    scripts/publish_report.py summary reports/pr   append it to $GITHUB_STEP_SUMMARY
    scripts/publish_report.py comment reports/pr   create or update the pull request's one
                                                   report comment (found by a hidden marker
                                                   and its author, the workflow's bot)

Neither place shows images from a run, so the pictures become a list that points at the run's
artifact. A report longer than a comment may be is cut before its first section (`## ` heading)
that does not fit, or at a paragraph, never inside a table, and says where the rest is. A
missing report (the pipeline failed before it) is published as a short notice, so a stale
report never stays up. `comment` reads GITHUB_TOKEN, PR_NUMBER, COMMENT_AUTHOR (the login
that posts the comment; default github-actions[bot], whose token the workflow uses: anyone can
write the marker, only the bot's own comment is updated) and the variables GitHub Actions sets
(GITHUB_REPOSITORY, GITHUB_API_URL, GITHUB_SERVER_URL, GITHUB_RUN_ID); it talks to the REST
API with the standard library only, so it runs on a bare runner's python3.
Failures are one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

MARKER = "<!-- mlpipeline-pr-report -->"
BOT = "github-actions[bot]"
# GitHub rejects comment bodies over 65,536 characters
MAX_BODY = 65_000
IMAGE = re.compile(r"^!\[(?P<alt>[^\]]*)\]\((?P<src>[^)\s]+)\)\s*$", re.MULTILINE)
SECTION = re.compile(r"^## (?P<title>[^\n(]*)", re.MULTILINE)


class PublishError(Exception):
    """Expected failure (missing settings, API refusal): printed as one line."""


def run_url() -> str | None:
    """The web address of this workflow run, when GitHub Actions' variables say it."""
    parts = [os.environ.get(k) for k in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID")]
    if not all(parts):
        return None
    server, repo, run_id = parts
    return f"{server}/{repo}/actions/runs/{run_id}"


def render(report_dir: Path, artifact: str) -> str:
    """The report as Markdown that renders outside the artifact: images become a list."""
    url = run_url()
    where = f"the `{artifact}` artifact of [this run]({url})" if url else f"`{artifact}`"
    path = report_dir / "report.md"
    if not path.is_file():
        logs = f"the logs of [this run]({url})" if url else "the workflow's logs"
        return (
            f"{MARKER}\n## Pipeline report\n\nNo report was written: the pipeline stopped "
            f"before it. See {logs}.\n"
        )
    text = path.read_text(encoding="utf-8")
    text = IMAGE.sub(lambda m: f"- {m['alt']}: `{m['src']}`", text)
    text = f"{MARKER}\n{text.rstrip()}\n\nPlots and the full report: {where}.\n"
    return cut(text, where) if len(text) > MAX_BODY else text


def cut(text: str, where: str, limit: int = MAX_BODY) -> str:
    """`text` shortened to at most `limit` characters at a section heading (else at a blank
    line, so never inside a table), with a last line naming the sections left out and where
    the full report is."""

    def note(rest: str) -> str:
        titles = [m["title"].strip() for m in SECTION.finditer(rest)]
        left_out = f" ({', '.join(titles)})" if titles else ""
        return (
            f"\n\n… Cut here to fit GitHub's comment limit: the rest of the report{left_out} "
            f"is in {where}.\n"
        )

    # the longest head that fits with its note: a whole number of sections, else paragraphs
    for boundaries in ([m.start() for m in SECTION.finditer(text)], _paragraphs(text)):
        fitting = [i for i in boundaries if i > 0 and i + len(note(text[i:])) <= limit]
        if fitting:
            end = max(fitting)
            return text[:end].rstrip() + note(text[end:])
    # no blank line early enough: the last line that fits
    end = text.rfind("\n", 0, limit - len(note("")))
    return text[: max(end, 0)] + note("")


def _paragraphs(text: str) -> list[int]:
    """Where each paragraph after a blank line starts."""
    return [m.end() for m in re.finditer(r"\n\n+", text)]


def write_summary(report_dir: Path, artifact: str) -> Path:
    """Append the report to the job summary file GitHub Actions names."""
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        raise PublishError("GITHUB_STEP_SUMMARY is not set: run this inside GitHub Actions")
    with open(target, "a", encoding="utf-8") as handle:
        handle.write(render(report_dir, artifact))
    return Path(target)


def _api(method: str, url: str, token: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Accept", "application/vnd.github+json")
    request.add_header("Authorization", f"Bearer {token}")
    request.add_header("X-GitHub-Api-Version", "2022-11-28")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as err:
        detail = err.read().decode(errors="replace")
        # GitHub's error bodies are JSON with a message; anything else is shown as it is
        with contextlib.suppress(ValueError, AttributeError):
            detail = json.loads(detail).get("message", detail)
        hint = " (fork pull requests get a read-only token)" if err.code in (403, 404) else ""
        raise PublishError(f"{method} {url}: HTTP {err.code} {detail}{hint}") from None
    except (urllib.error.URLError, TimeoutError) as err:
        raise PublishError(f"{method} {url}: {getattr(err, 'reason', err)}") from None


def find_comment(api: str, repo: str, pr: int, token: str, author: str) -> int | None:
    """The id of this pull request's report comment (the first holding the marker that
    `author` wrote), if any."""
    page = 1
    while True:
        url = f"{api}/repos/{repo}/issues/{pr}/comments?per_page=100&page={page}"
        comments = _api("GET", url, token)
        for comment in comments:
            login = (comment.get("user") or {}).get("login")
            if MARKER in (comment.get("body") or "") and login == author:
                return int(comment["id"])
        if len(comments) < 100:
            return None
        page += 1


def post_comment(report_dir: Path, artifact: str) -> str:
    """Create the report comment, or update the one a previous run created; say which."""
    env = os.environ
    missing = [k for k in ("GITHUB_TOKEN", "GITHUB_REPOSITORY", "PR_NUMBER") if not env.get(k)]
    if missing:
        raise PublishError(f"{', '.join(missing)} not set: the workflow passes them in env")
    try:
        pr = int(env["PR_NUMBER"])
    except ValueError:
        raise PublishError(f"PR_NUMBER {env['PR_NUMBER']!r} is not a number") from None
    api = env.get("GITHUB_API_URL", "https://api.github.com").rstrip("/")
    repo, token = env["GITHUB_REPOSITORY"], env["GITHUB_TOKEN"]
    body = {"body": render(report_dir, artifact)}
    existing = find_comment(api, repo, pr, token, env.get("COMMENT_AUTHOR") or BOT)
    if existing is None:
        created = _api("POST", f"{api}/repos/{repo}/issues/{pr}/comments", token, body)
        return f"created comment {created.get('id')} on #{pr}"
    _api("PATCH", f"{api}/repos/{repo}/issues/comments/{existing}", token, body)
    return f"updated comment {existing} on #{pr}"


def main(argv: list[str] | None = None) -> None:
    """Command line; see the module's docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("where", choices=["summary", "comment"], help="where to publish")
    parser.add_argument("report_dir", type=Path, help="directory `make report` wrote")
    parser.add_argument("--artifact", default="pr-report", help="name of the uploaded artifact")
    args = parser.parse_args(argv)
    try:
        if args.where == "summary":
            print(f"appended the report to {write_summary(args.report_dir, args.artifact)}")
        else:
            print(post_comment(args.report_dir, args.artifact))
    except PublishError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
