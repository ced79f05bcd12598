"""One trace across every hop (issue 18): W3C trace context through the outbox, Kafka headers and
HTTP, with the three services in this process, their spans caught by an in-memory exporter.

- a booking (BookAppointment -> calendar AppointmentBooked -> matcher LinkAppointment ->
  invoicing LineLinked -> calendar's package note) is one trace: one root (the sender's span, its
  context sent by the contracts' client), every other span's parent in it, consume and apply
  spans in calendar, matcher, invoicing and calendar again
- the context kept with an outbox row outlives the service: a calendar restarted between the
  commit and the publish continues the trace, and the record's traceparent names its publish span
- a request's traceparent is the parent of the HTTP span, and what the request publishes goes on
  in the same trace
- a record whose traceparent is garbage is applied in a new trace, never dead-lettered
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, format_span_id, format_trace_id
from packline_contracts.envelope import Envelope, encode
from packline_contracts.invoices import LineLinked
from packline_contracts.probes import ProbeSent
from packline_contracts.topics import CALENDAR_EVENTS, OPS_PROBES
from packline_core.service import Service

from tests.clinic import booking, days_ahead, patient
from tests.conftest import Infrastructure, ReadEvents, StartService, same_database
from tests.helpers import eventually
from tests.system import start_system

pytestmark = pytest.mark.infra


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


def traced(start_service: StartService, spans: InMemorySpanExporter) -> StartService:
    """``start_service`` whose services also hand their spans to ``spans``."""

    def catch(service: Service) -> None:
        service.tracing.add_processor(SimpleSpanProcessor(spans))

    async def start(name: str, **options: Any) -> Service:
        return await start_service(name, customize=catch, **options)

    return start


def service_of(span: ReadableSpan) -> str:
    return str((span.attributes or {}).get("packline.service"))


def in_trace(spans: InMemorySpanExporter, trace_id: int) -> list[ReadableSpan]:
    return [s for s in spans.get_finished_spans() if s.context.trace_id == trace_id]


def find(spans: InMemorySpanExporter, where: Callable[[ReadableSpan], bool]) -> list[ReadableSpan]:
    return [s for s in spans.get_finished_spans() if where(s)]


def attribute(span: ReadableSpan, name: str) -> Any:
    return (span.attributes or {}).get(name)


def traceparent_of(span: ReadableSpan) -> str:
    context = span.context
    return (
        f"00-{format_trace_id(context.trace_id)}-{format_span_id(context.span_id)}"
        f"-{context.trace_flags:02x}"
    )


def tree(found: list[ReadableSpan], prefix: str) -> str:
    """The trace as an indented tree: service / span name, children under their parent."""
    by_id = {s.context.span_id: s for s in found}
    children: dict[int | None, list[ReadableSpan]] = {}
    for s in sorted(found, key=lambda s: s.start_time or 0):
        parent = s.parent.span_id if s.parent and s.parent.span_id in by_id else None
        children.setdefault(parent, []).append(s)
    lines: list[str] = []

    def show(span: ReadableSpan, depth: int) -> None:
        parent = by_id.get(span.parent.span_id) if span.parent else None
        under = f"{service_of(parent)} / {parent.name}" if parent else "(root)"
        name = span.name.replace(prefix, "")
        lines.append(f"{'  ' * depth}{service_of(span)} / {name}   <- {under.replace(prefix, '')}")
        for child in children.get(span.context.span_id, []):
            show(child, depth + 1)

    for root in children.get(None, []):
        show(root, 0)
    return "\n".join(lines)


async def test_one_booking_is_one_trace_through_calendar_matcher_invoicing_calendar(
    start_service: StartService,
    producer: Any,
    read_events: ReadEvents,
    spans: InMemorySpanExporter,
    topic_prefix: str,
) -> None:
    system = await start_system(traced(start_service, spans), producer, read_events)
    who = patient()
    await system.buy(who, "massage-5x60")
    command = booking(who, days_ahead(2))
    # The front end's own span: the contracts' client sends its context as traceparent.
    front_end = TracerProvider(resource=Resource.create({"service.name": "front-end"}))
    front_end.add_span_processor(SimpleSpanProcessor(spans))
    with front_end.get_tracer("test").start_as_current_span(
        "book an appointment", attributes={"packline.service": "front-end"}
    ) as clicked:
        sent = await system.producer.send(command)
    await system.events.wait_for(
        LineLinked, lambda e: e.payload.appointment_id == command.appointment_id
    )

    def the_booking(s: ReadableSpan) -> bool:
        return s.name == f"consume {topic_prefix}packline.calendar.commands" and attribute(
            s, "messaging.message.id"
        ) == str(sent.message_id)

    read = (await eventually(lambda: _found(spans, the_booking), what="the booking's span"))[0]
    trace_id = clicked.get_span_context().trace_id
    assert read.context.trace_id == trace_id
    assert read.parent is not None and read.parent.span_id == clicked.get_span_context().span_id
    (root,) = find(spans, lambda s: s.name == "book an appointment")

    def step(service: str, name: str) -> Callable[[ReadableSpan], bool]:
        return lambda s: service_of(s) == service and s.name == name

    wanted = [
        step("calendar", "apply BookAppointment"),
        step("calendar", f"publish {topic_prefix}packline.calendar.events"),
        step("matcher", f"consume {topic_prefix}packline.calendar.events"),
        step("matcher", "apply AppointmentBooked"),
        step("matcher", f"publish {topic_prefix}packline.invoicing.links"),
        step("invoicing", f"consume {topic_prefix}packline.invoicing.links"),
        step("invoicing", "apply LinkAppointment"),
        step("invoicing", f"publish {topic_prefix}packline.invoicing.events"),
        step("calendar", f"consume {topic_prefix}packline.invoicing.events"),
        step("calendar", "apply LineLinked"),
    ]

    async def whole() -> list[ReadableSpan] | None:
        found = in_trace(spans, trace_id)
        return found if all(any(w(s) for s in found) for w in wanted) else None

    found = await eventually(
        whole,
        what="every hop of the booking in its trace",
        describe=lambda: tree(in_trace(spans, trace_id), topic_prefix),
    )
    print(f"\none booking, trace {format_trace_id(trace_id)}:\n{tree(found, topic_prefix)}")

    # One tree: a single root (the front end's span), every other span's parent in the trace
    # and started no later than it.
    by_id = {s.context.span_id: s for s in found}
    roots = [s for s in found if s.parent is None]
    assert roots == [root], [s.name for s in roots]
    for span in found:
        if span is root:
            continue
        assert span.parent is not None and span.parent.span_id in by_id, span.name
        assert (by_id[span.parent.span_id].start_time or 0) <= (span.start_time or 0)

    # The chain itself: calendar -> matcher -> invoicing -> calendar, each hop under the last.
    def ancestors(span: ReadableSpan) -> list[str]:
        chain = []
        while span.parent is not None:
            span = by_id[span.parent.span_id]
            chain.append(f"{service_of(span)} / {span.name}")
        return chain

    note = next(s for s in found if wanted[-1](s))
    booked = [
        "calendar / publish packline.calendar.events",
        "calendar / apply BookAppointment",
        "calendar / consume packline.calendar.commands",
        "front-end / book an appointment",
    ]
    # Invoicing applies the matcher's link at once when it has read the booking already, else
    # the link waits and is applied with the booking's event: two orders, each one chain.
    through_the_link = [
        "calendar / consume packline.invoicing.events",
        "invoicing / publish packline.invoicing.events",
        "invoicing / apply LinkAppointment",
        "invoicing / consume packline.invoicing.links",
        "matcher / publish packline.invoicing.links",
        "matcher / apply AppointmentBooked",
        "matcher / consume packline.calendar.events",
        *booked,
    ]
    after_the_booking = [
        "calendar / consume packline.invoicing.events",
        "invoicing / publish packline.invoicing.events",
        "invoicing / apply AppointmentBooked",
        "invoicing / consume packline.calendar.events",
        *booked,
    ]
    chain = [a.replace(topic_prefix, "") for a in ancestors(note)]
    assert chain in (through_the_link, after_the_booking), chain
    kinds = {s.kind for s in found}
    assert {SpanKind.CONSUMER, SpanKind.PRODUCER, SpanKind.INTERNAL} <= kinds
    # The calendar's package note is there, and the spans say who made them.
    assert await system.calendar.pool.fetchval(
        "SELECT 1 FROM package_notes WHERE appointment_id = $1", command.appointment_id
    )
    assert {service_of(s) for s in found} == {"front-end", "calendar", "matcher", "invoicing"}


async def _found(
    spans: InMemorySpanExporter, where: Callable[[ReadableSpan], bool]
) -> list[ReadableSpan] | None:
    return find(spans, where) or None


async def test_the_trace_survives_a_restart_between_commit_and_publish(
    start_service: StartService,
    producer: Any,
    spans: InMemorySpanExporter,
    infrastructure: Infrastructure,
    topic_prefix: str,
) -> None:
    start = traced(start_service, spans)
    first = await start("calendar")
    first.relay.stop()  # the process dies before its relay publishes: rows stay in the outbox
    await eventually(lambda: _true(not first.relay.is_leader), what="the relay to stop")
    command = booking(patient(), days_ahead(2))
    await producer.send(command)

    async def kept() -> Any:
        return await first.pool.fetchrow(
            "SELECT trace_context, sent_at FROM outbox WHERE topic = $1",
            f"{topic_prefix}{CALENDAR_EVENTS.name}",
        )

    row = await eventually(kept, what="the AppointmentBooked (or refusal) row in the outbox")
    assert row["sent_at"] is None
    (apply,) = find(spans, lambda s: s.name == "apply BookAppointment")
    stored = json.loads(row["trace_context"])
    assert stored["traceparent"] == traceparent_of(apply)
    database = same_database(first)
    await first.stop()

    events = AIOKafkaConsumer(
        f"{topic_prefix}{CALENDAR_EVENTS.name}",
        bootstrap_servers=infrastructure.kafka_bootstrap,
        auto_offset_reset="earliest",
        group_id=f"{topic_prefix}trace-reader",
    )
    await events.start()
    try:
        second = await start("calendar", **database)  # a new process, in effect
        record = await _next_record(events)
    finally:
        await events.stop()

    def published(s: ReadableSpan) -> bool:
        return service_of(s) == "calendar" and s.name.startswith("publish ")

    (publish,) = await eventually(lambda: _found(spans, published), what="the publish span")
    assert publish.context.trace_id == apply.context.trace_id
    assert publish.parent is not None and publish.parent.span_id == apply.context.span_id
    assert attribute(publish, "service.name") is None  # the resource says it, not attributes
    assert publish.resource.attributes["service.name"] == "packline-calendar"
    headers = dict(record.headers)
    assert headers["traceparent"].decode() == traceparent_of(publish)
    assert second.relay.is_leader


async def _true(value: bool) -> bool:
    return value


async def _next_record(consumer: AIOKafkaConsumer) -> Any:
    async def one() -> Any:
        batches = await consumer.getmany(timeout_ms=500)
        for records in batches.values():
            for record in records:
                return record
        return None

    return await eventually(one, what="a record on the calendar's events")


async def test_an_http_request_s_traceparent_is_the_parent_of_what_it_publishes(
    start_service: StartService, spans: InMemorySpanExporter
) -> None:
    calendar = await traced(start_service, spans)("calendar")
    trace_id, caller = 0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=calendar.http), base_url="http://x"
    ) as client:
        answer = await client.post(
            "/ops/probes",
            headers={"traceparent": f"00-{trace_id:032x}-{caller:016x}-01"},
        )
        assert answer.status_code == 202, answer.text
        await client.get("/health/live")  # probes are not traced

    def applied(s: ReadableSpan) -> bool:
        return s.name == "apply ProbeSent" and s.context.trace_id == trace_id

    await eventually(lambda: _found(spans, applied), what="the probe applied in the same trace")
    found = in_trace(spans, trace_id)
    (server,) = [s for s in found if s.kind == SpanKind.SERVER]
    assert server.name == "POST /ops/probes"
    assert server.parent is not None and server.parent.span_id == caller
    assert attribute(server, "http.response.status_code") == 202
    assert attribute(server, "http.route") == "/ops/probes"
    (publish,) = [s for s in found if s.name.startswith("publish ")]
    assert publish.parent is not None and publish.parent.span_id == server.context.span_id
    assert not find(spans, lambda s: "/health" in s.name)


@pytest.mark.parametrize(
    "headers",
    [
        [("traceparent", b"00-not-a-trace-01")],
        [("traceparent", b"\xff\xfe"), ("tracestate", b"\x00")],
        [("traceparent", None)],
        [("traceparent", b"00-" + b"0" * 32 + b"-" + b"1" * 16 + b"-01")],  # an invalid trace id
        [("traceparent", b"x" * 100_000)],
        [
            ("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            ("traceparent", b"00-1af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        ],
    ],
    ids=["malformed", "not-text", "null", "zero-trace-id", "huge", "two-that-disagree"],
)
async def test_a_garbage_traceparent_starts_a_new_trace_and_the_record_is_applied(
    start_service: StartService,
    spans: InMemorySpanExporter,
    infrastructure: Infrastructure,
    topic_prefix: str,
    headers: list[tuple[str, bytes | None]],
) -> None:
    calendar = await traced(start_service, spans)("calendar")
    probe = ProbeSent(probe_id=uuid4(), sent_by="hostile", sent_at=datetime.now(UTC))
    record = encode(Envelope.wrap(probe, producer="hostile"))
    kafka = AIOKafkaProducer(bootstrap_servers=infrastructure.kafka_bootstrap)
    await kafka.start()
    try:
        await kafka.send_and_wait(
            f"{topic_prefix}{OPS_PROBES.name}",
            value=record.value,
            key=record.key,
            headers=[*record.headers, *headers],
        )
    finally:
        await kafka.stop()

    async def applied() -> bool:
        return bool(
            await calendar.pool.fetchval(
                "SELECT 1 FROM ops_probe_received WHERE probe_id = $1", probe.probe_id
            )
        )

    await eventually(applied, what="the probe applied despite its traceparent")
    (consume,) = find(spans, lambda s: s.name.startswith("consume ") and s.parent is None)
    assert consume.status.is_ok
    (apply,) = find(spans, lambda s: s.name == "apply ProbeSent")
    assert apply.context.trace_id == consume.context.trace_id
    assert apply.parent is not None and apply.parent.span_id == consume.context.span_id
    assert consume.context.trace_id not in (0, 0x0AF7651916CD43DD8448EB211C80319C)
