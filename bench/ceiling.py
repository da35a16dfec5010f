"""The machine's parallel ceiling for sweeps: the same work done twice, one run after the other
(as the basic launcher runs trials), against two runs at once (as the joblib launcher and
`dvc queue start -j 2` share two cores), one torch thread each (cpu_threads). Work: 25 training
epochs of the default network (bench/throughput.py's plain loop), and a pure-Python loop that
measures the virtual CPUs alone. Process start-up is left out: each run waits for an agreed
instant before it starts working and reports when it finished.

The host's other tenants move single figures by up to 60 % from one minute to the next, so
each figure is the median over --repeats interleaved pairs (one run alone, then two at once).

Usage: python bench/ceiling.py REPO [--repeats N] [--smoke]   (REPO: a repository copy with
data/prepared). Prints one JSON object on the last line of stdout. --smoke: one pair per kind,
a hundredth of the spin, one epoch, no agreed start.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import smoke

START_DELAY_S = 10.0  # enough for two processes to import torch at once on a busy machine
EPOCHS = 25  # of training, per unit of work
SPIN = 30_000_000  # squares summed, per unit of work


def work(kind: str, repo: Path, threads: int, at: float) -> float:
    """Do one unit of `kind` starting at wall-clock `at`; return when it finished."""
    if kind == "train":
        from throughput import PlainLoop

        from mlpipeline.config import load_config

        os.chdir(repo)
        loop = PlainLoop(load_config("params.yaml").model_copy(update={"cpu_threads": threads}))
    time.sleep(max(at - time.time(), 0))
    # smoke mode (inherited from the parent) shrinks the work, not its kind
    if kind == "train":
        for _ in range(1 if smoke.on() else EPOCHS):
            loop.epoch()
    else:
        sum(i * i for i in range(SPIN // 100 if smoke.on() else SPIN))
    return time.time()


def runs(kind: str, repo: Path, threads: int, at_once: int) -> float:
    """Seconds from the agreed start until the last of `at_once` runs finished."""
    at = time.time() + (0 if smoke.on() else START_DELAY_S)
    cmd = [sys.executable, __file__, str(repo), "--one", kind, "--threads", str(threads)]
    procs = [
        subprocess.Popen([*cmd, "--at", str(at)], stdout=subprocess.PIPE, text=True)
        for _ in range(at_once)
    ]
    ends = [float(p.communicate()[0].split()[-1]) for p in procs]
    return max(ends) - at


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repo", type=Path)
    parser.add_argument("--one", choices=["train", "spin"], help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--at", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved pairs per kind")
    args = smoke.parse_args(parser)
    if args.one:
        print(work(args.one, args.repo.resolve(), args.threads, args.at))
        return
    result = {}
    for kind in ("spin", "train"):
        pairs = []
        for _ in range(1 if args.smoke else args.repeats):
            alone = runs(kind, args.repo, 1, 1)
            pairs.append((2 * alone, runs(kind, args.repo, 1, 2)))  # serial: alone, twice
        result[kind] = {
            "serial_s": round(statistics.median(a for a, _ in pairs), 2),
            "two_at_once_s": round(statistics.median(b for _, b in pairs), 2),
            "ceiling": round(statistics.median(a / b for a, b in pairs), 2),
            "ceilings": [round(a / b, 2) for a, b in pairs],
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
