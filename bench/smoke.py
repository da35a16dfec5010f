"""Smoke mode (`--smoke`): a benchmark at its tiniest size, only to show that it still runs. The
slow test tier runs every benchmark so (tests/bench/test_bench.py), on a machine busy with other
tests: the figures mean nothing, so nothing waits for a quiet CPU or repeats a noisy run
(quiet.py), and the performance doc is left as it is (record.py prints the section instead).

The flag sets an environment variable, so that the processes a benchmark starts (bench/ceiling.py
under bench/sweeps.py, bench/throughput.py under bench/pipeline.py) run in smoke mode too.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

ENV = "MLPIPELINE_BENCH_SMOKE"


def parse_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """`parser`'s arguments, --smoke added; with it, or when the benchmark that started this
    one runs in smoke mode, args.smoke is true and so is `on()` here and in every child."""
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="run at the tiniest size to check that it works; docs/performance.md is left as it is",
    )
    args = parser.parse_args()
    if args.smoke:
        os.environ[ENV] = "1"
    args.smoke = on()
    return args


def on() -> bool:
    """Whether this process runs in smoke mode."""
    return os.environ.get(ENV) == "1"


def one_epoch(repo: Path) -> None:
    """In smoke mode, train one epoch in the repository copy `repo` (conf/trainer/default.yaml),
    to be called before its first commit; else leave it as it is."""
    if not on():
        return
    conf = repo / "conf" / "trainer" / "default.yaml"
    text, found = re.subn(r"(?m)^max_epochs: \d+", "max_epochs: 1", conf.read_text())
    if not found:
        raise SystemExit(f"{conf} has no top-level max_epochs: update bench/smoke.py")
    conf.write_text(text)
