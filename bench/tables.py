"""Large tables: the whole pipeline (`dvc repro`, every stage) on a synthetic Parquet table
(bench/synthetic.py: 50 columns, 5 classes) at two or more sizes, in temporary copies of the
repository. Writes its section of docs/performance.md.

    .venv/bin/python bench/tables.py [--rows 1000000 10000000] [--epochs 1]

(`make bench` runs it at smaller sizes unless told TABLE_ROWS="1000000 10000000"; --smoke: one
size of 2,000 rows.)

Per size: each stage's wall time and peak memory (max RSS of its process, from os.wait4, as
bench/pipeline.py measures them), DVC's own peak memory, the whole `dvc repro`'s time, and the
disk the workspace and the DVC cache take together (the cache links files instead of copying
them, .dvc/config). Goals (issue 15): every stage's peak RSS at most 2.5x the table as a
float32 array (rows x 50 x 4 bytes) at the largest size, and the pipeline's time growing at
most 1.1x as fast as the rows (11x from 1M to 10M rows).

The configuration is the tabular defaults (`data=tabular`, `model=mlp`) with one change: the
epoch count is fixed (`--epochs`, default 1) and the same at every size, where the defaults
train up to 100 epochs with early stopping, which would make the time ratio a ratio of epoch
counts. Disk: the section's disk table says how much each size needs free.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import smoke
import yaml
from pipeline import DVC, copy_repo, git_commit_all, make_env, run
from quiet import BUSY_CORES, cpu_snapshot, others_cores, wait_for_idle
from record import stamp, write_section
from synthetic import CATEGORICAL, LABEL, MISSING_RATE, WITH_MISSING, float32_bytes, write_table

ROOT = Path(__file__).resolve().parents[1]
STAGES = tuple(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])
TABLE = "data/raw/table.parquet"
# what the stages write (and DVC caches), besides the raw table
OUTPUTS = ("data/ingested", "data/prepared", "data/features", "models")
GOALS = {"rss_per_array": 2.5, "time_per_rows": 1.1}
GIB = 1 << 30


@dataclass
class Disk:
    """Bytes: files' sizes in the workspace and in the cache, and the blocks both hold on
    disk together (a file linked into the cache counts once)."""

    workspace: int = 0
    cache: int = 0
    allocated: int = 0
    links: dict[str, int] = field(default_factory=dict)  # workspace files by link kind


@dataclass
class Size:
    rows: int
    features: int
    table_bytes: int = 0  # the Parquet file
    generate_s: float = 0.0
    add_s: float = 0.0  # dvc add of the table
    repro_s: float = 0.0
    others_cores: float = 0.0
    stages: dict[str, dict[str, float]] = field(default_factory=dict)  # wall_s, rss_mib
    dvc_rss_mib: float = 0.0
    inputs: int = 0  # the network's inputs (numbers, missing indicators, one-hot slots)
    disk: Disk = field(default_factory=Disk)
    peak_allocated: int = 0  # during `dvc repro`
    relinked: Disk = field(default_factory=Disk)  # after `dvc checkout --relink`

    @property
    def array_mib(self) -> float:
        return float32_bytes(self.rows, self.features) / (1 << 20)


def tabular_batch_size() -> int:
    """conf/data/tabular.yaml's batch size, the one the runs use."""
    return int(yaml.safe_load((ROOT / "conf/data/tabular.yaml").read_text())["data"]["batch_size"])


def use_table(repo: Path, epochs: int) -> None:
    """conf/ of the copy: the tabular defaults on the Parquet table, `epochs` epochs."""
    edits = {
        "conf/config.yaml": [("  - data: digits\n", "  - data: tabular\n"),
                             ("  - model: cnn\n", "  - model: mlp\n")],
        "conf/data/tabular.yaml": [("kind: csv ", "kind: parquet "),
                                   ("path: data/raw/data.csv", f"path: {TABLE}"),
                                   ("label: label\n", f"label: {LABEL}\n"),
                                   ("max_epochs: 100 ", f"max_epochs: {epochs} ")],
    }  # fmt: skip
    for name, pairs in edits.items():
        text = (repo / name).read_text()
        for old, new in pairs:
            if old not in text:
                raise SystemExit(f"{name} has no {old.strip()!r}: update bench/tables.py")
            text = text.replace(old, new, 1)
        (repo / name).write_text(text)


def scan(repo: Path) -> Disk:
    """The workspace outputs' and the cache's file sizes, and the blocks the whole copy holds
    (each inode once, symlinks not followed)."""
    disk = Disk(allocated=allocated(repo))
    disk.links = {"hardlink": 0, "symlink": 0, "copy or reflink": 0}
    cache = repo / ".dvc" / "cache"
    disk.cache = sum(p.lstat().st_size for p in cache.rglob("*") if p.is_file())
    for name in (TABLE, *OUTPUTS):
        top = repo / name
        for path in [top] if not top.is_dir() else top.rglob("*"):
            if path.is_symlink():
                disk.links["symlink"] += 1
                disk.workspace += path.stat().st_size
            elif path.is_file():
                info = path.stat()
                kind = "hardlink" if info.st_nlink > 1 else "copy or reflink"
                disk.links[kind] += 1
                disk.workspace += info.st_size
    return disk


def vm_hwm_mib(pid: int) -> float | None:
    """A live process's peak RSS so far (VmHWM), or None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    line = next((ln for ln in status.splitlines() if ln.startswith("VmHWM:")), "VmHWM: 0 kB")
    return int(line.split()[1]) / 1024


def repro(repo: Path, env: dict[str, str], size: Size) -> None:
    """`dvc repro` with DVC's own peak memory and the copy's peak disk use sampled meanwhile."""
    import subprocess

    log = repo.parent / "repro.log"
    since = cpu_snapshot()
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen([DVC, "repro"], cwd=repo, env=env, stdout=out, stderr=out)
    done = threading.Event()

    def sample() -> None:
        while not done.wait(1.0):
            if (hwm := vm_hwm_mib(proc.pid)) is not None:
                size.dvc_rss_mib = max(size.dvc_rss_mib, hwm)
            size.peak_allocated = max(size.peak_allocated, allocated(repo))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = proc.wait()
    size.repro_s = time.perf_counter() - start
    size.others_cores = others_cores(since)
    done.set()
    sampler.join()
    text = log.read_text()
    if code:
        raise SystemExit(f"dvc repro failed in {repo} ({code}):\n{text[-4000:]}")
    ran = [ln.split("'")[1] for ln in text.splitlines() if ln.startswith("Running stage '")]
    if ran != list(STAGES):
        raise SystemExit(f"dvc repro ran {ran}, not every stage {list(STAGES)}:\n{text[-4000:]}")
    for line in Path(env["BENCH_STAGE_LOG"]).read_text().splitlines():
        entry = json.loads(line)
        stage = entry["argv"][-1].removeprefix("mlpipeline.stages.")
        size.stages[stage] = {"wall_s": entry["wall_s"], "rss_mib": entry["rss_kb"] / 1024}


def allocated(repo: Path) -> int:
    """Blocks the copy holds on disk now (each inode once); files that vanish meanwhile (a
    stage's temporary outputs) are skipped."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for path in repo.rglob("*"):
        try:
            info = path.lstat()
        except FileNotFoundError:
            continue
        if (info.st_dev, info.st_ino) not in seen:
            seen.add((info.st_dev, info.st_ino))
            total += info.st_blocks * 512
    return total


def measure(rows: int, features: int, epochs: int, wait_s: float, tmp: Path) -> Size:
    """The pipeline on a table of `rows` rows in a fresh copy under `tmp`."""
    size = Size(rows, features)
    repo = tmp / "repo"
    repo.mkdir()
    copy_repo(repo)
    use_table(repo, epochs)
    git_commit_all(repo)
    start = time.perf_counter()
    write_table(repo / TABLE, rows, features)
    size.generate_s = time.perf_counter() - start
    size.table_bytes = (repo / TABLE).stat().st_size
    env = make_env(tmp, repo)
    size.add_s = run([DVC, "add", TABLE], repo, env)[0]
    git_commit_all(repo)
    print(f"{rows:,} rows: table written in {size.generate_s:.0f} s, dvc repro ...", flush=True)
    wait_for_idle(wait_s)
    repro(repo, env, size)
    size.disk = scan(repo)
    run([DVC, "checkout", "--relink", "--quiet"], repo, env)
    size.relinked = scan(repo)
    size.inputs = len(json.loads((repo / "data/features/meta.json").read_text())["feature_names"])
    return size


def verdict(ok: bool, quiet: bool = True) -> str:
    text = "met" if ok else "**MISSED**"
    return text if quiet else f"{text}; other processes kept the CPU busy meanwhile"


def report(sizes: list[Size], epochs: int) -> str:
    small, large = sizes[0], sizes[-1]
    budget = GOALS["rss_per_array"] * large.array_mib
    worst = max(large.stages, key=lambda s: large.stages[s]["rss_mib"])
    worst_rss = large.stages[worst]["rss_mib"]
    rows_ratio = large.rows / small.rows
    time_ratio = large.repro_s / small.repro_s
    time_goal = GOALS["time_per_rows"] * rows_ratio
    quiet = all(s.others_cores < BUSY_CORES for s in sizes)
    over = ", ".join(
        f"{name} {st['rss_mib'] / large.array_mib:.2f}x"
        for name, st in large.stages.items()
        if st["rss_mib"] > budget
    )
    lines = [
        stamp(),
        "",
        f"The tabular defaults (`data=tabular`, `model=mlp`: batch size {tabular_batch_size()}) "
        "on a synthetic "
        f"Parquet table (bench/synthetic.py: {large.features} columns, "
        f"{large.features - CATEGORICAL} float32 numbers of which {WITH_MISSING} miss "
        f"{MISSING_RATE:.0%} of their values, {CATEGORICAL} text categories missing as many, "
        f"5 classes), with one change: **{epochs} epoch{'s' if epochs > 1 else ''} at every "
        "size** (`trainer.max_epochs`), where the defaults train up to 100 epochs with early "
        "stopping, which would make the time ratio a ratio of epoch counts. Each size runs "
        "plain `dvc repro` in a fresh copy of the repository after `dvc add` of the table. "
        "Peak memory is each stage process's max RSS (os.wait4), which counts the pages of "
        "memory-mapped files it touched; DVC's is its own process's (VmHWM).",
        "",
        f"- Peak memory at {large.rows:,} rows: the largest stage, {worst}, "
        f"{worst_rss / 1024:.2f} GiB = {worst_rss / large.array_mib:.2f}x the float32 array "
        f"({large.rows:,} x {large.features} x 4 bytes = {large.array_mib / 1024:.2f} GiB; "
        f"goal <= {GOALS['rss_per_array']}x = {budget / 1024:.2f} GiB: "
        f"{verdict(worst_rss <= budget)})",
        f"- Stages over the memory goal at {large.rows:,} rows: {over or 'none'}",
        f"- Pipeline time from {small.rows:,} to {large.rows:,} rows: {small.repro_s:.0f} s to "
        f"{large.repro_s:.0f} s, {time_ratio:.2f}x for {rows_ratio:.0f}x the rows (goal <= "
        f"{time_goal:.0f}x: {verdict(time_ratio <= time_goal, quiet)})",
        "",
        "| stage | "
        + " | ".join(f"{s.rows:,} rows: wall s, max RSS GiB (x array)" for s in sizes)
        + " |",
        "|---|" + "---:|" * len(sizes),
    ]
    for name in STAGES:
        cells = []
        for s in sizes:
            st = s.stages.get(name)
            cells.append(
                f"{st['wall_s']:.1f} s, {st['rss_mib'] / 1024:.2f} GiB "
                f"({st['rss_mib'] / s.array_mib:.2f}x)"
                if st
                else "not run"
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")

    def row(label: str, cell: Any) -> str:
        return f"| {label} | " + " | ".join(cell(s) for s in sizes) + " |"

    def gib(n: float) -> str:
        return f"{n / GIB:.2f} GiB"

    def dvc_own_s(s: Size) -> str:
        return f"{s.repro_s - sum(st['wall_s'] for st in s.stages.values()):.1f} s"

    def inputs(s: Size) -> str:
        return f"{s.inputs} per row, {gib(float32_bytes(s.rows, s.inputs))}"

    lines += [
        row("`dvc repro`, all of it",
            lambda s: f"{s.repro_s:.1f} s, DVC {s.dvc_rss_mib / 1024:.2f} GiB"),
        row("DVC itself (repro - stages)", dvc_own_s),
        row("other processes' CPU during the run", lambda s: f"{s.others_cores:.2f} cores"),
        row("the float32 array (rows x columns x 4)",
            lambda s: gib(float32_bytes(s.rows, s.features))),
        row("the network's inputs (features stage)", inputs),
        row("the Parquet table; written in, `dvc add` in",
            lambda s: f"{gib(s.table_bytes)}; {s.generate_s:.0f} s, {s.add_s:.1f} s"),
        "",
        "Disk: the sizes of the files in the workspace (the table and every stage output) "
        "and in the DVC cache, and the blocks the whole copy holds on disk, each inode once "
        "(a file linked into the cache counts once); peak: sampled every second during "
        "`dvc repro`, temporary outputs included.",
        "",
        "| | " + " | ".join(f"{s.rows:,} rows" for s in sizes) + " |",
        "|---|" + "---:|" * len(sizes),
        row("workspace files", lambda s: gib(s.disk.workspace)),
        row("DVC cache files", lambda s: gib(s.disk.cache)),
        row("on disk, both together (after; peak)",
            lambda s: f"{gib(s.disk.allocated)}; {gib(s.peak_allocated)}"),
        row("workspace files by link to the cache",
            lambda s: ", ".join(f"{k} {v}" for k, v in s.disk.links.items())),
        row("on disk after `dvc checkout --relink`; files by link",
            lambda s: f"{gib(s.relinked.allocated)}; "
            + ", ".join(f"{k} {v}" for k, v in s.relinked.links.items())),
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


def short(rows: int) -> str:
    """A row count as the section's title says it: 1M, 200k, 500."""
    for unit, size in (("M", 1_000_000), ("k", 1_000)):
        if rows >= size and rows % (size // 10) == 0:
            return f"{rows / size:g}{unit}"
    return str(rows)


def main() -> None:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--features", type=int, default=50, help="columns of the table")
    parser.add_argument("--epochs", type=int, default=1, help="trainer.max_epochs, every size")
    parser.add_argument(
        "--wait", type=float, default=120, help="seconds to wait for an idle CPU before a run"
    )
    parser.add_argument("--json", type=Path, help="write the measurements here too")
    args = smoke.parse_args(parser)
    if args.smoke:
        args.rows, args.epochs = [2_000], 1
    sizes = []
    for rows in sorted(args.rows):
        # one copy at a time: a large copy holds the table several times over (workspace, cache)
        with tempfile.TemporaryDirectory(prefix="mlpipeline-bench-tables-") as tmp:
            sizes.append(measure(rows, args.features, args.epochs, args.wait, Path(tmp)))
        s = sizes[-1]
        print(
            f"{rows:,} rows: dvc repro {s.repro_s:.1f} s; max RSS "
            + ", ".join(f"{k} {v['rss_mib']:.0f} MiB" for k, v in s.stages.items()),
            flush=True,
        )
    text = report(sizes, args.epochs)
    title = f"Large tables: memory, time and disk from {short(sizes[0].rows)} to "
    write_section("tables", title + f"{short(sizes[-1].rows)} rows", text)
    if args.json:
        from dataclasses import asdict

        args.json.write_text(json.dumps([asdict(s) for s in sizes], indent=2) + "\n")


if __name__ == "__main__":
    main()
