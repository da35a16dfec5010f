"""Prometheus metrics of the service, the JSON request log, and the ASGI middleware that
counts, times and logs every request."""

from __future__ import annotations

import logging
import os
import re
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import datetime, timezone
from typing import Any

import orjson
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.requests import ClientDisconnect

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


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
        self.disconnects = Counter(
            "http_client_disconnects",
            "Requests whose client left before sending all of it, by route: never answered, "
            "so not in http_requests_total",
            ["route"],
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

    def describe_model(self, labels: dict[str, str]) -> None:
        """model_info{name, version, ...} 1: which model this is, for dashboards and joins."""
        info = Gauge(
            "model_info",
            "The served model: name, version, task, data, model, ONNX and profile hashes, "
            "git commit (value 1)",
            sorted(labels),
            registry=self.registry,
            multiprocess_mode="max",  # every worker sets the same
        )
        info.labels(**labels).set(1)

    def exposition(self) -> bytes:
        """Prometheus text; with PROMETHEUS_MULTIPROC_DIR set (several workers), the sum
        over all worker processes."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


# the request log's status for a client that left before its request was all in (nginx's)
CLIENT_CLOSED = 499
REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")  # a caller's X-Request-ID, taken as is


class RequestLog:
    """One JSON line per request on stdout: time, request id, method, route, status, latency,
    batch size, model version, and the refusal reason of a refused request. Never the body,
    unless `payload` (LOG_PAYLOAD) says so."""

    def __init__(self, model_version: str, payload: bool = False) -> None:
        self.model_version, self.payload = model_version, payload
        self.logger = logging.getLogger("mlpipeline.serving.requests")
        self.logger.setLevel(logging.INFO)
        self.logger.propagate = False  # the lines are JSON already: no second formatting
        if not self.logger.handlers:
            handler = logging.StreamHandler(sys.stdout)
            handler.setFormatter(logging.Formatter("%(message)s"))
            self.logger.addHandler(handler)

    def write(
        self,
        request_id: str,
        method: str,
        route: str,
        status: int,
        seconds: float,
        state: dict[str, Any],
    ) -> None:
        """Log one finished request; `state` is what the route left in request.state."""
        entry: dict[str, Any] = {
            "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "request_id": request_id,
            "method": method,
            "route": route,
            "status": status,
            "latency_ms": round(seconds * 1e3, 3),
            "model_version": self.model_version,
        }
        for key in ("batch_size", "rejected"):
            if key in state:
                entry[key] = state[key]
        if self.payload and "payload" in state:
            entry["payload"] = state["payload"].decode("utf-8", "replace")
        self.logger.info(orjson.dumps(entry).decode())


def request_id(headers: list[tuple[bytes, bytes]]) -> bytes:
    """The caller's X-Request-ID when it is a plain token, else a new random id."""
    for key, value in headers:
        if key == b"x-request-id" and REQUEST_ID.match(value):
            return value
    return uuid.uuid4().hex.encode()


class MetricsMiddleware:
    """Counts every HTTP request, times it, and logs it in one JSON line when `log` is given,
    answering with its X-Request-ID (plain ASGI: no per-request task overhead)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, log: RequestLog | None = None) -> None:
        self.app, self.metrics, self.log = app, metrics, log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500
        rid = b""
        if self.log is not None:
            rid = request_id(scope["headers"])
            # the route's request.state is this dict: it leaves the batch size there
            scope.setdefault("state", {})

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if rid:
                    message["headers"] = [*message.get("headers", ()), (b"x-request-id", rid)]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except ClientDisconnect:
            # the client left mid-request (or was cut off as too slow): no one is left to
            # answer, and it is no server error: nothing for the error ratios, no traceback
            status = CLIENT_CLOSED
        finally:
            route = scope.get("route")
            # the route template, never the raw path: unknown paths must not add label values
            name = getattr(route, "path", "other")
            elapsed = time.perf_counter() - start
            if status == CLIENT_CLOSED:
                self.metrics.disconnects.labels(name).inc()
            else:
                self.metrics.requests.labels(name, scope["method"], str(status)).inc()
                if status >= 400:
                    self.metrics.errors.labels(name, str(status)).inc()
                self.metrics.latency.labels(name).observe(elapsed)
            if self.log is not None:
                self.log.write(rid.decode(), scope["method"], name, status, elapsed, scope["state"])
