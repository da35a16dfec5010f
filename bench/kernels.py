"""What the portable CPU kernels cost: the train stage's training time with the pinned choices
(MKL's COMPATIBLE branch, torch's own convolutions, `cpu_threads: 1`) against each choice undone.
Writes its section of docs/performance.md.

    .venv/bin/python bench/kernels.py [--rounds N] [--epochs E] [--smoke]

Each variant trains the committed params.yaml's model for E epochs (no early stopping) in a
fresh process, timed from the start of `train()` with the imports done beforehand; the
variants take turns, N rounds, and each figure is the median. --smoke: one round of one epoch.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import smoke
from record import stamp, write_section

ROOT = Path(__file__).resolve().parents[1]
# name: (environment, cpu_threads, oneDNN and NNPACK on)
VARIANTS = {
    "portable (the default: COMPATIBLE, 1 thread, torch's convolutions)": ({}, 1, False),
    "MKL's AVX2 branch": ({"MKL_CBWR": "AVX2"}, 1, False),
    "oneDNN and NNPACK convolutions": ({}, 1, True),
    "2 threads": ({}, 2, False),
}


def child(threads: int, vendor_convs: bool, epochs: int) -> None:
    """Train once and print the seconds `train()` took."""
    import contextlib
    import io
    import time

    import lightning  # noqa: F401  (imported before the clock starts)
    import torch

    import mlpipeline.determinism
    from mlpipeline.config import load_config
    from mlpipeline.stages.train import train

    mlpipeline.determinism.prepare_process()  # as the train stage's CLI does first
    if vendor_convs:
        # training looks the function up when it starts: threads only, vendors' convolutions on
        mlpipeline.determinism.use_portable_kernels = torch.set_num_threads
    cfg = load_config(ROOT / "params.yaml")
    out = Path(tempfile.mkdtemp())
    cfg = cfg.model_copy(
        update={
            "cpu_threads": threads,
            "paths": cfg.paths.model_copy(
                update={"model": out / "m.pt", "history": out / "history.csv"}
            ),
            "trainer": cfg.trainer.model_copy(update={"max_epochs": epochs}),
            "callbacks": cfg.callbacks.model_copy(
                update={"early_stopping": None, "progress_bar": None}
            ),
        }
    )
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        train(cfg)
    print(f"{time.perf_counter() - start:.3f}")
    shutil.rmtree(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = smoke.parse_args(parser)
    if args.child:
        return child(args.child[0], bool(args.child[1]), args.epochs)
    if args.smoke:
        args.rounds, args.epochs = 1, 1

    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for r in range(args.rounds):
        for name, (env, threads, convs) in VARIANTS.items():
            cmd = [sys.executable, __file__, "--epochs", str(args.epochs)]
            out = subprocess.run(
                [*cmd, "--child", str(threads), str(int(convs))],
                env={**os.environ, **env},
                capture_output=True,
                text=True,
                check=True,
                cwd=ROOT,
            ).stdout
            times[name].append(float(out.split()[-1]))
            print(f"round {r + 1}: {name}: {times[name][-1]:.2f} s", flush=True)

    base = statistics.median(next(iter(times.values())))
    rows = "\n".join(
        f"| {name} | {statistics.median(t):.2f} s | {statistics.median(t) / base:.2f} | "
        f"{', '.join(f'{v:.2f}' for v in t)} |"
        for name, t in times.items()
    )
    text = (
        f"{stamp()} Training the params.yaml model for {args.epochs} epochs, no early "
        f"stopping; median of {args.rounds} interleaved rounds.\n\n"
        "| variant | training time | against the default | rounds |\n| --- | --- | --- | --- |\n"
        f"{rows}\n"
    )
    write_section("kernels", "What the portable CPU kernels cost", text)


if __name__ == "__main__":
    main()
