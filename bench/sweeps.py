"""Sweep benchmarks: a 4-trial grid serial vs joblib (2 processes), the DVC queue with -j 1 vs
-j 2, per-trial overhead (process start to first training step), and the machine's parallel
ceiling for the same training work (bench/ceiling.py). Writes its section of
docs/performance.md.

    .venv/bin/python bench/sweeps.py [--pairs N] [--smoke]

A shared machine's other tenants move single timings, so each speed-up is the median over N
interleaved pairs (serial run, then parallel run). --smoke: one pair, one-epoch trials, queues
of one experiment, one overhead run, and the ceiling's smoke size.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import smoke
from record import stamp, write_section

ROOT = Path(__file__).resolve().parents[1]
BIN = str(Path(sys.executable).parent)
# short trials (the default config: a few seconds of training, early stopping) and long ones
# (the wide CNN for 50 epochs): process start-up weighs on the first, training on the second
GRIDS = {
    "short": ["optimizer.lr=0.003,0.01", "model=cnn,mlp"],
    "long": [
        "experiment=cnn_wide",
        "~callbacks.early_stopping",
        "optimizer.lr=0.003,0.01",
        "data.batch_size=32,64",
    ],
}
# values never queued before: DVC's run cache would otherwise skip every repeated experiment
QUEUE_BASE_LRS = (0.001, 0.002, 0.005, 0.01)


def sh(cmd: list[str], cwd: Path) -> str:
    """Run `cmd`; return its output. The output goes to a file, not a pipe: `dvc queue start`'s
    workers inherit its descriptors, and reading a pipe would wait for them to exit."""
    paths = [str(ROOT / "bench"), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "PYTHONPATH": os.pathsep.join(paths),
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.seek(0)
        out = log.read()
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{out[-6000:]}")
    return out


def timed(cmd: list[str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    out = sh(cmd, cwd)
    return time.perf_counter() - start, out


def grid(work: Path, overrides: list[str], launcher: list[str]) -> float:
    if (work / "sweep").exists():
        shutil.rmtree(work / "sweep")
    cmd = ["python", "-m", "mlpipeline.sweep", "-m", *overrides, "hydra.sweep.dir=sweep", *launcher]
    seconds = timed(cmd, work)[0]
    print(
        f"grid {' '.join(overrides)} {' '.join(launcher) or '(basic)'}: {seconds:.1f} s", flush=True
    )
    return seconds


def repo_copy(dest: Path) -> Path:
    files = sh(["git", "ls-files"], ROOT).split()
    for name in files:
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    smoke.one_epoch(dest)
    for cmd in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "b"],
    ):
        sh(cmd, dest)
    sh(["dvc", "repro"], dest)
    return dest


def queue_lrs() -> tuple[float, ...]:
    """The learning rates each queue run takes. In smoke mode one: an experiment takes half a
    minute even at one epoch (a process per stage), and one takes the queue through each step."""
    return QUEUE_BASE_LRS[:1] if smoke.on() else QUEUE_BASE_LRS


def queue_values(run: int) -> str:
    """optimizer.lr values for the run-th queue run: new ones each time."""
    return "optimizer.lr=" + ",".join(f"{lr * (1 + run / 100):.6g}" for lr in queue_lrs())


QUEUE_RUNS = iter(range(1000))


def queue(repo: Path, jobs: int) -> float:
    """Seconds from `dvc queue start -j N` until the last experiment (the 4th) is committed
    (its ref appears). The workers' own exit comes up to 10 s later (they poll an empty queue
    every 10 s), so timing them would add a random wait to each figure."""
    count = len(queue_lrs())
    sh(["dvc", "exp", "run", "--queue", "-S", queue_values(next(QUEUE_RUNS))], repo)
    start, wall = time.perf_counter(), time.time() - 1
    sh(["dvc", "queue", "start", "-j", str(jobs)], repo)
    # polling `dvc queue status` would take the repository lock the experiments need; git's
    # refs are read without it
    while len(exp_refs(repo)) < count:
        if time.perf_counter() - start > 900:
            sys.exit(f"dvc queue start -j {jobs}: {count} experiments not done after 900 s")
        time.sleep(0.2)
    elapsed = time.perf_counter() - start
    celery = repo / ".dvc/tmp/exps/celery"
    pids = [int(p.read_text()) for p in celery.glob("*.pid") if p.stat().st_mtime >= wall]
    while any(_alive(pid) for pid in pids):
        time.sleep(0.5)
    status = sh(["dvc", "queue", "status"], repo)
    if status.count("Success") < count:
        sys.exit(f"queue run failed:\n{status}")
    sh(["dvc", "exp", "remove", "--all"], repo)
    sh(["dvc", "queue", "remove", "--all"], repo)
    print(f"queue -j {jobs}: {elapsed:.1f} s", flush=True)
    return elapsed


def exp_refs(repo: Path) -> list[str]:
    """Finished experiments: refs/exps/<baseline commit, split 2/38>/<name> (the queue's own
    refs, refs/exps/celery/... and refs/exps/exec/..., do not match)."""
    refs = sh(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], repo).split()
    return [r for r in refs if re.fullmatch(r"refs/exps/[0-9a-f]{2}/[0-9a-f]{38}/[^/]+", r)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def ceiling_of(repo: Path) -> dict[str, dict[str, float]]:
    out = sh(["python", str(ROOT / "bench/ceiling.py"), str(repo)], ROOT)
    return json.loads(out.strip().splitlines()[-1])


def first_step(work: Path) -> float:
    """A one-epoch trial, with bench/timing.py's callback saying when its first step began."""
    timer = "+callbacks.first_step._target_=timing.FirstStep"
    _, out = timed(["python", "-m", "mlpipeline.sweep", "trainer.max_epochs=1", timer], work)
    return float(re.search(r"first training step ([\d.]+) s", out).group(1))


def allow_package(conf: Path, package: str) -> None:
    """Add `package` to conf/config.yaml's allowed_targets, as a user allows their own, so that
    an override may name its classes (bench/timing.py's callback)."""
    config = conf / "config.yaml"
    text = config.read_text()
    if "allowed_targets: [" not in text:
        sys.exit(f"{config}: no `allowed_targets: [...]` line to add {package} to")
    config.write_text(text.replace("allowed_targets: [", f"allowed_targets: [{package}, ", 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3, help="interleaved serial/parallel pairs")
    args = smoke.parse_args(parser)
    # smoke: one-epoch trials (a command-line value outranks an experiment's)
    grids = {k: [*v, "trainer.max_epochs=1"] if args.smoke else v for k, v in GRIDS.items()}
    args.pairs = 1 if args.smoke else args.pairs
    joblib = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "sweep"
        shutil.copytree(ROOT / "conf", work / "conf")
        allow_package(work / "conf", "timing")
        overhead = [first_step(work) for _ in range(1 if args.smoke else 5)]
        timings = {
            name: [(grid(work, o, []), grid(work, o, joblib)) for _ in range(args.pairs)]
            for name, o in grids.items()
        }
        repo = repo_copy(Path(tmp) / "repo")
        ceiling = ceiling_of(repo)
        queues = [(queue(repo, 1), queue(repo, 2)) for _ in range(args.pairs)]

    rows = [
        (
            f"ceiling: {kind} work twice, one after the other vs two at once (1 thread each)",
            f"{c['serial_s']:.2f} s vs {c['two_at_once_s']:.2f} s",
            f"the most two at once can gain here: {c['ceiling']:.2f}x (pairs: "
            f"{', '.join(f'{v:.2f}' for v in c['ceilings'])})",
        )
        for kind, c in ceiling.items()
    ]

    def speedup(pairs: list[tuple[float, float]]) -> str:
        ratios = [a / b for a, b in pairs]
        each = ", ".join(f"{a:.1f} s / {b:.1f} s = {a / b:.2f}x" for a, b in pairs)
        return f"speed-up {statistics.median(ratios):.2f}x (goal >= 1.6x); pairs: {each}"

    for name, pairs in timings.items():
        rows += [
            (
                f"4-trial grid ({name} trials): basic launcher (serial) vs joblib, 2 jobs",
                f"{statistics.median(a for a, _ in pairs):.1f} s vs "
                f"{statistics.median(b for _, b in pairs):.1f} s",
                speedup(pairs),
            )
        ]
    rows += [
        (
            f"DVC queue, {len(queue_lrs())} experiments: -j 1 vs -j 2",
            f"{statistics.median(a for a, _ in queues):.1f} s vs "
            f"{statistics.median(b for _, b in queues):.1f} s",
            speedup(queues),
        ),
        (
            "per-trial overhead: process start to first training step",
            f"{statistics.median(overhead):.1f} s",
            f"median of {overhead} (goal <= 8 s)",
        ),
    ]
    table = "\n".join(f"| {a} | {b} | {c} |" for a, b, c in rows)
    grids_text = "; ".join(f"{k}: `{' '.join(v)}`" for k, v in grids.items())
    text = (
        f"{stamp()} Grids: {grids_text}; short is the default config, up to 30 epochs with "
        f"early stopping; queue: `dvc exp run --queue -S '{queue_values(0)}'` (new values each "
        "run) then `dvc queue start -j N`, timed until the last experiment's ref appears; "
        "ceiling: `bench/ceiling.py`, process start-up left out; spin: a pure-Python loop, "
        f"train: 25 epochs of bench/throughput.py's plain loop; {args.pairs} interleaved pairs "
        "of each.\n\n"
        "| what | wall time | note |\n| --- | --- | --- |\n"
        f"{table}\n"
    )
    write_section("sweeps", "Sweeps: parallel launchers, the DVC queue, per-trial start-up", text)


if __name__ == "__main__":
    main()
