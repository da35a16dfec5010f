"""The same model bytes from the same commit on any x86-64 CPU with AVX2: pinned CPU kernels,
a fixed thread count and no CPU-dependent convolution libraries (docs/reproducibility.md)."""

from __future__ import annotations

import logging
import os
import platform
from pathlib import Path

import numpy as np

# What torch and MKL read once, on first use, to choose their CPU kernels; a value already set
# wins. MKL honours a fixed branch other than COMPATIBLE on Intel CPUs only (elsewhere it falls
# back to its CPU-dependent AUTO branch without a word), so COMPATIBLE is the one branch that
# computes the same on Intel and AMD.
CPU_KERNEL_PINS = {
    "ATEN_CPU_CAPABILITY": "avx2",  # torch's own vectorised kernels
    "MKL_CBWR": "COMPATIBLE",  # MKL's matrix products: fixed code, cache sizes and schedule
}


def pin_cpu_kernels(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, str]:
    """Pin torch's and MKL's CPU kernels on x86-64 CPUs that have AVX2 and FMA.

    Left alone, each picks kernels and blocking by the CPU it finds, so the same commit trains
    different last bits on different CPUs. Takes effect only before torch first computes, so
    `prepare_process` calls it first thing; `use_portable_kernels` does the rest. Returns the
    variables it set.
    """
    if platform.machine() != "x86_64" or not cpuinfo.is_file():
        return {}
    with cpuinfo.open() as lines:
        flags = next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), [])
    if not {"avx2", "fma"} <= set(flags):
        return {}  # forcing AVX2 kernels onto such a CPU would crash it
    pinned = {k: v for k, v in CPU_KERNEL_PINS.items() if k not in os.environ}
    os.environ.update(pinned)
    return pinned


def prepare_process() -> None:
    """Set what a pipeline process needs before torch or ONNX Runtime first runs: the pinned CPU
    kernels (`pin_cpu_kernels`), ONNX Runtime's usage telemetry off, and MLflow's info lines
    off (its warnings stay); a value already set wins. Every stage's CLI and the sweep call it
    first: importing mlpipeline changes no environment variable and no logger."""
    pin_cpu_kernels()
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    # MLflow's INFO lines (creating its tables, the uv project it found) are nothing to act on;
    # MLFLOW_LOGGING_LEVEL=INFO brings them back
    if "MLFLOW_LOGGING_LEVEL" not in os.environ:
        os.environ["MLFLOW_LOGGING_LEVEL"] = "WARNING"  # read by an MLflow imported later
        logging.getLogger("mlflow").setLevel(logging.WARNING)  # one imported already


def use_portable_kernels(threads: int | None) -> None:
    """Make torch's CPU arithmetic a function of the inputs alone: `threads` intra-op threads
    (None: torch's default, one per core, so the bits then follow the core count), and
    convolutions in torch's own kernels (im2col and MKL) instead of oneDNN's or NNPACK's, whose
    blocking, and so the order of their sums, follows the CPU's cache sizes. Call it before the
    first computation. GPU kernels are untouched."""
    import torch  # every stage's CLI imports this module, and most stages never load torch

    if threads is not None:
        torch.set_num_threads(threads)
    torch.backends.mkldnn.enabled = False
    torch.backends.nnpack.set_flags(False)


def sample_rows(total: int, limit: int, seed: int) -> np.ndarray:
    """Every row index, or a seeded sorted sample of `limit` of them: the rows a stage
    samples (to fit, profile, plot, explain, report) follow from the seed alone."""
    if total <= limit:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).choice(total, limit, replace=False))
