"""Reproducible, data-versioned ML pipeline: one module per DVC stage."""

from __future__ import annotations

import os
import platform
from pathlib import Path

# What each library reads to choose its CPU kernels; a value already set wins.
CPU_KERNEL_PINS = {
    "ATEN_CPU_CAPABILITY": "avx2",  # torch's own vectorised kernels
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN (convolutions)
    "MKL_CBWR": "AVX2",  # MKL (matrix products): AVX2 code, fixed cache sizes, static schedule
}


def pin_cpu_kernels(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, str]:
    """Cap torch, oneDNN and MKL at AVX2 kernels on x86-64 CPUs that have AVX2 and FMA.

    Left alone, each picks kernels and blocking by the CPU it finds, so the same commit trains
    different last bits on different CPUs (seen: two AMD EPYC machines, one without AVX-512,
    wrote different `models/model.pt` hashes). Pinned, CPUs with AVX2 or more run the same
    code, for the same number of threads. Takes effect only before torch first computes,
    hence here, on import. Returns the variables it set.
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


pin_cpu_kernels()
