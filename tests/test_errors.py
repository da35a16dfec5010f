"""mlpipeline/errors.py: what every CLI does with expected errors and at exit."""

from __future__ import annotations

import subprocess
import sys

CLI = """
import atexit, gc
from mlpipeline.errors import PipelineError, exit_on_error
atexit.register(lambda: print("frozen at exit:", gc.get_freeze_count() > 0))
with exit_on_error():
    pass
with exit_on_error():
    raise PipelineError("data.batch_size: must be >= 1; set it in conf/data/")
"""


def test_an_expected_error_is_one_line_and_the_heap_is_frozen_at_exit() -> None:
    proc = subprocess.run([sys.executable, "-c", CLI], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr == "error: data.batch_size: must be >= 1; set it in conf/data/\n"
    # frozen after the handlers registered before the CLI ran: the interpreter's final
    # collections then skip the heap, a long walk once torch is loaded
    assert proc.stdout == "frozen at exit: True\n"
