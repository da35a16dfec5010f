"""Pipeline benchmarks; `make bench` runs them and writes their section of docs/performance.md.

1. Cold `dvc repro --force` in a temporary copy of the repository, split per stage into
   start-up (imports) and work, with each stage's peak memory (max RSS).
2. No-op `dvc repro` of that copy against a one-stage pipeline.
3. Training throughput: Lightning against a plain PyTorch loop on the digits CNN
   (bench/throughput.py), reported without a goal (the goal is the tabular one).

Everything runs in temporary directories: the working tree, its DVC cache and its MLflow store
are never touched. The machines are shared, so each measurement waits for, or is repeated
until it gets, an otherwise idle CPU (bench/quiet.py); figures that never got one are marked.
--smoke: one run of each, one-epoch training.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import smoke
import yaml
from quiet import BUSY_CORES, cpu_snapshot, others_cores, repeat_quietly, wait_for_idle
from record import stamp, write_section
from throughput_report import report as throughput_report

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
DVC = str(Path(PYTHON).parent / "dvc")
STAGES = tuple(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])
GOALS = {"cold_s": 60.0, "noop_ratio": 1.5, "explain_ratio": 0.20}

# What each stage imports inside its functions on the default pipeline, on top of
# `import mlpipeline.stages.<stage>`: kept by hand, so check it when a stage's imports change.
# What is left (e.g. Hydra's plugin scan) counts as work.
LAZY_IMPORTS = {
    # check_targets imports every `_target_`, Lightning's Trainer included
    "compose": "torch.optim lightning.pytorch myproject.models.nets",
    # the digits file is read without importing scikit-learn
    "ingest": "pyarrow.parquet",
    "prepare": "pyarrow.parquet sklearn.model_selection",
    "data_report": "pyarrow.parquet pyarrow.compute matplotlib.pyplot "
    "matplotlib.backends.backend_agg",
    "features": "",  # images are copied as prepared
    "crossval": "",  # off by default (cv.folds: 0)
    "train": "lightning torch torchmetrics hydra.utils mlpipeline.data.datamodule "
    "myproject.models.module mlpipeline.models.history mlpipeline.models.modelfile "
    "mlpipeline.models.training",
    "evaluate": "torch torchmetrics.functional.classification mlpipeline.models.modelfile "
    "mlpipeline.determinism",
    "export": "torch torch.onnx onnxruntime mlpipeline.models.modelfile mlpipeline.determinism",
    "explain": "torch captum.attr matplotlib.pyplot matplotlib.backends.backend_agg "
    "mlpipeline.models.modelfile mlpipeline.determinism",
    "profile": "torch mlpipeline.models.modelfile mlpipeline.determinism",
    "register": "onnx onnxruntime mlflow.onnx mlflow.pyfunc mlflow.models "
    "mlflow.store.tracking.sqlalchemy_store mlflow.store.model_registry.sqlalchemy_store "
    "alembic.command matplotlib.pyplot matplotlib.backends.backend_agg",
}

# Put first on PATH as `python`, so the stage commands of the real `dvc repro` run under it.
SHIM = """#!{python} -S
import json, os, sys, time
start = time.perf_counter()
pid = os.posix_spawn({python!r}, [{python!r}, *sys.argv[1:]], os.environ)
_, status, usage = os.wait4(pid, 0)
entry = {{"argv": sys.argv[1:], "wall_s": time.perf_counter() - start, "rss_kb": usage.ru_maxrss}}
with open(os.environ["BENCH_STAGE_LOG"], "a") as log:
    log.write(json.dumps(entry) + "\\n")
sys.exit(os.waitstatus_to_exitcode(status))
"""

ONE_STAGE_DVC_YAML = "stages:\n  one:\n    cmd: echo done > out.txt\n    outs:\n      - out.txt\n"


@dataclass
class Stage:
    wall_s: float
    rss_mib: float
    import_s: float = float("nan")


@dataclass
class Results:
    cold_s: float = 0.0
    cold_others_cores: float = 0.0  # CPU other processes used during the cold run
    stages: dict[str, Stage] = field(default_factory=dict)
    imports_quiet: bool = True
    noop: list[tuple[float, float]] = field(default_factory=list)  # (six-stage, one-stage)
    noop_quiet: bool = True
    throughput: dict[str, Any] = field(default_factory=dict)


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[float, str]:
    """Run a command; return its wall time and its output (stdout and stderr together)."""
    start = time.perf_counter()
    proc = subprocess.run(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{shlex.join(cmd)} failed in {cwd} ({proc.returncode}):\n{proc.stdout[-4000:]}")
    return wall, proc.stdout


def git_commit_all(repo: Path) -> None:
    run(["git", "add", "-A"], repo)
    identity = ["-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    run(["git", *identity, "-c", "commit.gpgsign=false", "commit", "-qm", "bench"], repo)


def copy_repo(dest: Path) -> None:
    """The git-tracked files of the working tree (as they are now), in a fresh git repo; in
    smoke mode with one-epoch training."""
    listing = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    for name in filter(None, listing.split("\0")):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    smoke.one_epoch(dest)
    run(["git", "init", "-q"], dest)
    git_commit_all(dest)


def make_env(tmp: Path, repo: Path) -> dict[str, str]:
    shim_dir = tmp / "shim"
    shim_dir.mkdir()
    shim = shim_dir / "python"
    shim.write_text(SHIM.format(python=PYTHON))
    shim.chmod(0o755)
    return os.environ | {
        "PATH": os.pathsep.join([str(shim_dir), str(Path(PYTHON).parent), os.environ["PATH"]]),
        # the copy's code, not the editable install's
        "PYTHONPATH": f"{repo / 'src'}:{repo / 'kit'}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
        "DVC_SITE_CACHE_DIR": str(tmp / "dvc-site-cache"),
        "BENCH_STAGE_LOG": str(tmp / "stages.jsonl"),
    }


def cold_repro(repo: Path, env: dict[str, str], results: Results) -> None:
    # --force: on a fresh clone plain `dvc repro` skips evaluate when the retrained model is
    # byte-identical to dvc.lock (its outputs are committed); the goal is for the whole pipeline.
    since = cpu_snapshot()
    results.cold_s, _ = run([DVC, "repro", "--force"], repo, env)
    results.cold_others_cores = others_cores(since)
    for line in Path(env["BENCH_STAGE_LOG"]).read_text().splitlines():
        entry = json.loads(line)
        stage = entry["argv"][-1].removeprefix("mlpipeline.stages.")
        results.stages[stage] = Stage(entry["wall_s"], entry["rss_kb"] / 1024)


def import_times(repo: Path, env: dict[str, str], reps: int, results: Results) -> None:
    for name, stage in results.stages.items():
        modules = ", ".join([f"mlpipeline.stages.{name}", *LAZY_IMPORTS[name].split()])
        # the heap frozen as every stage's CLI leaves it at exit (mlpipeline.errors): a plain
        # import-and-exit would also count the final collections the stages skip
        cmd = [PYTHON, "-c", f"import {modules}; import gc; gc.freeze()"]
        walls, quiet = repeat_quietly(lambda cmd=cmd: run(cmd, repo, env)[0], reps, 2 * reps)
        stage.import_s = statistics.median(walls)
        results.imports_quiet &= quiet


def one_stage_repo(repo: Path, env: dict[str, str]) -> None:
    repo.mkdir()
    (repo / "dvc.yaml").write_text(ONE_STAGE_DVC_YAML)
    run(["git", "init", "-q"], repo)
    run([DVC, "init", "-q"], repo, env)
    shutil.copy(ROOT / ".dvc" / "config", repo / ".dvc" / "config")  # same DVC settings
    git_commit_all(repo)
    run([DVC, "repro"], repo, env)


def noop_repro(repo: Path, env: dict[str, str]) -> float:
    wall, output = run([DVC, "repro"], repo, env)
    # the compose stage runs on every repro (always_changed): it checks params.yaml against conf/
    ran = set(re.findall(r"^Running stage '([^']+)'", output, flags=re.M)) - {"compose"}
    if ran:
        sys.exit(f"`dvc repro` in {repo} was not a no-op:\n{output[-2000:]}")
    return wall


def noop_repros(full: Path, one: Path, env: dict[str, str], reps: int, results: Results) -> None:
    for repo in (full, one):  # warm-up: DVC's hash caches, the file cache
        noop_repro(repo, env)
    # in pairs, so that both pipelines meet the same machine conditions
    pairs, results.noop_quiet = repeat_quietly(
        lambda: (noop_repro(full, env), noop_repro(one, env)), reps, 2 * reps
    )
    results.noop = pairs


def throughput(repo: Path, env: dict[str, str], epochs: int, rounds: int, results: Results) -> None:
    script = ROOT / "bench" / "throughput.py"
    cmd = [PYTHON, str(script), str(repo), "--epochs", str(epochs), "--rounds", str(rounds)]
    _, output = run(cmd, repo, env)
    last_json_line = next(ln for ln in reversed(output.splitlines()) if ln.startswith("{"))
    results.throughput = json.loads(last_json_line)


def verdict(ok: bool, quiet: bool) -> str:
    text = "met" if ok else "**MISSED**"
    return text if quiet else f"{text}; UNRELIABLE: other processes kept the CPU busy"


def report(results: Results, args: argparse.Namespace, loadavg: str) -> str:
    cold_ok = results.cold_s <= GOALS["cold_s"]
    cold_quiet = results.cold_others_cores < BUSY_CORES
    quiet_rule = (
        f"quiet means other processes used under {BUSY_CORES} cores meanwhile; runs that were "
        "not are repeated (up to twice as many runs in all), and only the quiet ones count"
    )
    lines = [
        stamp(),
        "",
        f"### 1. Cold `dvc repro --force` in a fresh copy: {results.cold_s:.1f} s "
        f"(goal <= {GOALS['cold_s']:.0f} s: {verdict(cold_ok, cold_quiet)})",
        "",
        f"Other processes used {results.cold_others_cores:.2f} cores during the run. Wall and max "
        "RSS: each stage's process inside that `dvc repro`. Imports: median of "
        f"{args.import_reps} runs of `python -c 'import mlpipeline.<stage>, <what the stage "
        "imports inside its functions>; import gc; gc.freeze()'` (its exit frozen like the stages')"
        + ("" if results.imports_quiet else " (UNRELIABLE: too few were quiet, all runs count)")
        + f"; work = wall - imports; {quiet_rule}.",
        "",
        "| stage | wall s | imports s | work s | max RSS MiB |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in STAGES:
        s = results.stages.get(name)
        if s is None:
            lines.append(f"| {name} | skipped | | | |")
            continue
        lines.append(
            f"| {name} | {s.wall_s:.2f} | {s.import_s:.2f} | {s.wall_s - s.import_s:.2f} "
            f"| {s.rss_mib:.0f} |"
        )
    stage_total = sum(s.wall_s for s in results.stages.values())
    import_total = sum(s.import_s for s in results.stages.values())
    lines += [
        f"| all stages | {stage_total:.2f} | {import_total:.2f} | "
        f"{stage_total - import_total:.2f} | |",
        f"| DVC itself (repro - stages) | {results.cold_s - stage_total:.2f} | | | |",
        "",
    ]
    if "explain" in results.stages and "train" in results.stages:
        explain, train = results.stages["explain"], results.stages["train"]
        explain_ratio = explain.wall_s / train.wall_s
        work_ratio = (explain.wall_s - explain.import_s) / (train.wall_s - train.import_s)
        lines += [
            f"The explain stage took {explain_ratio:.2f} of the train stage's wall time (goal <= "
            f"{GOALS['explain_ratio']:.2f}: "
            f"{verdict(explain_ratio <= GOALS['explain_ratio'], cold_quiet)}); its work alone "
            f"(wall - imports) {work_ratio:.2f} of train's.",
            "",
        ]
    full = statistics.median(f for f, _ in results.noop)
    one = statistics.median(o for _, o in results.noop)
    ratio = full / one
    lines += [
        f"### 2. No-op `dvc repro`: {full:.2f} s against {one:.2f} s for a one-stage pipeline, "
        f"ratio {ratio:.2f} (goal <= {GOALS['noop_ratio']}: "
        f"{verdict(ratio <= GOALS['noop_ratio'], results.noop_quiet)})",
        "",
        f"Medians of {len(results.noop)} pairs of runs (the pipeline, one stage) after one warm-up "
        f"each: {', '.join(f'({f:.2f}, {o:.2f})' for f, o in results.noop)} s; {quiet_rule}.",
        "",
    ]
    lines += throughput_report(results.throughput, "3. Training throughput")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="no-op dvc repro pairs")
    parser.add_argument("--import-reps", type=int, default=3, help="import-only runs per stage")
    parser.add_argument("--epochs", type=int, default=20, help="timed epochs per training run")
    parser.add_argument("--rounds", type=int, default=5, help="training runs per loop")
    parser.add_argument(
        "--wait", type=float, default=120, help="seconds to wait for an idle CPU before a run"
    )
    args = smoke.parse_args(parser)
    if args.smoke:  # one of everything
        args.reps, args.import_reps, args.epochs, args.rounds = 1, 1, 1, 1
    loadavg = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    results = Results()
    with tempfile.TemporaryDirectory(prefix="mlpipeline-bench-") as tmp_name:
        tmp = Path(tmp_name)
        repo = tmp / "repo"
        repo.mkdir()
        copy_repo(repo)
        env = make_env(tmp, repo)
        print("cold dvc repro ...", flush=True)
        wait_for_idle(args.wait)
        cold_repro(repo, env, results)
        print("import times ...", flush=True)
        import_times(repo, env, args.import_reps, results)
        print("no-op dvc repro ...", flush=True)
        one_stage_repo(tmp / "one-stage", env)
        wait_for_idle(args.wait)
        noop_repros(repo, tmp / "one-stage", env, args.reps, results)
        print("training throughput ...", flush=True)
        wait_for_idle(args.wait)
        throughput(repo, env, args.epochs, args.rounds, results)
    text = report(results, args, loadavg)
    write_section("pipeline", "The pipeline: cold and no-op `dvc repro`, training throughput", text)


if __name__ == "__main__":
    main()
