"""A task's DVC commands in one process, in order, stopping at the first that fails: the
pull, repro and push of one stage then pay DVC's start (its import, the remote's client) once.

    python -m mlpipeline.ops.orchestrate.dvc_steps '[["pull", "data"], ["repro", "train"]]'

Before each command it prints `$ dvc ARGS`; after it `runner: dvc COMMAND took S s`, or
`runner: dvc COMMAND failed` and exits with that command's status."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence

from dvc.cli import main as dvc


def run_steps(steps: Sequence[Sequence[str]]) -> int:
    """Run each DVC command line through DVC's own entry point; the first failing one's exit
    status, else 0."""
    for args in steps:
        print(f"$ dvc {' '.join(args)}", flush=True)
        started = time.perf_counter()
        status = dvc(list(args))
        if status != 0:
            print(f"runner: dvc {args[0]} failed", flush=True)
            return status
        # one line per step, for the log's reader and bench/orchestration.py
        print(f"runner: dvc {args[0]} took {time.perf_counter() - started:.2f} s", flush=True)
    return 0


def last_step(lines: Sequence[str]) -> str | None:
    """The command run_steps ran last (the failing one, where it failed), from its output."""
    started = [line.split()[2] for line in lines if line.startswith("$ dvc ")]
    return started[-1] if started else None


if __name__ == "__main__":
    sys.exit(run_steps(json.loads(sys.argv[1])))
