"""The one exception type the stages raise for bad input; the CLIs print it as one line."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager


class PipelineError(Exception):
    """An expected failure caused by input (data, config, arguments): say what and how to fix."""


@contextmanager
def exit_on_error(interrupted: str = "interrupted; nothing was written") -> Iterator[None]:
    """For CLIs: a PipelineError becomes `error: <message>` and exit status 1, Ctrl-C
    `error: <interrupted>` and 130; neither prints a traceback."""
    try:
        yield
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"error: {interrupted}", file=sys.stderr)
        sys.exit(130)
