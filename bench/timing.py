"""A Lightning callback the benchmarks add to a training run: when its first training step
began, counted from the process's start. Added through the config, e.g. to a sweep trial:
`+callbacks.first_step._target_=timing.FirstStep` with bench/ on PYTHONPATH."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import lightning as L


def process_start_time() -> float:
    """When this process started, in `time.time()` seconds. On Linux from its start tick and
    the boot clock (exact to 10 ms): psutil's `create_time` adds the boot time that Linux
    reports in whole seconds, which puts it up to 1 s early."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
        return time.time() - age
    except (OSError, AttributeError, ValueError, IndexError):  # not Linux
        import psutil

        return psutil.Process().create_time()


class FirstStep(L.Callback):
    """Prints `first training step <s> s after process start` once, at the first batch."""

    def __init__(self) -> None:
        self.done = False

    def on_train_batch_start(self, *_: Any) -> None:
        if not self.done:
            self.done = True
            seconds = time.time() - process_start_time()
            print(f"first training step {seconds:.1f} s after process start", flush=True)
