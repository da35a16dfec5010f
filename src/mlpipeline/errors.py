"""The one exception type the stages raise for bad input; the CLIs print it as one line."""

from __future__ import annotations

import atexit
import gc
import sys
from collections.abc import Iterator
from contextlib import contextmanager


class PipelineError(Exception):
    """An expected failure caused by input (data, config, arguments): say what and how to fix."""


@contextmanager
def exit_on_error(interrupted: str = "interrupted; nothing was written") -> Iterator[None]:
    """For CLIs: a PipelineError becomes `error: <message>` and exit status 1, Ctrl-C
    `error: <interrupted>` and 130; neither prints a traceback.

    Also freezes the heap at exit: the interpreter's final garbage collections would otherwise
    walk every object torch, Lightning and MLflow created, seconds of each stage's exit.
    The OS reclaims the memory either way."""
    atexit.unregister(gc.freeze)  # once per process, however many CLIs ran in it
    atexit.register(gc.freeze)
    try:
        yield
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"error: {interrupted}", file=sys.stderr)
        sys.exit(130)
