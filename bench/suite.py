"""The tests' cost to a user: `make test` in a fresh clone of this repository's HEAD, first from
nothing (no .venv, an empty uv cache: the install included), then again with .venv installed.
Writes its section of docs/performance.md. The goals: at most 10 minutes from nothing, at most
5 with .venv installed, on a 2-core machine.

    .venv/bin/python bench/suite.py [--all]

--all times `make test-slow` too (the second tier; it needs what docs/testing.md lists). The
clone takes TORCH_INDEX and the Docker settings from the environment, as a user's shell would
give them. Everything runs in a temporary directory: the working tree is never touched.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import smoke
from record import stamp, write_section

ROOT = Path(__file__).resolve().parents[1]
# pytest's closing line, e.g. "=== 273 passed, 8 skipped in 152.16s (0:02:32) ==="
SUMMARY = re.compile(r"^=+ (.*\d+ (?:passed|failed).*) =+$", re.M)
GOALS_S = {"from nothing": 600.0, "installed": 300.0}


def clean_env(cache: Path | None) -> dict[str, str]:
    """This process's environment as a fresh shell would have it: no venv of this checkout
    on PATH, and uv's cache in `cache` (None: the user's own)."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "MAKEFLAGS")}
    venv = str(ROOT / ".venv")
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if venv not in p)
    if cache is not None:
        env["UV_CACHE_DIR"] = str(cache)
    return env


def timed_make(repo: Path, target: str, env: dict[str, str], pytest_args: str) -> tuple[float, str]:
    """Run `make <target>` in `repo`; its wall time and pytest's summary line. Exits with the
    log's tail when make fails."""
    cmd = ["make", target, *([f"PYTEST_ARGS={pytest_args}"] if pytest_args else [])]
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
    wall = time.monotonic() - start
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed in {repo}:\n{out[-4000:]}")
    found = SUMMARY.findall(out)
    print(f"make {target}: {wall:.0f} s; {found[-1] if found else 'no pytest summary'}")
    return wall, found[-1] if found else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="time make test-slow too")
    args = smoke.parse_args(parser)
    # a smoke run checks the wiring on one quick file, with the uv cache this machine has
    pytest_args = "tests/test_errors.py" if args.smoke else ""
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-suite-") as scratch:
        repo = Path(scratch) / "repo"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
        cold = clean_env(None if args.smoke else Path(scratch) / "uv-cache")
        runs = [("from nothing", "test", cold), ("installed", "test", clean_env(None))]
        if args.all:
            runs.append(("installed", "test-slow", clean_env(None)))
        for state, target, env in runs:
            wall, summary = timed_make(repo, target, env, pytest_args)
            goal = GOALS_S.get(state) if target == "test" else None
            verdict = "" if goal is None else ("yes" if wall <= goal else "**no**")
            limit = "" if goal is None else f"{goal / 60:.0f} min"
            rows.append(
                f"| `make {target}`, {state} | {wall / 60:.1f} min | {limit} | {verdict} | "
                f"{summary} |"
            )
    text = (
        f"{stamp()} `make test` in a fresh `git clone` of HEAD: first with no `.venv` and an "
        "empty uv cache (TORCH_INDEX as the environment gives it), then again with `.venv` "
        "installed.\n\n| run | wall time | goal | met | pytest |\n| --- | --- | --- | --- | --- |\n"
        + "\n".join(rows)
        + "\n"
    )
    write_section("suite", "The test suite", text)


if __name__ == "__main__":
    main()
