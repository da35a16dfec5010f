"""The one wait-until-ready loop: poll a check until it holds, fails for good, or time is up."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import httpx

from mlpipeline.errors import PipelineError

T = TypeVar("T")


def wait_until(
    check: Callable[[], T | None], timeout_s: float, what: str, interval_s: float = 0.05
) -> T:
    """Call `check` until it returns something other than None and return that. `check` raises
    PipelineError to give up at once (a process that exited); after `timeout_s` PipelineError
    says that `what` did not happen in time."""
    deadline = time.monotonic() + timeout_s
    while True:
        if (result := check()) is not None:
            return result
        if time.monotonic() > deadline:
            raise PipelineError(f"{what} within {timeout_s:g} s")
        time.sleep(interval_s)


def answers(url: str, status: int = 200, timeout_s: float = 1.0) -> bool | None:
    """True when GET `url` answers `status`, None when it does not (yet): refused, timed out
    or another status."""
    try:
        return True if httpx.get(url, timeout=timeout_s).status_code == status else None
    except httpx.TransportError:
        return None
