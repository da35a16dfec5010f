"""`python -m mlpipeline.serving`: check the settings and the model, then run uvicorn."""

from __future__ import annotations

import functools
import os
import sys
import tempfile
from typing import Any

import uvicorn
from pydantic import ValidationError

from mlpipeline.serving.protocol import BoundedHttpToolsProtocol
from mlpipeline.serving.settings import Settings, quiet_onnxruntime


def _settings_error(err: ValidationError) -> str:
    first = err.errors()[0]
    name = str(first["loc"][0]).upper() if first["loc"] else "settings"
    return f"bad setting {name}={first.get('input')!r}: {first['msg']}"


def main() -> None:
    """Validate settings and model (one-line errors, exit 1), then run uvicorn."""
    quiet_onnxruntime()
    # after quiet_onnxruntime: the app imports onnxruntime, which reads its telemetry setting
    from mlpipeline.serving.app import create_app
    from mlpipeline.serving.model import ModelError

    try:
        settings = Settings()
        app = create_app(settings)
    except ValidationError as err:
        print(f"error: {_settings_error(err)}", file=sys.stderr)
        sys.exit(2)
    except ModelError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "access_log": settings.access_log,
        # the loop stays asyncio's: uvloop was no faster and held some requests for over a
        # second under load (docs/performance.md)
        "loop": "asyncio",
        # httptools parses HTTP (faster than h11), in protocol.py's subclass that bounds what
        # clients control; a partial of a module-level class, which uvicorn can pickle into
        # its worker processes
        "http": functools.partial(
            BoundedHttpToolsProtocol,
            max_header_bytes=settings.max_header_bytes,
            max_headers=settings.max_headers,
            read_timeout=settings.read_timeout_seconds,
        ),
        # uvicorn answers 503 once the open connections *reach* its limit
        "limit_concurrency": settings.max_connections + 1,
        "timeout_keep_alive": settings.keep_alive_seconds,
        # no WebSocket routes: an upgrade request stays plain HTTP, in the bounded protocol
        "ws": "none",
    }
    if settings.workers == 1:
        uvicorn.run(app, **options)
        return
    del app  # each worker process loads its own copy
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # workers read this at import; /metrics then sums over all of them
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="mlpipeline-metrics-")
    uvicorn.run(
        "mlpipeline.serving.app:create_app", factory=True, workers=settings.workers, **options
    )


if __name__ == "__main__":
    main()
