"""The one exception type the stages raise for bad input; the CLIs print it as one line, with
any credentials in it masked (`redact`)."""

from __future__ import annotations

import atexit
import gc
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager

# scheme://userinfo@ in a URL: the userinfo runs to the last @ before the path, query,
# fragment or whitespace, as URL parsers read it (a password may hold an unescaped @)
_USERINFO = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://)([^\s/?#]*)@")
# a query parameter that carries a secret: ?password=..., &token=..., X-Amz-Signature=...
_SECRET_PARAM = re.compile(
    r"([?&;][^=&\s#]*(?:pass|pwd|token|secret|key|signature|credential|auth)[^=&\s#]*=)[^&\s#]*",
    re.IGNORECASE,
)
MASK = "***"


class PipelineError(Exception):
    """An expected failure caused by input (data, config, arguments): say what and how to fix."""


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
    status 1, Ctrl-C `error: <interrupted>` and 130; neither prints a traceback.

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
    except KeyboardInterrupt:
        print(f"error: {interrupted}", file=sys.stderr)
        sys.exit(130)
