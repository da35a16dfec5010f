"""Telling measurements taken on an idle machine from those taken beside busy neighbours, and
naming the machine they were taken on.

The development machines are shared and have two cores: one other process can halve a figure
(or, with torch's two OpenMP threads, cut it tenfold). Linux only (/proc/stat).
"""

from __future__ import annotations

import os
import platform
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import smoke

T = TypeVar("T")

# CPU (in cores) that other processes may use during a measurement that still counts as quiet
BUSY_CORES = 0.1


def cpu_model() -> str:
    """The CPU's model name, as /proc/cpuinfo gives it."""
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.is_file() else []
    names = (ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name"))
    return next(names, "") or platform.processor() or platform.machine()


def cpu_snapshot() -> tuple[float, float, float]:
    """Wall clock; CPU seconds used by the whole machine (steal included); by this process and
    its waited-for children."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    machine = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    usages = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return time.perf_counter(), machine, sum(u.ru_utime + u.ru_stime for u in usages)


def others_cores(since: tuple[float, float, float]) -> float:
    """Cores that other processes kept busy, on average, since the snapshot."""
    wall, machine, own = (now - then for now, then in zip(cpu_snapshot(), since, strict=True))
    return max(machine - own, 0.0) / wall


def wait_for_idle(max_wait_s: float, window_s: float = 2.0) -> None:
    """Return once other processes have left the CPU alone for `window_s`, or after max_wait_s;
    at once in smoke mode, whose figures count for nothing."""
    if smoke.on():
        return
    deadline = time.monotonic() + max_wait_s
    while time.monotonic() < deadline:
        since = cpu_snapshot()
        time.sleep(window_s)
        if others_cores(since) < BUSY_CORES:
            return


def repeat_quietly(measure: Callable[[], T], wanted: int, tries: int) -> tuple[list[T], bool]:
    """Call `measure` until `wanted` calls ran on a quiet machine, at most `tries` times.
    Returns (the quiet results, True), or (every result, False) when too few were quiet. In
    smoke mode each call counts: `wanted` calls, none repeated."""
    if smoke.on():
        tries = wanted
    quiet, every = [], []
    for _ in range(tries):
        since = cpu_snapshot()
        result = measure()
        every.append(result)
        if others_cores(since) < BUSY_CORES:
            quiet.append(result)
            if len(quiet) == wanted:
                return quiet, True
    return every, False
