"""uvicorn's httptools protocol, bounded in what a client controls before the app sees its
request: the size and number of its headers (431), the time it takes to send the whole request
(READ_TIMEOUT_SECONDS: 408 when its head is unfinished, else the connection closes), and the
connections open at once (503 as soon as one opens beyond the limit).

uvicorn's httptools protocol has none of these: the parser holds a header in memory until the
header's end arrives, however long it grows; uvicorn times only idle keep-alive connections;
and its limit_concurrency is checked once a request's head is complete, which a slow client
never lets happen, so each such client holds a file descriptor for as long as it likes.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol that refuses heads over `max_header_bytes` or `max_headers` fields
    (431), closes a connection whose request is not all in within `read_timeout` seconds of
    its first byte (or of the connection's start), and refuses a connection that opens once
    uvicorn's limit_concurrency is reached (503). Pass it to uvicorn as `http=`, its limits
    bound with functools.partial."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        max_header_bytes: int,
        max_headers: int,
        read_timeout: float,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.max_header_bytes, self.max_headers = max_header_bytes, max_headers
        self.read_timeout = read_timeout
        self.deadline: float | None = None  # when the request being read must be all in
        # one timer per connection, moved on only when it fires: arming and cancelling one per
        # request cost more than the rest of these bounds together
        self.read_timer: asyncio.TimerHandle | None = None
        self.in_head = False  # a request has begun and its head is not complete
        self.head_bytes = 0  # bytes received since that request began
        self.refused = False  # answered and closing: the parser's remaining callbacks do nothing

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # uvicorn's own check (in on_headers_complete) uses the same rule
        if self.limit_concurrency is not None and len(self.connections) >= self.limit_concurrency:
            self._refuse(503, "the server has too many connections open: retry later")
            return
        self._start_deadline()  # for the first request, even if it never begins

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # the parser holds an unfinished header whole: bound the bytes it may be holding
        if self.in_head and not self.transport.is_closing():
            self.head_bytes += len(data)
            if self.head_bytes > self.max_header_bytes:
                self._refuse_head()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.in_head, self.head_bytes = True, 0
        self._start_deadline()

    def on_headers_complete(self) -> None:
        self.in_head = False
        if self.refused:
            return
        size = len(self.url) + sum(len(name) + len(value) for name, value in self.headers)
        if size > self.max_header_bytes or len(self.headers) > self.max_headers:
            self._refuse_head()
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self.refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self.deadline = None
        if not self.refused:
            super().on_message_complete()

    def _start_deadline(self) -> None:
        if self.deadline is None:
            self.deadline = self.loop.time() + self.read_timeout
        if self.read_timer is None and not self.refused:
            self.read_timer = self.loop.call_at(self.deadline, self._check_deadline)

    def _stop_timer(self) -> None:
        if self.read_timer is not None:
            self.read_timer.cancel()
            self.read_timer = None

    def _check_deadline(self) -> None:
        self.read_timer = None
        if self.deadline is None:  # no request being read: the keep-alive timeout holds
            return
        if self.loop.time() < self.deadline:  # a later request's
            self.read_timer = self.loop.call_at(self.deadline, self._check_deadline)
            return
        # a 408 only where no answer is under way: no request has reached the app yet, or
        # this one's head is unfinished and the one before it has been answered
        if self.cycle is None or (self.in_head and self.cycle.response_complete):
            self._refuse(408, f"request not received within {self.read_timeout:g} s")
        else:
            # the app has the request (or has answered it early): it sees the client leave
            self.transport.close()

    def _refuse_head(self) -> None:
        self._refuse(
            431,
            f"request headers over the limit of {self.max_header_bytes} bytes or "
            f"{self.max_headers} fields: send fewer or smaller headers",
        )

    def _refuse(self, status: int, message: str) -> None:
        """Answer `status` with {"error": message} and close the connection. Logged at debug
        level only: a flood of such clients must not flood the log."""
        self.refused = True
        self._stop_timer()
        if self.transport.is_closing():  # uvicorn has answered already (a malformed request)
            return
        body = orjson.dumps({"error": message})
        head = [STATUS_LINE[status]]
        head += [b"%s: %s\r\n" % header for header in self.server_state.default_headers]
        head.append(
            b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
            % len(body)
        )
        self.transport.write(b"".join([*head, body]))
        self.transport.close()
        self.logger.debug("%s refused with %d: %s", self.client, status, message)
