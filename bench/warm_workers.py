"""The joblib launcher's warm workers (`mlpipeline.sweep.workers`: forked from a server that has
imported torch, Lightning and MLflow) against its plain workers (fresh interpreters that each
import them): a 4-trial grid, 2 jobs, both ways. Writes its section of docs/performance.md.

    .venv/bin/python bench/warm_workers.py [--pairs N] [--smoke]

The plain runs are the same command with the warm-up switched off in that process alone: the
grid is then checked in the sweep's own process. Each figure is the median over N interleaved
pairs. --smoke: one pair of one-epoch trials.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import smoke
from record import stamp, write_section
from sweeps import GRIDS, timed

ROOT = Path(__file__).resolve().parents[1]
JOBS = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
# the sweep's main with the warm-up a no-op, the grid checked where it is validated
COLD = (
    "import runpy, mlpipeline.sweep.workers as w\n"
    "from mlpipeline.config import check_targets\n"
    "w.warm_joblib_workers = lambda: None\n"
    "w.check_in_server = lambda configs: [check_targets(c) for c in configs]\n"
    "runpy.run_module('mlpipeline.sweep', run_name='__main__', alter_sys=True)\n"
)


def sweep(work: Path, overrides: list[str], warm: bool) -> float:
    """Seconds for the whole grid, from the command to the summary."""
    if (work / "sweep").exists():
        shutil.rmtree(work / "sweep")
    head = ["python", "-m", "mlpipeline.sweep"] if warm else ["python", "-c", COLD]
    seconds = timed([*head, "-m", *overrides, "hydra.sweep.dir=sweep", *JOBS], work)[0]
    print(f"{'warm' if warm else 'plain'} workers: {seconds:.1f} s", flush=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3, help="interleaved plain/warm pairs")
    args = smoke.parse_args(parser)
    epochs = 1 if args.smoke else 5
    args.pairs = 1 if args.smoke else args.pairs
    overrides = [*GRIDS["short"], f"trainer.max_epochs={epochs}"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shutil.copytree(ROOT / "conf", work / "conf")
        pairs = [
            (sweep(work, overrides, False), sweep(work, overrides, True)) for _ in range(args.pairs)
        ]
    ratios = [plain / warm for plain, warm in pairs]
    each = ", ".join(f"{a:.1f} s / {b:.1f} s" for a, b in pairs)
    text = (
        f"{stamp()} Grid: `python -m mlpipeline.sweep -m {' '.join(overrides)} {' '.join(JOBS)}` "
        f"(4 trials, 2 at once); plain: the same with `warm_joblib_workers` a no-op; "
        f"{args.pairs} interleaved pairs.\n\n"
        "| what | wall time | note |\n| --- | --- | --- |\n"
        f"| 4-trial grid, joblib 2 jobs: plain vs warm workers | "
        f"{statistics.median(a for a, _ in pairs):.1f} s vs "
        f"{statistics.median(b for _, b in pairs):.1f} s | plain / warm "
        f"{statistics.median(ratios):.2f}x; pairs: {each} |\n\n"
        f"Verdict: the warm workers {'pay' if statistics.median(ratios) > 1 else 'do not pay'}: "
        "they stay only while the plain workers' grid is the slower.\n"
    )
    write_section("warm-workers", "Sweeps: warm joblib workers against plain ones", text)


if __name__ == "__main__":
    sys.exit(main())
