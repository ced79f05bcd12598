"""Tracing's pieces without the broker: reading a trace context from whatever headers a client
sent, keeping it for the outbox, the OTLP endpoint as configuration, and trace ids in logs."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
import structlog
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from packline_core import tracing
from packline_core.logging import configure_logging

VALID = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def span_context_of(headers: list[tuple[Any, Any]]) -> trace.SpanContext | None:
    context = tracing.context_from_headers(headers)
    if context is None:
        return None
    return trace.get_current_span(context).get_span_context()


def test_a_valid_traceparent_is_the_parent_remote_context() -> None:
    found = span_context_of([("message-id", b"x"), ("traceparent", VALID), ("tracestate", b"a=1")])
    assert found is not None and found.is_remote
    assert found.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    assert found.span_id == 0xB7AD6B7169203331
    assert found.trace_state.get("a") == "1"
    # HTTP (ASGI) headers: names and values as bytes
    assert span_context_of([(b"traceparent", VALID)]) == span_context_of([("traceparent", VALID)])


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [("traceparent", b"")],
        [("traceparent", None)],
        [("traceparent", b"00-not-a-trace-01")],
        [("traceparent", b"\xff\xfe\xfd")],
        [("traceparent", VALID.replace(b"-01", b"-01-extra"))],
        [("traceparent", b"ff" + VALID[2:])],  # version ff is forbidden
        [("traceparent", b"00-" + b"0" * 32 + VALID[35:])],  # zero trace id
        [("traceparent", b"x" * 1_000_000)],
        [("traceparent", VALID), ("traceparent", VALID.replace(b"0af7", b"1af7"))],
        [("\udcff\udcfe", b"x"), ("traceparent", 12)],  # a name that was not UTF-8; not bytes
    ],
)
def test_garbage_is_ignored_a_new_trace_never_an_error(headers: list[tuple[Any, Any]]) -> None:
    assert tracing.context_from_headers(headers) is None


@pytest.mark.parametrize("tracestate", [b"=,,=" * 200, b"\xff", None, b"k=" + b"v" * 10_000])
def test_a_hostile_tracestate_does_not_lose_a_good_traceparent(tracestate: bytes | None) -> None:
    found = span_context_of([("traceparent", VALID), ("tracestate", tracestate)])
    assert found is not None and found.trace_id == 0x0AF7651916CD43DD8448EB211C80319C


def test_the_outbox_keeps_the_current_context_and_gives_it_back() -> None:
    assert tracing.current_context_json() is None  # outside any span: nothing to keep
    exporter = InMemorySpanExporter()
    tracer = tracing.Tracing("calendar", "replica-1", processors=[SimpleSpanProcessor(exporter)])
    with tracer.current_span("apply BookAppointment", parent=None) as span:
        kept = tracing.current_context_json()
        assert tracing.http_headers()["traceparent"] == json.loads(kept or "")["traceparent"]
    restored = tracing.context_from_json(kept)
    assert restored is not None
    assert trace.get_current_span(restored).get_span_context().span_id == (
        span.get_span_context().span_id
    )
    assert tracing.context_from_json("not json") is None
    assert tracing.context_from_json("[1]") is None
    (finished,) = exporter.get_finished_spans()
    assert finished.attributes == {"packline.service": "calendar"}
    assert finished.resource.attributes["service.name"] == "packline-calendar"


def test_the_otlp_endpoint_is_a_base_url_like_the_standard_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert tracing.traces_url("http://collector:4318") == "http://collector:4318/v1/traces"
    assert tracing.traces_url("http://collector:4318/") == "http://collector:4318/v1/traces"
    assert tracing.traces_url("http://c:4318/v1/traces") == "http://c:4318/v1/traces"
    assert tracing.traces_url(None) is None
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert not tracing.exporter_wanted(None)
    assert tracing.exporter_wanted("http://collector:4318")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    assert tracing.exporter_wanted(None)


@pytest.fixture
def collector() -> Iterator[tuple[str, list[tuple[str, str, bytes]]]]:
    """A stand-in OTLP/HTTP collector: records each request's path, content type and body."""
    received: list[tuple[str, str, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            received.append((self.path, self.headers.get("content-type", ""), body))
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


def test_spans_are_exported_to_the_configured_otlp_endpoint(
    collector: tuple[str, list[tuple[str, str, bytes]]],
) -> None:
    url, received = collector
    traced = tracing.Tracing("matcher", "replica-1", otlp_endpoint=url)
    try:
        with traced.current_span("apply AppointmentBooked", parent=None):
            pass
        assert traced.provider.force_flush(10_000)
    finally:
        traced.provider.shutdown()
    assert received, "nothing reached the collector"
    path, content_type, body = received[0]
    assert path == "/v1/traces"
    assert content_type == "application/x-protobuf"
    assert b"apply AppointmentBooked" in body and b"packline-matcher" in body


def test_a_log_line_inside_a_span_carries_its_trace_and_span_ids() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    traced = tracing.Tracing("calendar", "replica-1")
    try:
        configure_logging("calendar", "replica-1", "INFO", "json")
        stream = io.StringIO()
        root.handlers[0].stream = stream  # type: ignore[attr-defined]
        log = structlog.get_logger("test")
        with traced.current_span("apply BookAppointment", parent=None) as span:
            log.info("inside")
            logging.getLogger("aiokafka.test").warning("a library's line inside")
        log.info("outside")
        inside, library, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        structlog.reset_defaults()
    context = span.get_span_context()
    assert inside["trace_id"] == library["trace_id"] == f"{context.trace_id:032x}"
    assert inside["span_id"] == f"{context.span_id:016x}"
    assert "trace_id" not in outside and "span_id" not in outside
