"""The FastAPI app: POST /predict, GET /health, /ready, /metadata and /metrics (Prometheus).

Request body: `{"inputs": [example, ...]}`, each example a nested list in the model card's
input shape without its batch axis (for the digits CNN: `[1, 8, 8]`). Answer:
`{"classes": [...], "probabilities": [[...], ...], "model_version": "..."}`.
Every request the service cannot use gets a 4xx answer `{"error": "<what is wrong>"}`.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException

from mlpipeline.serving.metrics import Metrics, MetricsMiddleware
from mlpipeline.serving.model import Model, load_model
from mlpipeline.serving.parsing import ClientError, parse_inputs, read_body
from mlpipeline.serving.settings import Settings

JSON_TYPES = ("application/json",)


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
