"""Sweep benchmarks: a 4-trial grid serial vs joblib (2 processes), the DVC queue with -j 1 vs
-j 2, and per-trial overhead (process start to first training step). Writes bench/SWEEPS.md.

    .venv/bin/python bench/sweeps.py
"""

from __future__ import annotations

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
GRID = ["optimizer.lr=0.003,0.01", "model=cnn,mlp"]
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


def grid(work: Path, launcher: list[str]) -> float:
    if (work / "sweep").exists():
        shutil.rmtree(work / "sweep")
    cmd = ["python", "-m", "mlpipeline.sweep", "-m", *GRID, "hydra.sweep.dir=sweep", *launcher]
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
    sh(["dvc", "exp", "run", "--queue", "-S", QUEUE_LRS[jobs]], repo)
    start = time.perf_counter()
    sh(["dvc", "queue", "start", "-j", str(jobs)], repo)
    while any(w in sh(["dvc", "queue", "status"], repo) for w in ("Queued", "Running")):
        time.sleep(1)
    elapsed = time.perf_counter() - start
    sh(["dvc", "queue", "stop"], repo)
    status = sh(["dvc", "queue", "status"], repo)
    if status.count("Success") < 4:
        sys.exit(f"queue run failed:\n{status}")
    sh(["dvc", "exp", "remove", "--all"], repo)
    sh(["dvc", "queue", "remove", "--all"], repo)
    return elapsed


def first_step(work: Path) -> float:
    _, out = timed(["python", "-m", "mlpipeline.sweep", "trainer.max_epochs=1"], work)
    return float(re.search(r"first training step ([\d.]+) s", out).group(1))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "sweep"
        shutil.copytree(ROOT / "conf", work / "conf")
        overhead = [first_step(work) for _ in range(3)]
        serial = grid(work, [])
        parallel = grid(work, ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"])
        repo = repo_copy(Path(tmp) / "repo")
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
        ("4-trial grid, basic launcher (serial)", f"{serial:.1f} s", ""),
        (
            "4-trial grid, joblib launcher, 2 jobs",
            f"{parallel:.1f} s",
            f"speed-up {serial / parallel:.2f}x (goal >= 1.6x)",
        ),
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
    text = (
        f"# Sweep benchmarks\n\n{stamp}, {os.cpu_count()} cores, {cpu}, load average before "
        f"start {os.getloadavg()[0]:.1f}.\nCommand: `.venv/bin/python bench/sweeps.py` (grid: "
        f"`{' '.join(GRID)}`, default config, 30 epochs max with early stopping; queue: "
        f"`dvc exp run --queue -S '{QUEUE_LRS[1]}'` then `dvc queue start -j N`, timed until the "
        f"queue is empty).\n\n| what | wall time | note |\n| --- | --- | --- |\n{table}\n"
    )
    (ROOT / "bench" / "SWEEPS.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
