"""Start-up benchmark: each stage's imports and the cold `dvc repro` of the digits pipeline, at a
baseline revision (before) and at this one (after), side by side.

1. Start-up per stage: `python -X importtime -c "import mlpipeline.stages.<stage>"` for each
   stage that both revisions' dvc.yaml list, with the revision's package folder first on
   PYTHONPATH (the baseline's extracted with `git archive` like bench/serve.py's baseline_tree:
   its kit/, or src/ before the kit had its own; this one's kit/ and src/ as they are on disk).
   The import figure sums the cumulative microseconds of importtime's top-level lines (the
   interpreter's own start-up, site included, and the stage module); wall is the whole process.
   Before and after alternate, one warm-up run each (it writes the .pyc files), then N rounds;
   medians. Also the number of modules imported and whether Lightning is among them.
2. Cold `dvc repro --force` of each revision's pipeline, in a fresh git repository made from
   `git archive REV` in a temporary directory (its DVC cache, site cache and MLflow store there
   too), the venv's bin first on PATH and that copy's package folders on PYTHONPATH; alternating
   before/after, --repro-rounds rounds.

Both revisions run in the same venv (this one's). Nothing waits for a quiet CPU: the machine is
shared, and each figure comes with the CPU that other processes used meanwhile.
--smoke: one round of the first two stages, no warm-up, no cold repro (unless --repro-rounds
says otherwise), nothing written.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import smoke
import yaml
from quiet import cpu_snapshot, others_cores
from record import stamp, write_section

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
BIN = Path(PYTHON).parent
DEFAULT_BASELINE = "e5fa98d"  # the last commit with the kit in src/mlpipeline/


def git(*args: str, cwd: Path = ROOT, input: bytes | None = None) -> bytes:
    proc = subprocess.run(["git", *args], cwd=cwd, input=input, capture_output=True)
    if proc.returncode != 0:
        sys.exit(f"error: git {shlex.join(args)}: {proc.stderr.decode().strip()}")
    return proc.stdout


def package_folders(rev: str) -> list[str]:
    """The folders a revision's packages live in, to go on PYTHONPATH: kit/ (mlpipeline) and
    src/ (myproject) since the kit has its own folder, src/ alone before."""
    listed = git("ls-tree", "--name-only", rev, "kit/mlpipeline").decode().strip()
    return ["kit", "src"] if listed else ["src"]


def extract(rev: str, dest: Path, paths: list[str]) -> None:
    """`git archive` of `paths` at `rev` (all of it when empty), unpacked into `dest`."""
    tar = git("archive", "--format=tar", rev, *paths)
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=tar, check=True)


def pythonpath(tree: Path, folders: list[str]) -> dict[str, str]:
    """The environment for `tree`'s packages, checking that mlpipeline imports from there (and
    not from the venv's editable install of the working tree)."""
    env = os.environ | {"PYTHONPATH": os.pathsep.join(str(tree / f) for f in folders)}
    where = subprocess.run(
        [PYTHON, "-c", "import mlpipeline as m; print(m.__file__)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not Path(where).is_relative_to(tree / folders[0]):
        sys.exit(f"error: mlpipeline imports from {where}, not {tree / folders[0]}")
    return env


def stages_at(rev: str | None) -> list[str]:
    """The stages a revision's dvc.yaml lists (None: the working tree's)."""
    text = (ROOT / "dvc.yaml").read_text() if rev is None else git("show", f"{rev}:dvc.yaml")
    return list(yaml.safe_load(text)["stages"])


@dataclass
class Import:
    import_ms: float
    wall_s: float
    modules: int
    lightning: bool


def parse_importtime(stderr: str) -> tuple[float, int, bool]:
    """importtime's lines: the sum of the top-level imports' cumulative times (ms), the number of
    modules, whether Lightning was among them."""
    total_us, names = 0, []
    for line in stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        parts = line.split("|", 2)
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue  # the header line
        column = parts[2][1:]  # one space follows the bar; the rest is the nesting
        names.append(column.strip())
        if not column.startswith(" "):
            total_us += int(parts[1])
    lightning = any(n == "lightning" or n.startswith("lightning.") for n in names)
    return total_us / 1000, len(names), lightning


def import_once(stage: str, env: dict[str, str]) -> Import:
    cmd = [PYTHON, "-X", "importtime", "-c", f"import mlpipeline.stages.{stage}"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tempfile.gettempdir())
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        where = f"PYTHONPATH={env['PYTHONPATH']}"
        sys.exit(f"error: {shlex.join(cmd)} ({where}):\n{proc.stderr[-3000:]}")
    import_ms, modules, lightning = parse_importtime(proc.stderr)
    return Import(import_ms, wall, modules, lightning)


@dataclass
class Results:
    stages: list[str] = field(default_factory=list)
    # stage -> side ("before", "after") -> runs
    imports: dict[str, dict[str, list[Import]]] = field(default_factory=dict)
    imports_others: float = 0.0  # cores other processes used while the imports ran
    repro: dict[str, list[float]] = field(default_factory=lambda: {"before": [], "after": []})
    repro_others: list[float] = field(default_factory=list)


def startup(envs: dict[str, dict[str, str]], rounds: int, results: Results) -> None:
    for stage in results.stages if not smoke.on() else ():
        for env in envs.values():  # warm-up: .pyc files, the file cache
            import_once(stage, env)
    since = cpu_snapshot()
    for _ in range(rounds):
        for stage in results.stages:
            for side, env in envs.items():  # before and after alternate
                runs = results.imports.setdefault(stage, {}).setdefault(side, [])
                runs.append(import_once(stage, env))
    results.imports_others = others_cores(since)


def repro_copy(rev: str, dest: Path) -> dict[str, str]:
    """A fresh git repository holding `rev`'s tracked files, and the environment to reproduce it
    in: its own packages, MLflow store and DVC caches, all under dest's parent."""
    extract(rev, dest, [])
    smoke.one_epoch(dest)
    identity = ["-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    git("init", "-q", cwd=dest)
    git("add", "-A", cwd=dest)
    git(*identity, "-c", "commit.gpgsign=false", "commit", "-qm", f"bench {rev}", cwd=dest)
    env = pythonpath(dest, package_folders(rev))
    return env | {
        "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")]),
        "MLFLOW_TRACKING_URI": f"sqlite:///{dest.parent / (dest.name + '-mlflow.db')}",
        "DVC_SITE_CACHE_DIR": str(dest.parent / (dest.name + "-dvc-site-cache")),
    }


def cold_repro(repo: Path, env: dict[str, str]) -> float:
    """`dvc repro --force` from scratch: the copy's DVC cache and outputs removed first."""
    subprocess.run(["git", "clean", "-qfdx"], cwd=repo, check=True)  # cache, outputs, store
    for extra in ("-mlflow.db", "-dvc-site-cache"):
        subprocess.run(["rm", "-rf", str(repo.parent / (repo.name + extra))], check=True)
    cmd = [str(BIN / "dvc"), "repro", "--force"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"error: dvc repro --force in {repo}:\n{proc.stdout.decode()[-4000:]}")
    return wall


def repros(revs: dict[str, str], tmp: Path, rounds: int, results: Results) -> None:
    copies = {side: tmp / f"repro-{side}" for side in revs}
    envs = {side: repro_copy(rev, copies[side]) for side, rev in revs.items()}
    for _ in range(rounds):
        for side in revs:  # before and after alternate
            print(f"cold dvc repro ({side}) ...", flush=True)
            since = cpu_snapshot()
            results.repro[side].append(cold_repro(copies[side], envs[side]))
            results.repro_others.append(others_cores(since))


def med(values: list[float]) -> float:
    return statistics.median(values)


def report(results: Results, revs: dict[str, str], args: argparse.Namespace) -> str:
    before, after = revs["before"], revs["after"]
    load_end = os.getloadavg()[0]
    lines = [
        stamp(),
        "",
        f"Before: `{git('log', '-1', '--format=%h', before).decode().strip()}` (its package "
        f"folder {', '.join(f'{f}/' for f in package_folders(before))}); after: HEAD, `{after}` "
        "(kit/ and src/ as they are in the working tree for the imports, as committed for the "
        "repro). Both in the same venv. "
        f"**The machine was shared** (2 cores): load average {load_end:.1f} at the end; other "
        f"processes used {results.imports_others:.2f} cores on average during the imports"
        + (
            f" and {', '.join(f'{c:.2f}' for c in results.repro_others)} during the repro runs"
            if results.repro_others
            else ""
        )
        + ". Nothing waited for a quiet CPU: read the figures as a comparison made side by side "
        "(before and after alternate), not as absolute times.",
        "",
        '### Start-up per stage: `python -X importtime -c "import mlpipeline.stages.<stage>"`',
        "",
        f"Medians of {args.rounds} runs each after one warm-up. Import ms: the sum of the "
        "cumulative times of importtime's top-level lines (the interpreter's own start-up and "
        "site included); wall: the whole process; modules: importtime's lines; Lightning: whether "
        "`lightning` is among them. Stages that only one revision has are left out.",
        "",
        "| stage | import ms before | import ms after | wall s before | wall s after "
        "| modules before | modules after | Lightning before | Lightning after |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    yes = {True: "yes", False: "no"}
    totals = {"before": [0.0, 0.0], "after": [0.0, 0.0]}
    for stage in results.stages:
        b, a = results.imports[stage]["before"], results.imports[stage]["after"]
        row = []
        for side, runs in (("before", b), ("after", a)):
            ms, wall = med([r.import_ms for r in runs]), med([r.wall_s for r in runs])
            totals[side][0] += ms
            totals[side][1] += wall
            row.append((ms, wall, runs[-1].modules, runs[-1].lightning))
        (bm, bw, bn, bl), (am, aw, an, al) = row
        lines.append(
            f"| {stage} | {bm:.0f} | {am:.0f} | {bw:.2f} | {aw:.2f} | {bn} | {an} "
            f"| {yes[bl]} | {yes[al]} |"
        )
    lines += [
        f"| all stages | {totals['before'][0]:.0f} | {totals['after'][0]:.0f} "
        f"| {totals['before'][1]:.2f} | {totals['after'][1]:.2f} | | | | |",
        "",
        "These count only what importing a stage's module pulls in: what a stage imports inside "
        "its functions (where the baseline's stages import their heavy libraries) is paid in the "
        "cold repro below, not here.",
        "",
    ]
    if results.repro["before"]:
        runs = {side: ", ".join(f"{s:.1f}" for s in results.repro[side]) for side in revs}
        lines += [
            "### Cold `dvc repro --force` of the digits pipeline",
            "",
            "Each revision's whole repository (`git archive`) in a fresh git repository, its DVC "
            "cache, outputs and MLflow store removed before each run; before and after alternate. "
            "Both pipelines train the same digits model (their outputs may differ only by the "
            "network's `_target_` name).",
            "",
            "| | before | after |",
            "|---|---:|---:|",
            f"| wall s, median | {med(results.repro['before']):.1f} "
            f"| {med(results.repro['after']):.1f} |",
            f"| wall s, each run | {runs['before']} | {runs['after']} |",
            "",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--baseline",
        default=DEFAULT_BASELINE,
        metavar="REV",
        help=f"the revision to compare with (default {DEFAULT_BASELINE}, the kit still in src/)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="import runs per stage and side")
    parser.add_argument(
        "--repro-rounds", type=int, default=None, help="cold dvc repro runs per side (default 2)"
    )
    args = smoke.parse_args(parser)
    if args.smoke:
        args.rounds = 1
        args.repro_rounds = args.repro_rounds or 0
    elif args.repro_rounds is None:
        args.repro_rounds = 2
    # resolved now: a commit made while it runs must not change what the report names
    head = git("rev-parse", "--short", "HEAD").decode().strip()
    revs = {"before": args.baseline, "after": head}
    git("rev-parse", "--verify", f"{args.baseline}^{{commit}}")
    results = Results()
    mine = set(stages_at(None))
    results.stages = [s for s in stages_at(args.baseline) if s in mine]
    if args.smoke:  # the first two stages only, no warm-up: it only has to run
        results.stages = results.stages[:2]
    with tempfile.TemporaryDirectory(prefix="mlpipeline-startup-") as tmp_name:
        tmp = Path(tmp_name)
        base_folders = package_folders(args.baseline)
        extract(args.baseline, tmp / "baseline", base_folders)
        envs = {
            "before": pythonpath(tmp / "baseline", base_folders),
            "after": pythonpath(ROOT, ["kit", "src"]),
        }
        if args.repro_rounds:  # first: a pipeline that fails, fails early
            repros(revs, tmp, args.repro_rounds, results)
        print(f"start-up of {len(results.stages)} stages ...", flush=True)
        startup(envs, args.rounds, results)
    text = report(results, revs, args)
    write_section(
        "startup", f"Start-up and cold `dvc repro`: {args.baseline} against this revision", text
    )


if __name__ == "__main__":
    main()
