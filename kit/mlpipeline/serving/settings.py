"""The service's settings, from environment variables."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Service settings, read from environment variables of the same name in upper case
    (MODEL_PATH, CARD_PATH, PROFILE_PATH, HOST, PORT, WORKERS, MAX_BATCH, ...)."""

    # `model_path` would otherwise collide with pydantic's reserved `model_` prefix
    model_config = SettingsConfigDict(protected_namespaces=(), frozen=True, extra="ignore")

    model_path: Path = Field(Path("models/model.onnx"), description="the ONNX model")
    card_path: Path | None = Field(None, description="model card; default: beside the model")
    host: str = Field("127.0.0.1", description="address to listen on (0.0.0.0 in the image)")
    port: int = Field(8080, ge=1, le=65535)
    workers: int = Field(1, ge=1, le=64, description="uvicorn worker processes")
    max_batch: int = Field(1024, ge=1, description="most examples in one request")
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1, description="largest request body")
    max_image_pixels: int = Field(
        50_000_000,
        ge=1,
        description="an image model: most pixels (width x height) of one image file, read from "
        "its header before decoding; more: 422 (decompression bombs)",
    )
    max_header_bytes: int = Field(
        16 * 1024,
        ge=1024,
        description="largest request head (request line and headers); larger: 431",
    )
    max_headers: int = Field(100, ge=1, description="most header fields in a request; more: 431")
    read_timeout_seconds: float = Field(
        30.0,
        gt=0,
        description="most time a client may take to send a whole request, head and body; "
        "then the connection is closed (408 if its head was not complete)",
    )
    keep_alive_seconds: int = Field(
        5, ge=1, description="how long an idle keep-alive connection stays open"
    )
    max_connections: int = Field(
        512,
        ge=1,
        description="most connections open at once per worker (uvicorn's limit_concurrency); "
        "more: 503. Keep it below the open-file limit (ulimit -n)",
    )
    api_docs: bool = Field(
        True,
        description="serve /docs, /redoc and /openapi.json (the image turns them off)",
    )
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
    access_log: bool = Field(False, description="uvicorn's plain-text access log, on stderr")
    profile_path: Path | None = Field(
        None, description="drift reference profile; default: profile.json beside the model"
    )
    drift_metrics: bool = Field(
        True,
        description="count inputs and predictions against the profile, for the drift rules",
    )
    drift_flush_seconds: float = Field(
        1.0,
        gt=0,
        description="how often each worker adds the requests it has queued to the drift "
        "counters (also whenever it answers /metrics)",
    )
    request_log: bool = Field(True, description="one JSON line per request, on stdout")
    log_payload: bool = Field(
        False,
        description="add each /predict body to its log line; off by default, as bodies may "
        "hold personal data",
    )

    @property
    def card_file(self) -> Path:
        """The model card: CARD_PATH, else model_card.json beside the model."""
        return self.card_path or self.model_path.with_name("model_card.json")

    @property
    def profile_file(self) -> Path:
        """The drift profile: PROFILE_PATH, else profile.json beside the model."""
        return self.profile_path or self.model_path.with_name("profile.json")


def quiet_onnxruntime() -> None:
    """Turn ONNX Runtime's usage telemetry off, a value already set winning: a served model has
    no business phoning home. Call it before onnxruntime is imported, which reads it."""
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
