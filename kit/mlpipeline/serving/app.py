"""The FastAPI app: POST /predict, GET /health, /ready, /metadata and /metrics (Prometheus).

A table model takes `{"records": [{"column": value, ...}, ...]}` (missing keys and nulls are
missing values, unseen categories are taken, the training file's columns that the model does
not take are ignored); a tensor model takes `{"inputs": [example, ...]}`, each example a
nested list in the card's input shape without its batch axis (for the digits CNN: `[1, 8, 8]`);
an image model takes image files: multipart form fields named `file` (one per image), one raw
`image/*` body, or `{"images": ["<base64>", ...]}`, decoded and resized as ingest did.
Every model answers alike, one entry per input in each list: a classification
`{"predictions": [class, ...], "probabilities": [{class: p, ...}, ...], "model_version": "..."}`,
a regression `{"predictions": [value, ...], "model_version": "..."}` (ClassificationAnswer and
RegressionAnswer below, also in /openapi.json).
Every request the service cannot use gets a 4xx answer `{"error": "<what is wrong>"}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from mlpipeline.serving.drift import DriftCounters, load_profile
from mlpipeline.serving.metrics import Metrics, MetricsMiddleware, RequestLog
from mlpipeline.serving.model import Model, load_model
from mlpipeline.serving.parsing import ClientError, accepts, read_body
from mlpipeline.serving.settings import Settings


def _error(status: int, message: str) -> Response:
    return Response(orjson.dumps({"error": message}), status, media_type="application/json")


def _request_schema(model: Model) -> dict[str, Any]:
    """OpenAPI description of the body, which is parsed by hand (see the card's input kind)."""
    return {"requestBody": {"required": True, "content": model.card.input.request_content()}}


class ClassificationAnswer(BaseModel):
    """A classification's answer, whatever the input kind: per input, in the order sent."""

    predictions: list[str] = Field(description="the most probable class of each input")
    probabilities: list[dict[str, float]] = Field(
        description="each input's probability of every class, keyed by class"
    )
    model_version: str


class RegressionAnswer(BaseModel):
    """A regression's answer, whatever the input kind: per input, in the order sent."""

    predictions: list[float] = Field(description="the predicted value of each input")
    model_version: str


class ErrorAnswer(BaseModel):
    """Every 4xx answer: one line saying what is wrong with the request."""

    error: str


def _responses(model: Model) -> dict[int | str, dict[str, Any]]:
    """OpenAPI description of /predict's answers (the body is written by hand, see _answer)."""
    answer = RegressionAnswer if model.regression else ClassificationAnswer
    refused = {"model": ErrorAnswer, "description": "the request cannot be used"}
    return {200: {"model": answer, "description": "one prediction per input"}} | {
        status: refused for status in (400, 413, 415, 422)
    }


def _answer(model: Model, out: Any) -> dict[str, Any]:
    """The response body for the model's outputs on a batch (see ClassificationAnswer and
    RegressionAnswer)."""
    if model.regression:
        return {"predictions": out, "model_version": model.version}
    classes = model.classes
    return {
        "predictions": [classes[i] for i in out.argmax(axis=1).tolist()],
        # numpy's float32 scalars: orjson writes each in its shortest form
        "probabilities": [dict(zip(classes, row, strict=True)) for row in out],
        "model_version": model.version,
    }


def create_app(settings: Settings | None = None) -> FastAPI:
    """Load the model named by `settings` (default: from the environment) and build the app."""
    settings = settings or Settings()
    model = load_model(settings)
    metrics = Metrics(settings.max_batch)
    drift = None
    if settings.drift_metrics:
        drift = DriftCounters(load_profile(settings, model), metrics.registry)
    metrics.describe_model(_model_labels(model, settings, drift is not None))
    log = RequestLog(model.version, settings.log_payload) if settings.request_log else None
    metadata = orjson.dumps(
        {
            **model.card_json,
            "git_commit": settings.git_commit,
            "serving": {
                "max_batch": settings.max_batch,
                "max_body_bytes": settings.max_body_bytes,
                "drift_metrics": drift is not None,
            },
        }
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if drift is None:
            yield
            return
        flusher = asyncio.create_task(_flush_every(drift, settings.drift_flush_seconds))
        try:
            yield
        finally:
            flusher.cancel()
            drift.flush()

    app = FastAPI(
        lifespan=lifespan,
        telemetry={"tracing": settings.otel, "metrics": settings.otel, "logs": settings.otel},
        title="mlpipeline model service",
        version=model.version,
        description=f"{model.card_json.get('name', 'model')} on ONNX Runtime",
        # /openapi.json goes with the pages: without it they have nothing to show
        openapi_url="/openapi.json" if settings.api_docs else None,
    )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> Response:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def server_error(_request: Request, _exc: Exception) -> Response:
        # only a bug gets here (uvicorn logs it); say nothing about internals to the client
        return _error(500, "internal error")

    @app.post(
        "/predict",
        openapi_extra=_request_schema(model),
        response_class=Response,
        responses=_responses(model),
    )
    async def predict(request: Request) -> Response:
        """Predictions for a batch of records (a table model), examples (a tensor model) or
        image files (an image model)."""
        try:
            content_type = request.headers.get("content-type", "")
            media_type = content_type.split(";")[0].strip().lower()
            if not accepts(media_type, model.card.input.media_types):
                raise ClientError(
                    415,
                    "content_type",
                    f"Content-Type must be {' or '.join(model.card.input.media_types)}, "
                    f"not {media_type or 'missing'!r}",
                )
            encoding = request.headers.get("content-encoding", "identity").strip().lower()
            if encoding not in ("identity", ""):
                raise ClientError(
                    415,
                    "content_encoding",
                    f"Content-Encoding {encoding!r} is not accepted: send the body uncompressed",
                )
            body = await read_body(request, settings.max_body_bytes)
            if settings.log_payload:
                # image files would be bytes of noise in a text log: their size says enough
                json_body = media_type == "application/json"
                request.state.payload = body if json_body else b"<%d bytes>" % len(body)
            feeds = model.card.input.parse(body, content_type, settings)
        except ClientError as err:
            metrics.rejected.labels(err.reason).inc()
            request.state.rejected = err.reason
            return _error(err.status, err.message)
        # ORT releases the GIL but the model is tiny: a thread hop would cost more than the run
        out = model.predict(feeds)
        metrics.batch_size.observe(len(out))
        if drift is not None:
            drift.count(feeds, out)
        request.state.batch_size = len(out)
        answer = _answer(model, out)
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
        if drift is not None:
            drift.flush()
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(MetricsMiddleware, metrics=metrics, log=log)
    return app


async def _flush_every(drift: DriftCounters, seconds: float) -> None:
    """Count the queued requests every `seconds`, so that the counters of a worker that
    Prometheus's scrapes do not reach keep up too."""
    while True:
        await asyncio.sleep(seconds)
        drift.flush()


def _model_labels(model: Model, settings: Settings, profiled: bool) -> dict[str, str]:
    """model_info's labels: what the card and the settings say about the served model."""
    hashes = model.card_json.get("hashes") or {}
    profile_md5 = ""
    if profiled:
        profile_md5 = hashlib.md5(settings.profile_file.read_bytes()).hexdigest()
    return {
        "name": str(model.card_json.get("name", "")),
        "version": model.version,
        "task": model.card.task,
        "data_md5": str(hashes.get("data", "")),
        "model_md5": str(hashes.get("model", "")),
        "onnx_md5": str(hashes.get("onnx", "")),
        "profile_md5": profile_md5,
        "git_commit": settings.git_commit or "",
    }
