"""OpenTelemetry tracing across every hop: Kafka (through the outbox) and HTTP.

A flow such as a booking crosses four services and four topics; one trace follows it. The W3C
trace context (``traceparent`` / ``tracestate``) travels:

- **through the outbox**: ``Transaction.publish`` stores the context current in the handler (or
  HTTP request) with the outbox row, in the same database transaction, so a restart between the
  commit and the relay's publish does not break the trace;
- **in Kafka headers**: the relay opens a ``publish <topic>`` span (child of the stored context)
  and sends its context as the record's ``traceparent`` / ``tracestate`` headers;
- **into consumers**: each record's ``consume <topic>`` span is a child of its headers' context,
  and the handler runs in an ``apply <MessageType>`` span under it. A header that is missing,
  malformed or hostile is ignored: the record starts a new trace (it is never refused for it);
- **over HTTP**: every request gets a server span (``<METHOD> <route>``), a child of the
  request's ``traceparent``; :func:`http_headers` gives the headers for a call to another service.

Each service has its own tracer provider (``service.name`` = ``packline-<service>``), so the
three services can run in one process (the tests) and still say which made each span; every
span also carries ``packline.service``. Spans are exported over OTLP/HTTP when
``PACKLINE_OTLP_ENDPOINT`` (or the standard ``OTEL_EXPORTER_OTLP_ENDPOINT`` /
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set; otherwise nothing is exported but the context is
still carried, so a downstream service that exports keeps the trace whole.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from packline_core.service import Service

TRACE_HEADERS = ("traceparent", "tracestate")
# W3C trace context only, whatever OTEL_PROPAGATORS says: it is what the headers promise.
_W3C = TraceContextTextMapPropagator()
# Probes and scrapes every few seconds would bury the traces that matter.
UNTRACED_PATHS = frozenset({"/health/live", "/health/ready", "/metrics"})
TRACES_PATH = "/v1/traces"


class Tracing:
    """One service's tracer provider and tracer."""

    def __init__(
        self,
        service: str,
        instance_id: str,
        otlp_endpoint: str | None = None,
        processors: Sequence[SpanProcessor] = (),
    ) -> None:
        self.service = service
        exporting = exporter_wanted(otlp_endpoint)
        self.provider = TracerProvider(
            resource=Resource.create(
                {"service.name": f"packline-{service}", "service.instance.id": instance_id}
            ),
            shutdown_on_exit=exporting,  # flushes the batch processor when the process exits
        )
        if exporting:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            self.provider.add_span_processor(
                BatchSpanProcessor(OTLPSpanExporter(endpoint=traces_url(otlp_endpoint)))
            )
        for processor in processors:
            self.provider.add_span_processor(processor)
        self.tracer = self.provider.get_tracer("packline_core")

    def add_processor(self, processor: SpanProcessor) -> None:
        """Also hand every span to ``processor`` (tests: an in-memory exporter's)."""
        self.provider.add_span_processor(processor)

    def start(
        self,
        name: str,
        *,
        parent: Context | None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, str | int | bool] | None = None,
    ) -> Span:
        """A span (to end by the caller), a child of ``parent`` (None: a new trace)."""
        return self.tracer.start_span(
            name,
            context=parent if parent is not None else Context(),
            kind=kind,
            attributes={"packline.service": self.service, **(attributes or {})},
        )

    def current_span(
        self,
        name: str,
        *,
        parent: Context | None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, str | int | bool] | None = None,
    ) -> AbstractContextManager[Span]:
        """A span current in a ``with`` block (logs inside carry its ids); an exception that
        leaves the block is recorded on it."""
        return self.tracer.start_as_current_span(
            name,
            context=parent if parent is not None else Context(),
            kind=kind,
            attributes={"packline.service": self.service, **(attributes or {})},
        )


def install(service: Service) -> Tracing:
    """Tracing for ``service``: its provider, HTTP server spans, the relay's publish spans."""
    tracing = Tracing(service.name, service.settings.instance_id, service.settings.otlp_endpoint)
    service.http.add_middleware(HttpSpans, tracing=tracing)  # added last: the outermost
    service.relay.tracing = tracing
    return tracing


def exporter_wanted(otlp_endpoint: str | None) -> bool:
    return bool(
        otlp_endpoint
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def traces_url(otlp_endpoint: str | None) -> str | None:
    """``PACKLINE_OTLP_ENDPOINT`` is the collector's base URL (``http://collector:4318``), as
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` is; None lets the exporter read the standard variables."""
    if not otlp_endpoint:
        return None
    base = otlp_endpoint.rstrip("/")
    return base if base.endswith(TRACES_PATH) else base + TRACES_PATH


# --- carrying the context ---------------------------------------------------------------------


def context_from_headers(headers: Iterable[tuple[Any, Any]]) -> Context | None:
    """The trace context a Kafka record's (or HTTP request's) headers carry, or None (a new
    trace). Whatever a client sent — no value, bytes that are not text, a malformed or repeated
    ``traceparent`` — never raises: what cannot be read is ignored."""
    carrier: dict[str, list[str]] = {}
    try:
        for name, raw in headers:
            if isinstance(name, bytes):
                name = name.decode("latin-1").lower()
            if name not in TRACE_HEADERS or raw is None:
                continue
            try:
                value = raw.decode("ascii") if isinstance(raw, bytes) else str(raw)
            except UnicodeDecodeError:
                continue  # not W3C's characters: as if absent
            carrier.setdefault(name, []).append(value)
        if not carrier.get("traceparent"):
            return None
        if len(set(carrier["traceparent"])) > 1:
            return None  # copies that disagree: which one to believe?
        extracted = _W3C.extract(carrier)
    except Exception:  # a hostile value: a new trace, never a refused record
        return None
    if not trace.get_current_span(extracted).get_span_context().is_valid:
        return None
    return extracted


def context_from_json(stored: str | None) -> Context | None:
    """The context an outbox row kept (see :func:`current_context_json`)."""
    if not stored:
        return None
    try:
        carrier = json.loads(stored)
    except ValueError:
        return None
    if not isinstance(carrier, dict):
        return None
    return context_from_headers(carrier.items())


def current_context_json() -> str | None:
    """The current trace context as a small JSON object, to keep with an outbox row."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    return json.dumps(carrier) if carrier else None


def context_json(span: Span) -> str | None:
    """``span``'s trace context as a small JSON object, to keep with an outbox row."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier, context=trace.set_span_in_context(span))
    return json.dumps(carrier) if carrier else None


def kafka_headers(span: Span) -> list[tuple[str, bytes]]:
    """``traceparent`` / ``tracestate`` headers naming ``span`` as the parent."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier, context=trace.set_span_in_context(span))
    return [(name, value.encode()) for name, value in carrier.items()]


def http_headers() -> dict[str, str]:
    """Headers carrying the current trace to another service over HTTP."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    return carrier


def current(span: Span) -> Any:
    """Make ``span`` the current span in a ``with`` block (logs inside carry its ids)."""
    return trace.use_span(span, end_on_exit=False)


def fail(span: Span, error: BaseException | str) -> None:
    if isinstance(error, BaseException):
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"[:200]))
    else:
        span.set_status(Status(StatusCode.ERROR, error[:200]))


# --- HTTP ---------------------------------------------------------------------------------------


class HttpSpans:
    """A server span for each HTTP request (a pure ASGI middleware: no task hop), a child of the
    request's ``traceparent`` when it carries a valid one. Named by the route's template, not
    the path, and without the query string (it may carry a patient's name)."""

    def __init__(self, app: ASGIApp, tracing: Tracing) -> None:
        self.app = app
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in UNTRACED_PATHS:
            await self.app(scope, receive, send)
            return
        method = str(scope.get("method", "HTTP"))
        span = self.tracing.start(
            method,
            parent=context_from_headers(scope.get("headers") or ()),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": str(scope.get("path", ""))},
        )
        status = 0

        async def send_recording_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                span.set_attribute("http.response.status_code", status)
            await send(message)

        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            await self.app(scope, receive, send_recording_status)
        except BaseException as error:
            fail(span, error)
            raise
        finally:
            otel_context.detach(token)
            route = getattr(scope.get("route"), "path", None)
            if isinstance(route, str):
                span.update_name(f"{method} {route}")
                span.set_attribute("http.route", route)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR, f"HTTP {status}"))
            span.end()
