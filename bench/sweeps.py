"""Sweep benchmarks: a 4-trial grid serial vs joblib (2 processes), the DVC queue with -j 1 vs
-j 2, per-trial overhead (process start to first training step), and the machine's parallel
ceiling for the same training work (bench/ceiling.py). Writes bench/SWEEPS.md.

    .venv/bin/python bench/sweeps.py
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

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
# different values per run: DVC's run cache would otherwise skip every repeated experiment
QUEUE_LRS = {1: "optimizer.lr=0.001,0.002,0.005,0.01", 2: "optimizer.lr=0.0015,0.0025,0.006,0.012"}


def sh(cmd: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout + proc.stderr


def timed(cmd: list[str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    out = sh(cmd, cwd)
    return time.perf_counter() - start, out


def grid(work: Path, overrides: list[str], launcher: list[str]) -> float:
    if (work / "sweep").exists():
        shutil.rmtree(work / "sweep")
    cmd = ["python", "-m", "mlpipeline.sweep", "-m", *overrides, "hydra.sweep.dir=sweep", *launcher]
    return timed(cmd, work)[0]


def repo_copy(dest: Path) -> Path:
    files = sh(["git", "ls-files"], ROOT).split()
    for name in files:
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    for cmd in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "b"],
    ):
        sh(cmd, dest)
    sh(["dvc", "repro"], dest)
    return dest


def queue(repo: Path, jobs: int) -> float:
    """Seconds from `dvc queue start -j N` until the 4th experiment is committed (its ref
    appears). The workers' own exit comes up to 10 s later (they poll an empty queue every
    10 s), so timing them would add a random wait to each figure."""
    sh(["dvc", "exp", "run", "--queue", "-S", QUEUE_LRS[jobs]], repo)
    start, wall = time.perf_counter(), time.time() - 1
    sh(["dvc", "queue", "start", "-j", str(jobs)], repo)
    # polling `dvc queue status` would take the repository lock the experiments need; git's
    # refs are read without it
    while len(exp_refs(repo)) < 4:
        if time.perf_counter() - start > 900:
            sys.exit(f"dvc queue start -j {jobs}: 4 experiments not done after 900 s")
        time.sleep(0.2)
    elapsed = time.perf_counter() - start
    celery = repo / ".dvc/tmp/exps/celery"
    pids = [int(p.read_text()) for p in celery.glob("*.pid") if p.stat().st_mtime >= wall]
    while any(_alive(pid) for pid in pids):
        time.sleep(0.5)
    status = sh(["dvc", "queue", "status"], repo)
    if status.count("Success") < 4:
        sys.exit(f"queue run failed:\n{status}")
    sh(["dvc", "exp", "remove", "--all"], repo)
    sh(["dvc", "queue", "remove", "--all"], repo)
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


def median_ceiling(repo: Path, runs: int) -> dict[str, dict[str, float]]:
    """bench/ceiling.py `runs` times (the host's neighbours make single runs vary by 30 %);
    for each kind of work, the run with the median ceiling."""
    outs = [sh(["python", str(ROOT / "bench/ceiling.py"), str(repo)], ROOT) for _ in range(runs)]
    results = [json.loads(out.strip().splitlines()[-1]) for out in outs]
    return {
        kind: sorted((r[kind] for r in results), key=lambda c: c["ceiling"])[runs // 2]
        for kind in results[0]
    }


def first_step(work: Path) -> float:
    _, out = timed(["python", "-m", "mlpipeline.sweep", "trainer.max_epochs=1"], work)
    return float(re.search(r"first training step ([\d.]+) s", out).group(1))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "sweep"
        shutil.copytree(ROOT / "conf", work / "conf")
        overhead = [first_step(work) for _ in range(3)]
        grids = {
            name: (
                grid(work, overrides, []),
                grid(work, overrides, ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]),
            )
            for name, overrides in GRIDS.items()
        }
        repo = repo_copy(Path(tmp) / "repo")
        ceiling = median_ceiling(repo, runs=3)
        q1 = queue(repo, 1)
        q2 = queue(repo, 2)

    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        platform.processor(),
    )
    rows = [
        (
            f"ceiling: {kind} work twice, one after the other vs two at once (1 thread each)",
            f"{c['serial_s']:.2f} s vs {c['two_at_once_s']:.2f} s",
            f"the most two at once can gain here: {c['ceiling']:.2f}x",
        )
        for kind, c in ceiling.items()
    ]
    for name, (serial, parallel) in grids.items():
        rows += [
            (f"4-trial grid ({name} trials), basic launcher (serial)", f"{serial:.1f} s", ""),
            (
                f"4-trial grid ({name} trials), joblib launcher, 2 jobs",
                f"{parallel:.1f} s",
                f"speed-up {serial / parallel:.2f}x (goal >= 1.6x)",
            ),
        ]
    rows += [
        ("DVC queue, 4 experiments, -j 1", f"{q1:.1f} s", ""),
        (
            "DVC queue, 4 experiments, -j 2",
            f"{q2:.1f} s",
            f"speed-up {q1 / q2:.2f}x (goal >= 1.6x)",
        ),
        (
            "per-trial overhead: process start to first training step",
            f"{statistics.median(overhead):.1f} s",
            f"median of {overhead} (goal <= 8 s)",
        ),
    ]
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    table = "\n".join(f"| {a} | {b} | {c} |" for a, b, c in rows)
    grids_text = "; ".join(f"{k}: `{' '.join(v)}`" for k, v in GRIDS.items())
    text = (
        f"# Sweep benchmarks\n\n{stamp}, {os.cpu_count()} cores, {cpu}, load average before "
        f"start {os.getloadavg()[0]:.1f}.\nCommand: `.venv/bin/python bench/sweeps.py` (grids: "
        f"{grids_text}; short is the default config, up to 30 epochs with early stopping; "
        f"queue: `dvc exp run --queue -S '{QUEUE_LRS[1]}'` then `dvc queue start -j N`, timed "
        "until its workers exit; ceiling: `bench/ceiling.py`, process start-up left out, median "
        "of 3 runs; spin: a pure-Python loop, train: 40 epochs of bench/throughput.py's plain "
        "loop).\n\n"
        "| what | wall time | note |\n| --- | --- | --- |\n"
        f"{table}\n"
    )
    (ROOT / "bench" / "SWEEPS.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
