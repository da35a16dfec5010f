"""Spark against the in-process engine: the table data stages (ingest, prepare, features) on a
synthetic Parquet table (bench/synthetic.py: 50 columns, 5 classes) at one or more sizes, with
`engine: local` and with `engine: spark` on local Spark (`spark.master: local[N]` for each N of
--cores), in temporary copies of the repository. Writes its section of docs/performance.md.

    .venv/bin/python bench/spark.py [--rows 1000000 10000000] [--cores 1 2] [--sweep-rows N]

(`make bench` runs it at smaller sizes unless told SPARK_ROWS="1000000 10000000"; --smoke: one
size of 2,000 rows, Spark on every core only.)

Each run is `dvc repro --force --no-run-cache features` in the copy (compose, then the three data
stages; train and the rest do not run). Per stage: wall time, the peak of the stage's whole
process tree's memory (for Spark the driver JVM and the Python workers are child processes of
the stage), sampled every 0.2 s as the sum of the tree's proportional set sizes (PSS, from
/proc/<pid>/smaps_rollup: a page shared by several processes counts once, split between them),
and the stage process's own max RSS (os.wait4, as bench/pipeline.py measures it; for Spark
without the JVM, which the stage does not wait for). The bench doubles as an equality check
at scale: each Spark run's data/features/<split>/x.npy and y.npy must be byte-identical to the
local engine's, and the script fails when one is not.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import resource
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import smoke
from pipeline import DVC, copy_repo, git_commit_all, make_env, run
from quiet import BUSY_CORES, cpu_snapshot, wait_for_idle
from record import stamp, write_section
from synthetic import CATEGORICAL, MISSING_RATE, WITH_MISSING, float32_bytes, write_table
from tables import TABLE, short, use_table

ROOT = Path(__file__).resolve().parents[1]
DATA_STAGES = ("ingest", "prepare", "features")
SPLITS = ("train", "val", "test")
COMPARED = ("x.npy", "y.npy")  # each split's files under data/features, engine against engine
SAMPLE_S = 0.2  # the process-tree memory sampler's period
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


@dataclass
class Run:
    """One engine's data stages on one table."""

    engine: str  # "local" or "spark"
    master: str = ""  # spark.master, for Spark
    others_cores: float = 0.0
    # per stage: wall_s, tree_mib (peak PSS sum of its process tree), rss_mib (its own process)
    stages: dict[str, dict[str, float]] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)  # "<split>/<file>": sha256

    @property
    def label(self) -> str:
        return f"spark {self.master}" if self.engine == "spark" else "local (in-process)"

    @property
    def total_s(self) -> float:
        return sum(st["wall_s"] for st in self.stages.values())


@dataclass
class Size:
    rows: int
    features: int
    table_bytes: int = 0
    runs: list[Run] = field(default_factory=list)

    @property
    def array_mib(self) -> float:
        return float32_bytes(self.rows, self.features) / (1 << 20)


def use_engine(repo: Path, engine: str, master: str) -> None:
    """conf/config.yaml of the copy: `engine` set, and Spark's master when it is Spark."""
    conf = repo / "conf" / "config.yaml"
    text = conf.read_text()
    pairs = [(r"(?m)^engine: \S+", f"engine: {engine}")]
    if master:
        pairs.append((r"(?m)^  master: \S+", f"  master: {master}"))
    for pattern, new in pairs:
        text, found = re.subn(pattern, new, text, count=1)
        if not found:
            raise SystemExit(f"{conf} has no {pattern!r}: update bench/spark.py")
    conf.write_text(text)


def proc_tree() -> dict[int, list[int]]:
    """Every live process's children, by parent pid (from /proc/<pid>/stat)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        # the fields after the command name, which may hold spaces: state, ppid, ...
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def pss_kib(pid: int) -> int:
    """A live process's proportional set size (0 once it is gone)."""
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    line = next((ln for ln in rollup.splitlines() if ln.startswith("Pss:")), "Pss: 0 kB")
    return int(line.split()[1])


def cpu_s(pid: int) -> float | None:
    """A live process's CPU seconds so far, user and system (None once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # utime and stime: the 14th and 15th fields of stat, the 12th and 13th after the name
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def sample_stages(root: int, peaks: dict[str, float], cpu: dict[int, float]) -> None:
    """One sample: for each stage running under `root` (the `dvc repro` process), the summed
    PSS of the processes below its timing shim (pipeline.SHIM, whose own few MiB are left out),
    its peak kept in `peaks` (MiB); and every process's CPU seconds under `root` in `cpu`, as
    Spark's JVM is not a child the stage waits for, so getrusage never counts it."""
    children = proc_tree()
    tree = [root]
    while tree:
        pid = tree.pop()
        if (seconds := cpu_s(pid)) is not None:
            cpu[pid] = seconds
        tree.extend(children.get(pid, []))
    stack = [root]
    while stack:
        pid = stack.pop()
        args = cmdline(pid)
        module = next((a for a in reversed(args) if a.startswith("mlpipeline.stages.")), "")
        if not module:
            stack.extend(children.get(pid, []))
            continue
        # the shim: its descendants are the stage, its JVM and the JVM's Python workers
        total, below = 0, list(children.get(pid, []))
        while below:
            child = below.pop()
            total += pss_kib(child)
            below.extend(children.get(child, []))
        name = module.removeprefix("mlpipeline.stages.")
        peaks[name] = max(peaks.get(name, 0.0), total / 1024)


def digests(repo: Path) -> dict[str, str]:
    features = repo / "data" / "features"
    return {
        f"{split}/{name}": hashlib.sha256((features / split / name).read_bytes()).hexdigest()
        for split in SPLITS
        for name in COMPARED
    }


def data_stages(repo: Path, env: dict[str, str], result: Run) -> None:
    """`dvc repro --force --no-run-cache features` (compose and the data stages, each run again
    even when DVC finds it up to date: spark.master is not a param), measured."""
    log = repo.parent / "repro.log"
    stage_log = Path(env["BENCH_STAGE_LOG"])
    stage_log.unlink(missing_ok=True)
    peaks: dict[str, float] = {}
    cpu: dict[int, float] = {}
    since = cpu_snapshot()
    start = resource.getrusage(resource.RUSAGE_SELF)
    since_self = start.ru_utime + start.ru_stime
    cmd = [DVC, "repro", "--force", "--no-run-cache", "features"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=out, stderr=out)
    done = threading.Event()

    def sample() -> None:
        while not done.wait(SAMPLE_S):
            sample_stages(proc.pid, peaks, cpu)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = proc.wait()
    done.set()
    sampler.join()
    # the machine's CPU less this process's and its tree's, as last sampled (others_cores counts
    # only waited-for children, and would count Spark's JVM as another process)
    wall, machine, _ = (now - then for now, then in zip(cpu_snapshot(), since, strict=True))
    own = resource.getrusage(resource.RUSAGE_SELF)
    own_s = own.ru_utime + own.ru_stime - since_self
    result.others_cores = max(machine - own_s - sum(cpu.values()), 0.0) / wall
    text = log.read_text()
    if code:
        raise SystemExit(f"dvc repro failed in {repo} ({code}):\n{text[-4000:]}")
    ran = [ln.split("'")[1] for ln in text.splitlines() if ln.startswith("Running stage '")]
    if ran[-len(DATA_STAGES) :] != list(DATA_STAGES):
        raise SystemExit(f"dvc repro ran {ran}, not the data stages:\n{text[-4000:]}")
    for line in stage_log.read_text().splitlines():
        entry = json.loads(line)
        name = entry["argv"][-1].removeprefix("mlpipeline.stages.")
        if name in DATA_STAGES:
            result.stages[name] = {
                "wall_s": entry["wall_s"],
                "tree_mib": peaks.get(name, 0.0),
                "rss_mib": entry["rss_kb"] / 1024,
            }
    result.digests = digests(repo)


def measure(rows: int, features: int, cores: list[int], wait_s: float, tmp: Path) -> Size:
    """The local engine, then Spark on each core count, on a table of `rows` rows in a fresh
    copy under `tmp`."""
    size = Size(rows, features)
    repo = tmp / "repo"
    repo.mkdir()
    copy_repo(repo)
    use_table(repo, epochs=1)  # train does not run: only the table's settings matter
    git_commit_all(repo)
    write_table(repo / TABLE, rows, features)
    size.table_bytes = (repo / TABLE).stat().st_size
    env = make_env(tmp, repo)
    run([DVC, "add", TABLE], repo, env)
    git_commit_all(repo)
    for engine, master in [("local", ""), *(("spark", f"local[{n}]") for n in cores)]:
        result = Run(engine, master)
        use_engine(repo, engine, master)
        print(f"{rows:,} rows: {result.label} ...", flush=True)
        wait_for_idle(wait_s)
        data_stages(repo, env, result)
        size.runs.append(result)
        print(
            f"{rows:,} rows: {result.label}: {result.total_s:.1f} s; "
            + ", ".join(
                f"{k} {v['wall_s']:.1f} s {v['tree_mib']:.0f} MiB" for k, v in result.stages.items()
            ),
            flush=True,
        )
    return size


def same(run_: Run, local: Run) -> str:
    """Whether a run's features equal the local engine's, as a table cell."""
    if run_ is local:
        return "the reference"
    differ = [name for name, digest in run_.digests.items() if local.digests[name] != digest]
    return "byte-identical" if not differ else "**DIFFERENT**: " + ", ".join(differ)


def report(sizes: list[Size]) -> str:
    first = sizes[0].runs
    spark = [r for r in first if r.engine == "spark"]
    quiet = all(r.others_cores < BUSY_CORES for s in sizes for r in s.runs)
    lines = [
        stamp(),
        "",
        "The table data stages (`ingest`, `prepare`, `features`; not `train` and after) on a "
        f"synthetic Parquet table (bench/synthetic.py: {sizes[0].features} columns, "
        f"{sizes[0].features - CATEGORICAL} float32 numbers of which {WITH_MISSING} miss "
        f"{MISSING_RATE:.0%} of their values, {CATEGORICAL} text categories missing as many, "
        "5 classes; the tabular defaults `data=tabular`), with `engine: local` (in the stage's "
        "own process) and `engine: spark` on local Spark at "
        + ", ".join(f"`spark.master: {r.master}`" for r in spark)
        + ", one after another in one copy of the repository: `dvc repro --force "
        "--no-run-cache features` each. Wall: each stage's process, Spark's start included "
        "(each stage starts its own session). Tree peak: the peak, sampled every "
        f"{SAMPLE_S} s, of the summed proportional set size (PSS) of the stage's process and "
        "every process below it (for Spark: the driver's JVM and the Python workers), so "
        "shared pages count once; own process: the stage's Python process's max RSS "
        "(os.wait4; for Spark without the JVM, which it does not wait for). Features: "
        "whether `data/features/<split>/x.npy` and `y.npy` of every "
        "split are byte-identical to the local engine's."
        + ("" if quiet else " Other processes kept the CPU busy during some runs (see below)."),
        "",
    ]
    for size in sizes:
        local = size.runs[0]
        lines += [
            f"### {size.rows:,} rows (the Parquet table: {size.table_bytes / (1 << 20):.0f} MiB; "
            f"as a float32 array: {size.array_mib:.0f} MiB)",
            "",
            "| engine | "
            + " | ".join(f"{s}: wall s, tree peak MiB, own process MiB" for s in DATA_STAGES)
            + " | data stages s | features | other processes' CPU |",
            "|---|" + "---:|" * (len(DATA_STAGES) + 1) + "---|---:|",
        ]
        for r in size.runs:
            cells = [
                f"{st['wall_s']:.1f}, {st['tree_mib']:.0f}, {st['rss_mib']:.0f}"
                for st in (r.stages[s] for s in DATA_STAGES)
            ]
            lines.append(
                f"| {r.label} | " + " | ".join(cells) + f" | {r.total_s:.1f} | {same(r, local)} "
                f"| {r.others_cores:.2f} cores |"
            )
        sparks = [r for r in size.runs if r.engine == "spark"]
        one, most = sparks[0], sparks[-1]
        scaling = (
            f"Spark's data stages took {one.total_s:.1f} s on {one.master} and "
            f"{most.total_s:.1f} s on {most.master} (speed-up {one.total_s / most.total_s:.2f}x); "
            if len(sparks) > 1
            else f"Spark's data stages took {most.total_s:.1f} s; "
        )
        lines += [
            "",
            scaling + f"on {most.master}, {most.total_s / local.total_s:.1f}x the local "
            f"engine's {local.total_s:.1f} s.",
        ]
        lines.append("")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--features", type=int, default=50, help="columns of the table")
    every = len(os.sched_getaffinity(0))
    parser.add_argument(
        "--cores",
        type=int,
        nargs="+",
        default=sorted({1, every}),
        help=f"Spark's local[N] for each N (default: 1 and every core, {every})",
    )
    parser.add_argument(
        "--sweep-rows",
        type=int,
        help="run the --cores sweep at sizes up to this many rows only, and Spark on the most "
        "cores above it (default: the sweep at every size)",
    )
    parser.add_argument(
        "--wait", type=float, default=120, help="seconds to wait for an idle CPU before a run"
    )
    parser.add_argument("--json", type=Path, help="write the measurements here too")
    args = smoke.parse_args(parser)
    if args.smoke:
        args.rows, args.cores = [2_000], [every]
    sizes = []
    for rows in sorted(args.rows):
        with tempfile.TemporaryDirectory(prefix="mlpipeline-bench-spark-") as tmp:
            sweep = args.sweep_rows is None or rows <= args.sweep_rows
            cores = args.cores if sweep else [max(args.cores)]
            sizes.append(measure(rows, args.features, cores, args.wait, Path(tmp)))
    text = report(sizes)
    span = short(sizes[0].rows) + (f" to {short(sizes[-1].rows)}" if len(sizes) > 1 else "")
    write_section(
        "spark", f"Spark: the table data stages, local Spark and in-process, {span} rows", text
    )
    if args.json:
        from dataclasses import asdict

        args.json.write_text(json.dumps([asdict(s) for s in sizes], indent=2) + "\n")
    if any("DIFFERENT" in same(r, s.runs[0]) for s in sizes for r in s.runs):
        raise SystemExit("Spark's features differ from the local engine's: see the table above")


if __name__ == "__main__":
    main()
