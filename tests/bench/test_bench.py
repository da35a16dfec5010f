"""Every benchmark under bench/ at its smoke size (`--smoke`: the tiniest run, no wait for a quiet
CPU, docs/performance.md left as it is), so that none rots unseen. Each runs as a real process,
from the copy of its script inside a copy of the reproduced two-epoch repository (tiny_repo):
the script's ROOT is then that copy, never this working tree, and TMPDIR is a short one of its
own. Only the exit status and the printed section are checked: a busy test machine's figures
mean nothing.

Without a tool a benchmark needs (wrk, qemu-user, Java, the Airflow environment) its test skips,
saying how to install it; where MLPIPELINE_REQUIRE_BENCH_TOOLS=1 (as in .ci/run)
it fails instead."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import ROOT, run

pytestmark = pytest.mark.slow

REQUIRED = os.environ.get("MLPIPELINE_REQUIRE_BENCH_TOOLS") == "1"
AIRFLOW_VENV = ROOT / ".venv-airflow"
# tool: (whether it is here, how to install it)
TOOLS: dict[str, tuple[Callable[[], bool], str]] = {
    "wrk": (
        lambda: shutil.which("wrk") is not None,
        "scripts/install-test-tools.sh wrk (Debian's wrk package)",
    ),
    "qemu-x86_64": (
        lambda: shutil.which("qemu-x86_64") is not None,
        "scripts/install-test-tools.sh qemu-user (Debian's qemu-user package)",
    ),
    "java": (
        lambda: shutil.which("java") is not None,
        "scripts/install-test-tools.sh openjdk-17-jre-headless (Debian's Java 17)",
    ),
    "airflow": (
        (AIRFLOW_VENV / "bin" / "airflow").is_file,
        "make airflow-install (make test-all runs it)",
    ),
}


def register(repo: Path) -> None:
    """The copy's own MLflow store with its model registered: tiny_baseline keeps none (a store
    holds its artifact folder's absolute path), and serve.py serves the registered version."""
    run([sys.executable, "-m", "mlpipeline.stages.register"], repo)


def link_airflow(repo: Path) -> None:
    """orchestration.py runs Airflow from ROOT/.venv-airflow, which no copy holds (it is
    ignored): a link to this checkout's (the copies the script makes take tracked files only)."""
    (repo / ".venv-airflow").symlink_to(AIRFLOW_VENV)


@dataclass(frozen=True)
class Bench:
    """One benchmark run: bench/<script> and its arguments (--smoke added), the section it
    prints (None: a JSON line instead), the tools it needs, what the copy needs first."""

    script: str
    args: tuple[str, ...] = ()
    section: str | None = None
    tools: tuple[str, ...] = ()
    prepare: Callable[[Path], None] | None = None


# the longest first (minutes: emulated stages, a DVC queue, Airflow's tasks), so that xdist's
# workers end together
BENCHES = {
    "cross-cpu": Bench("cross_cpu.py", section="cross-cpu", tools=("qemu-x86_64",)),
    "sweeps": Bench("sweeps.py", section="sweeps"),
    "warm-workers": Bench("warm_workers.py", section="warm-workers"),
    # bench/orchestration.py comes with Airflow: a project made without it has none
    **(
        {
            "orchestration": Bench(
                "orchestration.py",
                section="orchestration",
                tools=("airflow",),
                prepare=link_airflow,
            )
        }
        if (ROOT / "bench/orchestration.py").is_file()
        else {}
    ),
    "serve-table": Bench("serve.py", args=("--table",), section="serving-records", tools=("wrk",)),
    "serve-image": Bench(
        "serve.py", args=("--image-file",), section="serving-image", tools=("wrk",)
    ),
    "pipeline": Bench("pipeline.py", section="pipeline"),
    "tables": Bench("tables.py", section="tables"),
    # the data stages on a real local Spark, which runs on Java
    "spark": Bench("spark.py", section="spark", tools=("java",)),
    "images": Bench("images.py", section="images"),
    # --baseline: the copy's own commit as "before", to keep the side-by-side path working
    "serve": Bench(
        "serve.py", ("--baseline", "HEAD"), section="serving", tools=("wrk",), prepare=register
    ),
    "kernels": Bench("kernels.py", section="kernels"),
    # --baseline: the copy's own commit as "before" (the copy has no history), its kit/ then
    "startup": Bench("startup.py", ("--baseline", "HEAD"), section="startup"),
    # `make test` in a fresh clone of the copy, on one quick test file
    "suite": Bench("suite.py", section="suite"),
    "drift": Bench("drift.py", section="drift", tools=("wrk",)),
    "throughput-table": Bench("throughput.py", args=("--table",), section="throughput-table"),
    "throughput-images": Bench("throughput.py", args=("--images",), section="throughput-images"),
    # the form bench/pipeline.py runs: a repository with data/features, one JSON line out
    "throughput": Bench("throughput.py", args=(".",)),
}


def require(tool: str) -> None:
    """Skip (or, where required, fail) the test when `tool` is missing."""
    present, install = TOOLS[tool]
    if not present():
        message = f"{tool} not found: {install}"
        if REQUIRED:
            pytest.fail(f"MLPIPELINE_REQUIRE_BENCH_TOOLS=1 but {message}")
        pytest.skip(message)


@pytest.mark.parametrize("name", BENCHES)
def test_benchmark_runs_at_its_smoke_size(name: str, request: pytest.FixtureRequest) -> None:
    bench = BENCHES[name]
    for tool in bench.tools:
        require(tool)
    # only now: a skip builds no reproduced baseline
    repo: Path = request.getfixturevalue("tiny_repo")
    if bench.prepare is not None:
        bench.prepare(repo)
    cmd = [sys.executable, str(repo / "bench" / bench.script), *bench.args, "--smoke"]
    # a short TMPDIR of its own: multiprocessing's forkserver binds a Unix socket there, whose
    # path may not exceed 107 bytes (the test's tmp_path can)
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
        out = run(cmd, repo, TMPDIR=scratch).stdout
    if bench.section is None:
        assert "rounds" in json.loads(out.splitlines()[-1]), out
    else:
        assert f"<!-- bench:{bench.section} -->" in out, out
        assert "smoke run: docs/performance.md left as it is" in out, out
