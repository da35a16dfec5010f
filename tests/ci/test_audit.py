"""scripts/audit.sh: pip-audit over the locked set, against an OSV-compatible endpoint on
loopback that answers from advisories the test plants (OSV's own API is not reachable from
every machine the tests run on), and the exceptions file with its review dates."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from helpers import ROOT, run
from packaging.version import InvalidVersion, Version

SCRIPT = ROOT / "scripts/audit.sh"


def affects(advisory: dict[str, Any], name: str, version: str) -> bool:
    """OSV's rule for PyPI: the version is listed, or inside an ECOSYSTEM range."""
    for affected in advisory["affected"]:
        if affected["package"]["name"] != name:
            continue
        if version in affected.get("versions", []):
            return True
        for span in affected.get("ranges", []):
            introduced = next((e["introduced"] for e in span["events"] if "introduced" in e), "0")
            fixed = next((e["fixed"] for e in span["events"] if "fixed" in e), None)
            try:
                low = Version("0") if introduced == "0" else Version(introduced)
                if Version(version) >= low and (fixed is None or Version(version) < Version(fixed)):
                    return True
            except InvalidVersion:  # a range spelt in another scheme: not ours to judge
                continue
    return False


@contextmanager
def osv(advisories: list[dict[str, Any]]) -> Iterator[str]:
    """An OSV /v1/query endpoint on loopback answering from `advisories`; yields its URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            query = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            name, version = query["package"]["name"], query["version"]
            vulns = [a for a in advisories if affects(a, name, version)]
            body = json.dumps({"vulns": vulns} if vulns else {}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1/query"
    finally:
        server.shutdown()


def locked_version(name: str) -> str:
    text = (ROOT / "uv.lock").read_text()
    return text.split(f'\nname = "{name}"\nversion = "', 1)[1].split('"', 1)[0]


def advisory(vuln_id: str, name: str, introduced: str, fixed: str) -> dict[str, Any]:
    return {
        "schema_version": "1.6.0",
        "id": vuln_id,
        "summary": f"planted for the test in {name}",
        "affected": [
            {
                "package": {"name": name, "ecosystem": "PyPI"},
                "ranges": [
                    {"type": "ECOSYSTEM", "events": [{"introduced": introduced}, {"fixed": fixed}]}
                ],
            }
        ],
    }


def audit(tmp_path: Path, url: str, ignore: str = "") -> Any:
    """The script in a copy of the lock and its exceptions file, against `url`."""
    work = tmp_path / "repo"
    (work / "scripts").mkdir(parents=True)
    for name in ("pyproject.toml", "uv.lock", "scripts/audit.sh"):
        (work / name).write_bytes((ROOT / name).read_bytes())
    (work / "scripts/audit.sh").chmod(0o755)
    (work / "audit-ignore.txt").write_text(ignore)
    import sys

    return run(
        [str(work / "scripts/audit.sh")],
        work,
        check=False,
        VENV=sys.prefix,
        AUDIT_OSV_URL=url,
        SKIP_AUDIT="",
    )


@pytest.fixture
def planted() -> dict[str, Any]:
    """A vulnerability in the locked PyYAML (a package every install has)."""
    version = locked_version("pyyaml")
    return advisory("GHSA-test-0000-0001", "pyyaml", "0", f"{Version(version).major + 1}.0")


def test_the_locked_set_is_clean_against_advisories_that_miss_it(tmp_path: Path) -> None:
    old = advisory("GHSA-test-0000-0002", "pyyaml", "0", "1.0")  # fixed long before the lock
    with osv([old]) as url:
        proc = audit(tmp_path, url)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "No known vulnerabilities found" in proc.stdout + proc.stderr


def test_a_planted_vulnerability_fails_the_audit(tmp_path: Path, planted) -> None:
    with osv([planted]) as url:
        proc = audit(tmp_path, url)
    assert proc.returncode == 1
    assert "GHSA-test-0000-0001" in proc.stdout and "pyyaml" in proc.stdout


def test_an_exception_with_a_reason_and_a_future_review_date_passes(
    tmp_path: Path, planted
) -> None:
    review = (date.today() + timedelta(days=30)).isoformat()
    with osv([planted]) as url:
        proc = audit(
            tmp_path, url, f"GHSA-test-0000-0001 {review} the loader we call is safe_load\n"
        )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_an_exception_past_its_review_date_fails(tmp_path: Path, planted) -> None:
    with osv([planted]) as url:
        proc = audit(tmp_path, url, "GHSA-test-0000-0001 2020-01-01 looked at once\n")
    assert proc.returncode == 1
    assert "was to be reviewed by 2020-01-01" in proc.stderr


def test_an_exception_without_a_reason_is_refused(tmp_path: Path, planted) -> None:
    with osv([planted]) as url:
        proc = audit(tmp_path, url, "GHSA-test-0000-0001 2099-01-01\n")
    assert proc.returncode == 1 and "is not ID YYYY-MM-DD REASON" in proc.stderr
