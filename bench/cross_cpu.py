"""Cross-CPU reproducibility: the train, evaluate and export stages, run on this CPU and under
qemu-user emulating other x86-64 CPUs (AMD and Intel, other vendors, caches and instruction
sets), must write byte-identical outputs. Writes docs/performance.md.

    .venv/bin/python bench/cross_cpu.py [--cpus EPYC-Milan Haswell-v4] [--epochs N] [--smoke]

Needs qemu-user (Debian: apt-get install qemu-user). Emulated, the stages run ~30x slower: the
default pipeline takes ~20 min per CPU model (they run in parallel, one core each); --epochs 3
checks the same kernels in ~4 min. Emulation reproduces a CPU's identity, caches and
instruction set, not the exact results of its approximate instructions (rcpps, rsqrtps): only
real CPUs can check those. --smoke: the first CPU model only, one epoch.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import smoke
import yaml
from quiet import cpu_model
from record import stamp, write_section

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STAGES = ["train", "evaluate", "export"]
# what the stages read that the stages before them wrote: their dvc.yaml deps under data/
PATHS = yaml.safe_load((ROOT / "params.yaml").read_text())["paths"]
INPUTS = sorted(
    {
        path
        for stage in STAGES
        for dep in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]["deps"]
        # dvc.yaml names paths as ${paths.<name>}, resolved from params.yaml as DVC does
        if (path := re.sub(r"\$\{paths\.(\w+)\}", lambda m: PATHS[m[1]], dep)).startswith("data/")
    }
)
OUTPUTS = [
    "models/model.pt",
    "reports/train/history.csv",
    "reports/metrics.json",
    "reports/eval/confusion.csv",
    "reports/eval/roc.csv",
    "reports/eval/per_class.csv",
    "models/model.onnx",
    "models/model_card.json",
    "models/reference.npy",
]


def sh(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed in {cwd}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def reference_repo(dest: Path, epochs: int | None) -> dict[str, str]:
    """A copy of the tracked files, reproduced natively with `dvc repro`."""
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    for name in sh(["git", "ls-files"], ROOT).split():
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    sh(["git", "init", "-q"], dest)
    if epochs:
        conf = dest / "conf/trainer/default.yaml"
        conf.write_text(re.sub(r"max_epochs: \d+", f"max_epochs: {epochs}", conf.read_text()))
    sh(["dvc", "repro"], dest, env)
    return {name: md5(dest / name) for name in OUTPUTS}


def emulated(repo: Path, work: Path, cpu: str) -> tuple[dict[str, str], float]:
    """The stages under `qemu-x86_64 -cpu <cpu>` in a copy of their input data."""
    for name in INPUTS:
        shutil.copytree(repo / name, work / name)
    shutil.copy2(repo / "params.yaml", work / "params.yaml")
    site = next((BIN.parent / "lib").glob("python3*/site-packages"))
    code = f"{ROOT / 'src'}:{ROOT / 'kit'}"
    env = {**os.environ, "PYTHONPATH": f"{site}:{code}", "PATH": os.environ["PATH"]}
    env.pop("MLFLOW_TRACKING_URI", None)
    python = os.path.realpath(sys.executable)  # the interpreter itself; the venv via PYTHONPATH
    start = time.perf_counter()
    for stage in STAGES:
        sh(["qemu-x86_64", "-cpu", cpu, python, "-m", f"mlpipeline.stages.{stage}"], work, env)
    return {name: md5(work / name) for name in OUTPUTS}, time.perf_counter() - start


def host_cpu() -> str:
    info = Path("/proc/cpuinfo").read_text()
    flags = next((ln.split(":", 1)[1].split() for ln in info.splitlines() if "flags" in ln), [])
    avx512 = "AVX-512" if "avx512f" in flags else "no AVX-512"
    return f"{cpu_model()} ({avx512})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpus", nargs="+", default=["EPYC-Milan", "Haswell-v4"])
    parser.add_argument("--epochs", type=int, help="trainer.max_epochs (default: params.yaml's)")
    args = smoke.parse_args(parser)
    if args.smoke:
        args.cpus, args.epochs = args.cpus[:1], 1
    if not shutil.which("qemu-x86_64"):
        sys.exit("qemu-x86_64 not found: apt-get install qemu-user")
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        start = time.perf_counter()
        native = reference_repo(repo, args.epochs)
        native_s = time.perf_counter() - start
        with ThreadPoolExecutor(len(args.cpus)) as pool:
            runs = dict(
                zip(
                    args.cpus,
                    pool.map(lambda c: emulated(repo, Path(tmp) / c, c), args.cpus),
                    strict=True,
                )
            )
    committed = {}
    lock = (ROOT / "dvc.lock").read_text()
    for name, digest in native.items():
        committed[name] = "yes" if digest in lock else "no"
    header = "| output | this CPU | committed dvc.lock | " + " | ".join(args.cpus) + " |"
    rows = [header, "|" + " --- |" * (3 + len(args.cpus))]
    for name in OUTPUTS:
        cells = [
            "same" if hashes[name] == native[name] else f"**{hashes[name][:8]}**"
            for hashes, _ in runs.values()
        ]
        row = [name, native[name][:8], committed[name], *cells]
        rows.append("| " + " | ".join(row) + " |")
    same = all(h == native for h, _ in runs.values())
    timing = ", ".join(f"{c} {s / 60:.1f} min" for c, (_, s) in runs.items())
    text = (
        f"{stamp()} This CPU: {host_cpu()}, "
        f"`dvc repro` {native_s:.0f} s. Emulated (qemu-user {qemu_version()}): train, evaluate "
        f"and export, {timing}.\n\n"
        f"Result: **{'every output identical' if same else 'OUTPUTS DIFFER'}** on "
        f"{len(runs) + 1} CPUs. md5 of each output on this CPU, whether the committed dvc.lock "
        "records it (only for the default epochs), and each emulated CPU's against it:\n\n"
        + "\n".join(rows)
        + "\n"
    )
    write_section("cross-cpu", "The same bits on other CPUs", text)
    if not same:
        sys.exit(1)


def qemu_version() -> str:
    out = subprocess.run(["qemu-x86_64", "--version"], capture_output=True, text=True).stdout
    return out.split("version", 1)[-1].split()[0] if "version" in out else "?"


if __name__ == "__main__":
    main()
