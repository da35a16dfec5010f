"""Inference service: the exported ONNX model behind FastAPI, on ONNX Runtime, without torch.

Endpoints: POST /predict, GET /health, GET /ready, GET /metadata, GET /metrics (Prometheus).
Settings come from environment variables (see `Settings`); `python -m mlpipeline.serve` runs
uvicorn. This module and the ones it imports (`mlpipeline`, `mlpipeline.errors`) must stay free
of torch: the serving image copies only them (tests/test_serve.py checks it).

Request body: `{"inputs": [example, ...]}`, each example a nested list in the model card's
input shape without its batch axis (for the digits CNN: `[1, 8, 8]`). Answer:
`{"classes": [...], "probabilities": [[...], ...], "model_version": "..."}`.
Every request the service cannot use gets a 4xx answer `{"error": "<what is wrong>"}`.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from mlpipeline.errors import PipelineError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON_TYPES = ("application/json",)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Settings(BaseSettings):
    """Service settings, read from environment variables of the same name in upper case
    (MODEL_PATH, CARD_PATH, HOST, PORT, WORKERS, MAX_BATCH, MAX_BODY_BYTES, ...)."""

    # `model_path` would otherwise collide with pydantic's reserved `model_` prefix
    model_config = SettingsConfigDict(protected_namespaces=(), frozen=True, extra="ignore")

    model_path: Path = Field(Path("models/model.onnx"), description="the ONNX model")
    card_path: Path | None = Field(None, description="model card; default: beside the model")
    host: str = Field("127.0.0.1", description="address to listen on (0.0.0.0 in the image)")
    port: int = Field(8080, ge=1, le=65535)
    workers: int = Field(1, ge=1, le=64, description="uvicorn worker processes")
    max_batch: int = Field(1024, ge=1, description="most examples in one request")
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1, description="largest request body")
    intra_op_threads: int = Field(
        1, ge=0, description="ONNX Runtime threads per request; 0: one per core"
    )
    git_commit: str | None = Field(None, description="shown by /metadata")
    otel: bool = Field(
        False,
        description="FastAPI's OpenTelemetry instrumentation (needs providers set up); off by "
        "default: /metrics covers the service, and the check costs time on every request",
    )
    log_level: str = Field("info", pattern="^(critical|error|warning|info|debug|trace)$")
    access_log: bool = False

    @property
    def card_file(self) -> Path:
        """The model card: CARD_PATH, else model_card.json beside the model."""
        return self.card_path or self.model_path.with_name("model_card.json")


class ClientError(Exception):
    """A request the service cannot use: answered with `status` and a one-line message."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


@dataclass(frozen=True)
class Model:
    """A loaded ONNX session and what its card says about it."""

    session: ort.InferenceSession
    input_name: str
    output_name: str
    example_shape: tuple[int, ...]
    classes: list[str]
    card: dict[str, Any]

    @property
    def version(self) -> str:
        return str(self.card.get("version", "unknown"))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities for a float32 batch of shape (n, *example_shape)."""
        return self.session.run([self.output_name], {self.input_name: x})[0]


def load_model(settings: Settings) -> Model:
    """Open the ONNX model and its card, check they agree, and run one warm-up batch.
    Raises PipelineError with a one-line reason when anything is missing or inconsistent."""
    model_path, card_path = settings.model_path, settings.card_file
    if not model_path.is_file():
        raise PipelineError(
            f"model not found at {model_path}: run `dvc repro` or set MODEL_PATH to an ONNX file"
        )
    if not card_path.is_file():
        raise PipelineError(f"model card not found at {card_path}: set CARD_PATH")
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
        spec = card["input"]
        shape, classes = spec["shape"], [str(c) for c in card["classes"]]
        example_shape = tuple(int(d) for d in shape[1:])
    except (ValueError, KeyError, TypeError) as err:
        raise PipelineError(
            f"{card_path} is not a model card with input.shape and classes ({err})"
        ) from err

    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.intra_op_threads
    # requests run one at a time on the event loop: a second pool only adds wake-ups
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # ORT raises its own untyped errors for unreadable files
        raise PipelineError(f"{model_path} is not a loadable ONNX model: {err}") from err

    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1:
        raise PipelineError(f"{model_path} must have one input and one output")
    model = Model(
        session=session,
        input_name=inputs[0].name,
        output_name=outputs[0].name,
        example_shape=example_shape,
        classes=classes,
        card=card,
    )
    if spec.get("name", model.input_name) != model.input_name:
        raise PipelineError(
            f"{card_path} names input {spec['name']!r} but {model_path} has {model.input_name!r}"
        )
    try:
        probs = model.predict(np.zeros((1, *example_shape), dtype=np.float32))
    except Exception as err:  # an ORT shape error means card and model disagree
        raise PipelineError(
            f"{model_path} rejects inputs of the card's shape {shape}: {err}"
        ) from err
    if probs.shape != (1, len(classes)):
        raise PipelineError(
            f"{model_path} returns {probs.shape[1]} scores but {card_path} lists "
            f"{len(classes)} classes"
        )
    return model


def parse_inputs(body: bytes, example_shape: tuple[int, ...], max_batch: int) -> np.ndarray:
    """Turn a request body into a float32 batch of shape (n, *example_shape), or raise
    ClientError saying what is wrong with it."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise _json_error(body, err) from None
    if not isinstance(payload, dict) or "inputs" not in payload:
        raise ClientError(422, "schema", 'body must be a JSON object {"inputs": [example, ...]}')
    if extra := sorted(set(payload) - {"inputs"}):
        raise ClientError(422, "schema", f'unknown keys {extra}: send only {{"inputs": [...]}}')
    inputs = payload["inputs"]
    expected = list(example_shape)
    if not isinstance(inputs, list):
        raise ClientError(422, "schema", f"inputs must be a list of examples of shape {expected}")
    if not inputs:
        raise ClientError(422, "empty", "inputs is empty: send at least one example")
    if len(inputs) > max_batch:
        raise ClientError(
            422, "batch", f"batch of {len(inputs)} examples is over the limit of {max_batch}"
        )
    try:
        array = np.asarray(inputs)
    except ValueError:  # numpy's message for ragged nesting is long and about numpy
        raise ClientError(
            422,
            "shape",
            f"inputs are ragged or nested too deeply: every example must have shape {expected}",
        ) from None
    if array.dtype.kind not in "iuf" or (
        (b"true" in body or b"false" in body) and _has_bool(inputs)
    ):
        # numpy would quietly turn "1.5" into 1.5 and true into 1: refuse instead
        raise ClientError(422, "type", _type_message(array.dtype.kind))
    if array.shape[1:] != example_shape:
        count = int(np.prod(example_shape))
        raise ClientError(
            422,
            "shape",
            f"each example must have shape {expected} ({count} numbers); "
            f"got inputs of shape {list(array.shape)}",
        )
    with np.errstate(over="ignore"):  # overflow to inf is caught just below
        x = array.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise ClientError(
            422, "value", "inputs must be finite: values beyond float32 range are refused"
        )
    return x


def _json_error(body: bytes, err: orjson.JSONDecodeError) -> ClientError:
    """Name NaN and Infinity plainly (orjson only says 'unexpected character')."""

    def refuse(name: str) -> None:
        raise ValueError(name)

    if "infinity" in str(err):  # a literal such as 1e999 overflows a double
        return ClientError(422, "value", f"inputs must be finite numbers: {err}")
    if b"NaN" in body or b"Infinity" in body:
        try:
            json.loads(body, parse_constant=refuse)
        except ValueError as std_err:
            if str(std_err) in ("NaN", "Infinity", "-Infinity"):
                return ClientError(
                    422, "value", f"inputs must be finite numbers: {std_err} is not allowed"
                )
        except RecursionError:  # nesting deeper than orjson allows: its message says so
            pass
    return ClientError(400, "json", f"malformed JSON: {err}")


def _has_bool(value: Any) -> bool:
    if isinstance(value, list):
        return any(_has_bool(v) for v in value)
    return isinstance(value, bool)


def _type_message(kind: str) -> str:
    found = {"U": "strings", "b": "true/false", "O": "null, objects or oversized integers"}
    return f"inputs must be numbers; found {found.get(kind, 'true/false')}"


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed `limit` bytes
    (from Content-Length when given, else while streaming), so it is never held whole."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ClientError(400, "length", f"invalid Content-Length {declared!r}")
        if int(declared) > limit:
            raise ClientError(
                413, "size", f"body of {declared} bytes is over the limit of {limit} bytes"
            )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ClientError(413, "size", f"body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class Metrics:
    """The service's Prometheus metrics, in a registry of their own per app."""

    def __init__(self, max_batch: int) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "http_requests",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.errors = Counter(
            "http_request_errors",
            "HTTP requests answered with a 4xx or 5xx status, by route and status",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "Time from request start to the end of the response, by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.rejected = Counter(
            "predict_rejected",
            "Prediction requests refused, by reason",
            ["reason"],
            registry=self.registry,
        )
        sizes = [2**i for i in range(max_batch.bit_length()) if 2**i < max_batch]
        self.batch_size = Histogram(
            "predict_batch_size",
            "Examples per accepted prediction request",
            buckets=[*sizes, max_batch],
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        """Prometheus text; with PROMETHEUS_MULTIPROC_DIR set (several workers), the sum
        over all worker processes."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts every HTTP request and times it (plain ASGI: no per-request task overhead)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            # the route template, never the raw path: unknown paths must not add label values
            name = getattr(route, "path", "other")
            self.metrics.requests.labels(name, scope["method"], str(status)).inc()
            if status >= 400:
                self.metrics.errors.labels(name, str(status)).inc()
            self.metrics.latency.labels(name).observe(time.perf_counter() - start)


def _error(status: int, message: str) -> Response:
    return Response(orjson.dumps({"error": message}), status, media_type="application/json")


def _request_schema(model: Model) -> dict[str, Any]:
    """OpenAPI description of the body, which is parsed by hand (see parse_inputs)."""
    example: Any = {"type": "number"}
    for size in reversed(model.example_shape):
        example = {"type": "array", "items": example, "minItems": size, "maxItems": size}
    body = {
        "type": "object",
        "required": ["inputs"],
        "additionalProperties": False,
        "properties": {"inputs": {"type": "array", "items": example, "minItems": 1}},
    }
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": body}}}}


def create_app(settings: Settings | None = None) -> FastAPI:
    """Load the model named by `settings` (default: from the environment) and build the app."""
    settings = settings or Settings()
    model = load_model(settings)
    metrics = Metrics(settings.max_batch)
    metadata = orjson.dumps(
        {
            **model.card,
            "git_commit": settings.git_commit,
            "serving": {"max_batch": settings.max_batch, "max_body_bytes": settings.max_body_bytes},
        }
    )
    app = FastAPI(
        telemetry={"tracing": settings.otel, "metrics": settings.otel, "logs": settings.otel},
        title="mlpipeline model service",
        version=model.version,
        description=f"{model.card.get('name', 'model')} on ONNX Runtime",
    )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> Response:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def server_error(_request: Request, _exc: Exception) -> Response:
        # only a bug gets here (uvicorn logs it); say nothing about internals to the client
        return _error(500, "internal error")

    @app.post("/predict", openapi_extra=_request_schema(model))
    async def predict(request: Request) -> Response:
        """Classes and class probabilities for a batch of examples."""
        try:
            media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if media_type not in JSON_TYPES:
                raise ClientError(
                    415,
                    "content_type",
                    f"Content-Type must be application/json, not {media_type or 'missing'!r}",
                )
            body = await read_body(request, settings.max_body_bytes)
            x = parse_inputs(body, model.example_shape, settings.max_batch)
        except ClientError as err:
            metrics.rejected.labels(err.reason).inc()
            return _error(err.status, err.message)
        # ORT releases the GIL but the model is tiny: a thread hop would cost more than the run
        probs = model.predict(x)
        metrics.batch_size.observe(len(x))
        classes = model.classes
        answer = {
            "classes": [classes[i] for i in probs.argmax(axis=1).tolist()],
            "probabilities": probs,
            "model_version": model.version,
        }
        return Response(
            orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json"
        )

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> dict[str, str]:
        """Readiness: the model is loaded and has answered a warm-up batch."""
        return {"status": "ready", "model_version": model.version}

    @app.get("/metadata")
    async def get_metadata() -> Response:
        """The model card, the git commit (env GIT_COMMIT) and the serving limits."""
        return Response(metadata, media_type="application/json")

    @app.get("/metrics")
    async def get_metrics() -> Response:
        """Prometheus text exposition."""
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def _settings_error(err: ValidationError) -> str:
    first = err.errors()[0]
    name = str(first["loc"][0]).upper() if first["loc"] else "settings"
    return f"bad setting {name}={first.get('input')!r}: {first['msg']}"


def main() -> None:
    """Validate settings and model (one-line errors, exit 1), then run uvicorn."""
    import uvicorn

    try:
        settings = Settings()
        app = create_app(settings)
    except ValidationError as err:
        print(f"error: {_settings_error(err)}", file=sys.stderr)
        sys.exit(2)
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "access_log": settings.access_log,
        # httptools parses HTTP (when installed: twice h11's requests/s); the loop stays
        # asyncio's: uvloop was as fast here but, at 64 connections with 64-row bodies, held
        # 1 % of requests for over a second (bench/SERVING.md)
        "loop": "asyncio",
    }
    if settings.workers == 1:
        uvicorn.run(app, **options)
        return
    del app  # each worker process loads its own copy
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # workers read this at import; /metrics then sums over all of them
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="mlpipeline-metrics-")
    uvicorn.run("mlpipeline.serve:create_app", factory=True, workers=settings.workers, **options)


if __name__ == "__main__":
    main()
