"""Orchestration overhead: the default pipeline as the Airflow DAG (`airflow dags test`, each
task in a checkout, as `checkout` mode runs it) against a plain `dvc repro`, each cold in its
own fresh copy of the repository, then each again with nothing to do. The DAG's time is split
into what each task's runner spends on each step (its `runner: ... took` lines), the rest of
each task (Airflow's task start-up and the runner's own start), and Airflow's share outside the
tasks (parsing the DAG, which asks DVC for the graph, and its scheduling loop).

Everything runs in temporary directories; the working tree is never touched. Needs the Airflow
environment (`make airflow-install`; `make bench` installs it). Writes its section of
docs/performance.md. --smoke: one-epoch training in both copies.
"""

from __future__ import annotations

import argparse
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import smoke
from pipeline import copy_repo
from quiet import wait_for_idle
from record import stamp, write_section

ROOT = Path(__file__).resolve().parents[1]
AIRFLOW = ROOT / ".venv-airflow" / "bin" / "airflow"
DVC = str(Path(sys.executable).parent / "dvc")
STEP = re.compile(r"runner: (.+?) took ([0-9.]+) s")


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    """Wall time and output (stdout and stderr) of a command that must succeed."""
    wait_for_idle(60)
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, text=True, capture_output=True)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return elapsed, proc.stdout + proc.stderr


def task_seconds(db: Path) -> dict[str, float]:
    """Each task's duration in the DAG's last run, from Airflow's metadata database."""
    with sqlite3.connect(db) as conn:
        run_id = conn.execute("SELECT run_id FROM dag_run ORDER BY id DESC LIMIT 1").fetchone()[0]
        rows = conn.execute(
            "SELECT task_id, start_date, end_date FROM task_instance WHERE run_id = ?", (run_id,)
        ).fetchall()
    return {
        task: (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
        for task, start, end in rows
    }


def steps(output: str) -> dict[str, float]:
    """The runner's steps summed over the tasks, from their `runner: ... took` lines."""
    totals: dict[str, float] = defaultdict(float)
    for name, seconds in STEP.findall(output):
        totals[name] += float(seconds)
    return dict(totals)


def main() -> None:
    # smoke mode reaches copy_repo (one epoch) and the waits for a quiet CPU (none)
    smoke.parse_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    if not AIRFLOW.is_file():
        sys.exit(f"error: {AIRFLOW} not found: make airflow-install")
    with tempfile.TemporaryDirectory(prefix="bench-orchestration-") as tmp_name:
        tmp = Path(tmp_name)
        plain, dag = tmp / "plain", tmp / "dag"
        for repo in (plain, dag):
            repo.mkdir()
            copy_repo(repo)
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
        home = tmp / "airflow"
        (home / "dags").mkdir(parents=True)
        (home / "dags" / "mlpipeline_dags.py").write_bytes(
            (ROOT / "dags/mlpipeline_dags.py").read_bytes()
        )
        airflow_env = env | {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "MLPIPELINE_REPO": str(dag),
            "MLPIPELINE_PYTHON": sys.executable,
        }
        subprocess.run([str(AIRFLOW), "db", "migrate"], env=airflow_env, check=True,
                       capture_output=True)  # fmt: skip
        dags_test = [str(AIRFLOW), "dags", "test", "mlpipeline"]

        cold_plain, _ = timed([DVC, "repro"], plain, env)
        cold_dag, output = timed(dags_test, dag, airflow_env)
        tasks = task_seconds(home / "airflow.db")
        runner = steps(output)
        noop_plain, _ = timed([DVC, "repro"], plain, env)
        noop_dag, noop_output = timed(dags_test, dag, airflow_env)
        noop_tasks = task_seconds(home / "airflow.db")
        noop_runner = steps(noop_output)

    n = len(tasks)

    def rows(runner: dict[str, float], tasks: dict[str, float], total: float) -> list[str]:
        inside = sum(tasks.values())
        lines = [f"| {name} | {s:.1f} | {s / n:.2f} |" for name, s in runner.items()]
        rest = inside - sum(runner.values())
        lines.append(f"| rest of each task: Airflow's task start, the runner's and DVC's starts | "
                     f"{rest:.1f} | {rest / n:.2f} |")  # fmt: skip
        lines.append(f"| outside the tasks: `dags test` start, DAG parse (DVC's graph), "
                     f"scheduling | {total - inside:.1f} | |")  # fmt: skip
        return lines

    def compare(what: str, plain: float, dag: float) -> str:
        ratio = f"{dag - plain:+.1f} s ({dag / plain:.2f}x)"
        return f"| {what} | {plain:.1f} s | {dag:.1f} s | {ratio} |"

    head = "| where the time goes | total, s | per task, s |\n| --- | --- | --- |"
    body = f"""{stamp()}

The default pipeline ({n} stages) in fresh copies of the repository: a plain `dvc repro`
against the DAG run by `airflow dags test` (Airflow 3 on SQLite, no scheduler; each task runs
its stage with `python -m mlpipeline.ops.orchestrate run` in the copy, as `checkout` mode
does), one run each.

| run | `dvc repro` | the DAG | overhead |
| --- | --- | --- | --- |
{compare("cold (every stage runs but `evaluate`)", cold_plain, cold_dag)}
{compare("nothing to do", noop_plain, noop_dag)}

Where the cold DAG run's time goes (`dvc repro` is the stage itself plus DVC's start and its
hashing, which a plain `dvc repro` pays once for the whole pipeline):

{head}
{chr(10).join(rows(runner, tasks, cold_dag))}

The run with nothing to do:

{head}
{chr(10).join(rows(noop_runner, noop_tasks, noop_dag))}

Per task the DAG pays what one `dvc repro` pays once: a Python start and DVC's import, twice
(the runner's plan, which reads DVC's index; then one DVC process for pull, repro and push,
each of which reads the pipeline again), and the hand-off (a git status); with tasks on
separate workers that is the price of sharing nothing but the DVC remote.
"""
    write_section("orchestration", "Orchestration: the pipeline as an Airflow DAG", body)


if __name__ == "__main__":
    main()
