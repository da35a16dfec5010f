"""The performance doc (docs/performance.md): each benchmark rewrites its own section, between
markers, and leaves the others as they are."""

from __future__ import annotations

import os
import platform
import re
import shlex
import sys
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

import smoke
from quiet import cpu_model

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "performance.md"
HEADER = """# Performance

Every figure here is written by a benchmark under `bench/` (`make bench` runs the pipeline,
sweep, kernel, tabular-throughput, large-table, image, orchestration, test-suite and start-up
benchmarks, the large tables at 100k and 1M rows unless told `TABLE_ROWS="1000000 10000000"`,
the table data stages on Spark at 20k and 200k rows unless told `SPARK_ROWS="1000000 10000000"`;
`bench/serve.py`, `bench/serve.py --table`, `bench/drift.py` and `bench/cross_cpu.py` run on
their own), with the date, the machine and the command that produced it. Each benchmark
rewrites its own section and leaves the others. Timings that compare two things are interleaved
and repeated, and the figure is the median of the per-pair ratios: a shared machine's load moves
single timings. With `--smoke` a benchmark runs at its tiniest size and writes nothing here:
`make test-all` runs each so, to keep it working.
"""


def machine() -> str:
    """The machine in one line: cores, CPU, OS, Python and the libraries that set the pace."""
    libs = ", ".join(f"{lib} {version(lib)}" for lib in ("torch", "lightning", "dvc", "mlflow"))
    return (
        f"{len(os.sched_getaffinity(0))} cores, {cpu_model()}, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}, {libs}"
    )


# When the benchmark started and the load then: every benchmark imports this module before it
# measures anything, and stamp() runs only once the figures are in
STARTED = datetime.now(timezone.utc)
LOAD_AT_START = os.getloadavg()[0]


def stamp() -> str:
    """Start date, machine and command, for the head of a section."""
    when = STARTED.strftime("%Y-%m-%d %H:%M UTC")
    via = " (through `make bench`)" if "MAKELEVEL" in os.environ else ""
    return (
        f"Measured from {when} on {machine()}; load average at the start "
        f"{LOAD_AT_START:.1f}. Command: `{shlex.join(sys.orig_argv)}`{via}."
    )


def write_section(name: str, title: str, body: str) -> None:
    """Replace (or add) the section `name` of the performance doc, and print it. In smoke mode
    (smoke.py) only print it: a smoke run's figures mean nothing."""
    block = f"<!-- bench:{name} -->\n## {title}\n\n{body.strip()}\n<!-- /bench:{name} -->"
    print(f"\n{block}\n", flush=True)
    if smoke.on():
        print(f"smoke run: {DOC.relative_to(ROOT)} left as it is")
        return
    text = DOC.read_text(encoding="utf-8") if DOC.is_file() else HEADER
    # the header as this file says it now, so that it follows the Makefile's bench target
    first = text.find("<!-- bench:")
    text = HEADER + ("\n" + text[first:] if first >= 0 else "")
    pattern = re.compile(rf"<!-- bench:{name} -->.*?<!-- /bench:{name} -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else f"{text}\n{block}\n"
    DOC.parent.mkdir(parents=True, exist_ok=True)
    tmp = DOC.with_suffix(".md.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(DOC)
    print(f"written to {DOC.relative_to(ROOT)}")
