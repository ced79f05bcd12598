"""Structured logs: one JSON object a line on stdout (or readable lines on a terminal), with the
service and replica on every line. Library loggers (uvicorn, FastStream, aiokafka) go through the
same formatter so an operator greps one format. A line written inside a span carries its
``trace_id`` and ``span_id``."""

from __future__ import annotations

import logging
import sys

import structlog
from opentelemetry import trace


def add_trace_ids(
    _logger: object, _method: str, event: structlog.types.EventDict
) -> structlog.types.EventDict:
    """Inside a span (consume, apply, publish, an HTTP request): its ``trace_id`` and
    ``span_id``, as a tracing backend shows them, so a trace's log lines can be found."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event.setdefault("trace_id", trace.format_trace_id(context.trace_id))
        event.setdefault("span_id", trace.format_span_id(context.span_id))
    return event


def configure_logging(service: str, instance_id: str, level: str, fmt: str) -> None:
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        add_trace_ids,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    # JSON lines carry an exception's traceback as text ("exception"); without this step
    # log.exception in JSON kept only the message and the on-call engineer had no stack.
    tracebacks: list[structlog.types.Processor] = (
        [structlog.processors.format_exc_info] if fmt == "json" else []
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *tracebacks,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiokafka reports every retried connection at ERROR; they are expected while Kafka restarts.
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))
    # OpenTelemetry warns, with the values, about every malformed traceparent / tracestate a
    # client sends; such a header is ignored (a new trace), and a hostile client must not be
    # able to write a log line per record.
    for reader in ("opentelemetry.trace.propagation", "opentelemetry.trace.span"):
        logging.getLogger(reader).setLevel(max(logging.ERROR, root.level))
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service, instance=instance_id)
