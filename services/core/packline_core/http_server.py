"""How every Packline process serves HTTP: uvicorn, with a deadline for request headers.

uvicorn has no header-read timeout: a client that opens a connection and sends its request one
byte at a time ("slowloris") keeps the connection, and the memory behind it, as long as it
likes, and enough such clients use up the server's file descriptors. Here a connection has
``PACKLINE_HTTP_HEADER_TIMEOUT_SECONDS`` from when it opens, and again from the end of each
response, to deliver complete request headers; otherwise it is closed (with ``408 Request
Timeout`` when part of a request had arrived). ``PACKLINE_HTTP_MAX_HEADER_BYTES`` bounds the
bytes of unfinished headers kept waiting for their end (more: 400; h11's incomplete-event
limit). Bodies are bounded by the app (``PACKLINE_HTTP_MAX_BODY_BYTES``). A buffering reverse
proxy in front is still recommended (docs/operations.md).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

import h11
import uvicorn
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("packline.http")

REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: 37\r\n"
    b"connection: close\r\n\r\n"
    b"request headers not received in time\n"
)


class HttpServerSettings(BaseSettings):
    """The HTTP server's limits on slow or oversized requests, for every Packline process."""

    model_config = SettingsConfigDict(
        env_prefix="PACKLINE_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    http_header_timeout_seconds: float = Field(
        default=10,
        gt=0,
        le=300,
        description="A connection that has not sent complete request headers this long after it "
        "opened, or after the previous response, is closed (408 when part of a request came).",
    )
    http_max_header_bytes: int = Field(
        default=16 * 1024,
        ge=4 * 1024,
        le=1024 * 1024,
        description="Most bytes of an unfinished request line and headers the server keeps "
        "waiting for their end; more: 400 and the connection is closed.",
    )


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request's headers (see the module)."""

    header_timeout: ClassVar[float] = 10.0

    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._headers_complete():
            self._disarm_header_timer()

    def on_response_complete(self) -> None:
        # The next request's headers are due within the timeout; uvicorn's own keep-alive timer
        # stops at the first byte of them, this one only when they are complete.
        super().on_response_complete()
        if not self.transport.is_closing() and not self._headers_complete():
            self._arm_header_timer()

    def _headers_complete(self) -> bool:
        """A request is in hand: its headers were parsed, or its response is still on its way."""
        waiting = self.conn.their_state is h11.IDLE
        return not waiting or (self.cycle is not None and not self.cycle.response_complete)

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self._headers_complete():
            return
        started, _ = self.conn.trailing_data
        log.debug(
            "closing a connection whose request headers did not arrive in time",
            extra={"client": self.client, "partial_bytes": len(started)},
        )
        if started:
            self.transport.write(REQUEST_TIMEOUT)
        try:
            self.conn.send(h11.ConnectionClosed())
        except h11.LocalProtocolError:
            pass
        self.transport.close()


def protocol_class(settings: HttpServerSettings) -> type[HeaderTimeoutProtocol]:
    """The protocol class uvicorn instantiates per connection, with this timeout."""
    return type(
        "HeaderTimeoutProtocol",
        (HeaderTimeoutProtocol,),
        {"header_timeout": settings.http_header_timeout_seconds},
    )


def serve(app: Any, settings: HttpServerSettings, *, host: str, port: int, **options: Any) -> None:
    """``uvicorn.run`` with the header deadline and the header size bound of ``settings``."""
    uvicorn.run(
        app,
        host=host,
        port=port,
        http=protocol_class(settings),
        h11_max_incomplete_event_size=settings.http_max_header_bytes,
        **options,
    )
