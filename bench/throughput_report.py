"""bench/throughput.py's measurements as markdown, for its own section of docs/performance.md
and bench/pipeline.py's (kept apart from it so that neither report imports torch)."""

from __future__ import annotations

import statistics
from typing import Any

from quiet import BUSY_CORES

# the train stage's throughput against the plain loop's, at least, on the tabular defaults
GOAL = 0.85
QUIET_RULE = (
    f"quiet means other processes used under {BUSY_CORES} cores meanwhile; runs that were "
    "not are repeated (up to twice as many runs in all), and only the quiet ones count"
)


def verdict(ok: bool, quiet: bool) -> str:
    text = "met" if ok else "**MISSED**"
    return text if quiet else f"{text}; UNRELIABLE: other processes kept the CPU busy"


def report(tp: dict[str, Any], what: str, goal: float | None = None) -> list[str]:
    """Markdown lines: the figure (headed `what`) and its verdict against `goal`, if any, how
    it was measured, and a table of both Lightning loops against the plain loop beside them."""
    ratios = {k: [r[k]["ratio"] for r in tp["rounds"]] for k in ("stage", "floor")}
    stage = statistics.median(ratios["stage"])
    judged = "no goal" if goal is None else f"goal >= {goal}: {verdict(stage >= goal, tp['quiet'])}"
    lines = [
        f"### {what}: train stage / plain PyTorch = {stage:.3f} ({judged})",
        "",
        f"{tp['samples_per_epoch']} training samples, batch size {tp['batch_size']}, "
        f"{tp['threads']} torch thread(s) (cpu_threads), CPU, portable kernels, deterministic. "
        "The stage is `train()` as `dvc repro` runs it, timed over each epoch's training "
        "batches (validation left out); before each of its epochs the plain loop runs one "
        "epoch in the same process, and each round's figure is the median of those per-epoch "
        f"ratios over {tp['epochs']} epochs (after a warm-up epoch); the verdict is the median "
        f"of {len(tp['rounds'])} rounds; {QUIET_RULE}.",
        "",
        "| loop | / plain, per round | / plain, median | samples/s, Lightning "
        "| samples/s, plain beside it |",
        "|---|---|---:|---|---|",
    ]
    labels = {
        "stage": "the train stage (module, callbacks, progress bar, validation between epochs)",
        "floor": "Lightning's floor: a plain module doing only the plain loop's work, no callbacks",
    }
    for key, label in labels.items():
        light = ", ".join(f"{r[key]['lightning']:.0f}" for r in tp["rounds"])
        plain = ", ".join(f"{r[key]['plain']:.0f}" for r in tp["rounds"])
        per_round = ", ".join(f"{v:.3f}" for v in ratios[key])
        lines.append(
            f"| {label} | {per_round} | {statistics.median(ratios[key]):.2f} | {light} | {plain} |"
        )
    return lines
