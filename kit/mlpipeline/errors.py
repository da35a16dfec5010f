"""The one exception type the stages raise for bad input; the CLIs print it as one line, with
any credentials in it masked (`redact`)."""

from __future__ import annotations

import atexit
import errno
import gc
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# scheme://userinfo@ in a URL: the userinfo runs to the last @ before the path, query,
# fragment or whitespace, as URL parsers read it (a password may hold an unescaped @)
_USERINFO = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://)([^\s/?#]*)@")
# a query parameter that carries a secret: ?password=..., &token=..., X-Amz-Signature=...
_SECRET_PARAM = re.compile(
    r"([?&;][^=&\s#]*(?:pass|pwd|token|secret|key|signature|credential|auth)[^=&\s#]*=)[^&\s#]*",
    re.IGNORECASE,
)
MASK = "***"
# what an OSError's number says of the place it names: not writable (permissions, a file
# system mounted read-only), or full (a disk, a quota, a file size limit)
NOT_WRITABLE = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})
FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class PipelineError(Exception):
    """An expected failure caused by input (data, config, arguments): say what and how to fix."""


def first_line(err: BaseException) -> str:
    """A library's error message cut to its first line (at most 300 characters), for a
    PipelineError that quotes it."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(err).__name__


def storage_error(err: OSError, path: Path | str | None = None) -> PipelineError | None:
    """The one-line error for an OSError that says a place cannot be written (or read) for
    want of permission or space, naming `path` (else the file the error names) and the fix;
    None for any other OSError, which is no fault of the input."""
    if err.errno not in NOT_WRITABLE | FULL:
        return None
    where = Path(path) if path is not None else error_path(err)
    reason = err.strerror or str(err)
    if where is None:
        fix = "free disk space" if err.errno in FULL else "check the permissions of the outputs"
        return PipelineError(f"cannot write: {reason}; {fix}")
    folder = where.parent if where.name else where
    if err.errno == errno.EFBIG:
        return PipelineError(
            f"cannot write {where}: {reason}; raise this user's file size limit (ulimit -f)"
        )
    if err.errno in FULL:
        return PipelineError(
            f"cannot write {where}: {reason}; free space on the disk that holds {folder}/"
        )
    return PipelineError(
        f"cannot write {where}: {reason}; make {folder}/ writable for this user (its "
        "permissions, or a file system mounted read-only)"
    )


def error_path(err: OSError) -> Path | None:
    """The file an OSError names, if it names one."""
    name = err.filename
    return Path(os.fsdecode(name)) if isinstance(name, str | bytes | os.PathLike) else None


def redact(text: str) -> str:
    """`text` (a URI, or a message that holds URIs) with every credential masked, for showing:
    a URL's password (`http://user:***@host`), a userinfo without a password, which is often
    a token (`https://***@host`), and the values of secret-looking query parameters
    (`?password=***`). scripts/mlflow-server.sh masks the same way."""

    def userinfo(match: re.Match[str]) -> str:
        user, has_password, _ = match[2].partition(":")
        return f"{match[1]}{user}:{MASK}@" if has_password else f"{match[1]}{MASK}@"

    return _SECRET_PARAM.sub(rf"\g<1>{MASK}", _USERINFO.sub(userinfo, text))


@contextmanager
def exit_on_error(interrupted: str = "interrupted; nothing was written") -> Iterator[None]:
    """For CLIs: a PipelineError becomes `error: <message>` (credentials masked) and exit
    status 1, and so does an OSError for want of permission or space (`storage_error`);
    Ctrl-C `error: <interrupted>` and 130; none prints a traceback.

    Also freezes the heap at exit: the interpreter's final garbage collections would otherwise
    walk every object torch, Lightning and MLflow created, seconds of each stage's exit.
    The OS reclaims the memory either way."""
    atexit.unregister(gc.freeze)  # once per process, however many CLIs ran in it
    atexit.register(gc.freeze)
    try:
        yield
    except PipelineError as err:
        print(f"error: {redact(str(err))}", file=sys.stderr)
        sys.exit(1)
    except OSError as err:
        # a place the stage may not write, or a full disk, which no output helper named
        if (line := storage_error(err)) is None:
            raise
        print(f"error: {redact(str(line))}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"error: {interrupted}", file=sys.stderr)
        sys.exit(130)
