"""What a client can send on a topic, and what Packline does — through the real broker and
PostgreSQL, with kcat (librdkafka) where a client Packline did not write is the point.

- a record just under the broker's size limit -> dead-lettered as a reference, its bytes kept
  in the service's database; the partition flows
- JSON nested too deeply, a header whose value is null -> that record alone dead-lettered, the
  rest of its batch applied, nothing committed past it
- a header name that is not UTF-8 -> dead-lettered (the name's bytes kept); no fetch fails, no
  partition stalls
- NUL in text, a start near 9999-12-31, a time whose UTC form leaves years 1-9999 -> refused at
  once (attempts 1) and answered with BookingRefused (InvoiceCommandRefused for invoicing's
  commands) naming the field
- a value the database refuses although the contract allowed it -> dead-lettered at the first
  attempt, not retried
- a keyed record on another partition than murmur2's -> dead-lettered, naming the partitioner
- headers contradicting the value, schema_version 99, content-type not JSON -> dead-lettered
  naming the header or field
- an envelope backdated to 2020 booking into 2020 -> BookingRefused "in the past" (the
  calendar's own clock, within a 5-minute skew)
- a fetch that raises (whatever the reason) -> every partition read again from its commit:
  nothing it had taken from other partitions is skipped
- anything, while the consumer cannot make progress -> /health/ready names the partition; the
  lag and stalled-partition gauges show it
- anything, while the dead-letter topic refuses writes -> kept in the database, the partition
  flows; the reference is published once the topic is back
"""

from __future__ import annotations

import json
import zlib
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import murmur2
from packline_contracts.appointments import AppointmentBooked, BookingRefused
from packline_contracts.envelope import Envelope, encode
from packline_contracts.invoices import (
    InvoiceCommandRefused,
    IssuePackageInvoice,
    PurchaseChannel,
)
from packline_contracts.probes import ProbeSent
from packline_contracts.topics import (
    CALENDAR_COMMANDS,
    CALENDAR_EVENTS,
    INVOICING_COMMANDS,
    INVOICING_EVENTS,
    OPS_PROBES,
)
from packline_contracts.topics import dead_letter_topic as dead_letter_topic_of
from packline_core import deadletters, records
from packline_core.consumer import MessageConsumer
from packline_core.outbox import Transaction
from packline_core.service import Service

from tests.clinic import SETUP, booking, days_ahead, patient
from tests.conftest import TEST_PARTITIONS, Infrastructure, ReadEvents, StartService
from tests.helpers import about, eventually
from tests.kcat import kcat

pytestmark = pytest.mark.infra


def partition_of(key: bytes) -> int:
    return (murmur2(key) & 0x7FFFFFFF) % TEST_PARTITIONS


def probe_on(partition: int, sent_by: str = "test") -> ProbeSent:
    while True:
        made = ProbeSent(probe_id=uuid4(), sent_by=sent_by, sent_at=datetime.now(UTC))
        if partition_of(made.kafka_key().encode()) == partition:
            return made


async def recorded(service: Service, *probes: ProbeSent) -> int:
    count: int = await service.pool.fetchval(
        "SELECT count(*) FROM ops_probe_received WHERE probe_id = ANY($1::uuid[])",
        [p.probe_id for p in probes],
    )
    return count


async def letters_of(infrastructure: Infrastructure, service: Service) -> list[Any]:
    topic = service.settings.topic(dead_letter_topic_of(service.name))
    return list(await deadletters.read_all(infrastructure.kafka_bootstrap, topic))


async def at_least(infrastructure: Infrastructure, service: Service, count: int) -> list[Any]:
    async def enough() -> list[Any] | None:
        letters = await letters_of(infrastructure, service)
        return letters if len(letters) >= count else None

    return await eventually(enough, what=f"{count} dead letter(s)")


async def calendar_with_directory(
    start_service: StartService, producer: Any, **settings: Any
) -> Service:
    calendar = await start_service("calendar", **settings)
    for message in SETUP:
        await producer.send(message)

    async def ready() -> bool:
        people = await calendar.pool.fetchval("SELECT count(*) FROM practitioners")
        fees = await calendar.pool.fetchval("SELECT count(*) FROM fees")
        return bool(people == 2 and fees == 2)

    await eventually(ready, what="the calendar's directory")
    return calendar


def edited(message: Any, change: Any) -> bytes:
    """The JSON of a valid envelope of ``message`` after ``change(outline)`` edited it."""
    outline = json.loads(encode(Envelope.wrap(message, producer="kcat")).value)
    change(outline)
    return json.dumps(outline).encode()


# --- 1. a record just under the broker's limit ------------------------------------------------


async def test_a_record_near_the_broker_limit_is_kept_in_the_database_and_the_partition_flows(
    start_service: StartService,
    producer: Any,
    read_events: ReadEvents,
    infrastructure: Infrastructure,
) -> None:
    calendar = await calendar_with_directory(start_service, producer)
    events = await read_events(CALENDAR_EVENTS)
    topic = calendar.settings.topic(CALENDAR_COMMANDS)
    who = patient()
    huge = b'{"message_type": "BookAppointment", "filler": "' + b"x" * 1_048_200 + b'"}'
    await kcat(infrastructure, topic, huge, key=who)
    behind = booking(who, days_ahead(2))
    await kcat(infrastructure, topic, encode(Envelope.wrap(behind, producer="kcat")).value, key=who)

    await events.wait_for(
        AppointmentBooked, lambda e: e.payload.appointment.appointment_id == behind.appointment_id
    )
    (letter,) = await at_least(infrastructure, calendar, 1)
    assert json.loads(letter.value)["dead_letter_stored"] == letter.header("stored")
    assert "the limit is 262144" in letter.header("reason")
    stored = await calendar.pool.fetchrow(
        "SELECT * FROM dead_letter_store WHERE id = $1::uuid", letter.header("stored")
    )
    assert stored is not None
    assert stored["value"] == huge
    assert stored["kafka_key"] == who.encode()
    assert stored["published_at"] is not None
    assert int(letter.header("stored-bytes")) > 1_048_200


# --- 2. whatever reading a record raises, only that record is set aside -----------------------


async def test_records_that_make_reading_raise_are_dead_lettered_alone_and_the_batch_applies(
    start_service: StartService, topic_prefix: str, infrastructure: Infrastructure
) -> None:
    # Everything is on the topic before the calendar starts, so it arrives as one batch.
    good = [probe_on(0) for _ in range(3)]
    null_header = probe_on(0)
    kafka = AIOKafkaProducer(bootstrap_servers=infrastructure.kafka_bootstrap)
    await kafka.start()
    topic = topic_prefix + OPS_PROBES.name
    try:

        async def send(value: bytes, key: bytes, headers: list[tuple[str, Any]]) -> None:
            await kafka.send_and_wait(topic, value, key, partition=0, headers=headers)

        def record(message: ProbeSent) -> Any:
            return encode(Envelope.wrap(message, producer="aiokafka"))

        first = record(good[0])
        await send(first.value, first.key, first.headers)
        await send(b"[" * 100_000 + b"]" * 100_000, first.key, [])
        second = record(good[1])
        await send(second.value, second.key, second.headers)
        broken = record(null_header)
        headers = [(name, None if name == "message-id" else v) for name, v in broken.headers]
        await send(broken.value, broken.key, headers)
        third = record(good[2])
        await send(third.value, third.key, third.headers)
    finally:
        await kafka.stop()

    calendar = await start_service("calendar")
    await eventually(
        lambda: _is(recorded(calendar, *good), 3), what="the three good probes of the batch"
    )
    letters = await at_least(infrastructure, calendar, 2)
    reasons = sorted(letter.header("reason") for letter in letters)
    assert len(letters) == 2, reasons
    assert "nested too deeply" in reasons[0] or "nested too deeply" in reasons[1], reasons
    assert any("header message-id: has no value" in reason for reason in reasons), reasons
    assert await recorded(calendar, null_header) == 0
    assert _metric(calendar, "packline_consumer_batch_failures_total", "calendar.probes") == 0


async def _is(count: Any, wanted: int) -> bool:
    return bool(await count == wanted)


def _metric(service: Service, name: str, consumer: str) -> float:
    return service.metrics.registry.get_sample_value(name, {"consumer": consumer}) or 0.0


# --- 3. a header name that is not UTF-8 -------------------------------------------------------


async def test_a_header_name_that_is_not_utf8_is_dead_lettered_and_no_partition_stalls(
    start_service: StartService,
    producer: Any,
    read_events: ReadEvents,
    infrastructure: Infrastructure,
) -> None:
    calendar = await calendar_with_directory(start_service, producer)
    events = await read_events(CALENDAR_EVENTS)
    topic = calendar.settings.topic(CALENDAR_COMMANDS)
    who, others = patient(), [patient() for _ in range(4)]
    bad = booking(who, days_ahead(2))
    await kcat(
        infrastructure,
        topic,
        encode(Envelope.wrap(bad, producer="kcat")).value,
        key=who,
        headers=[(b"\xff\xfe", b"x")],
    )
    behind = [booking(p, days_ahead(3, hour=8 + n)) for n, p in enumerate([who, *others])]
    for message in behind:
        record = encode(Envelope.wrap(message, producer="kcat"))
        await kcat(infrastructure, topic, record.value, key=message.patient_id)

    for message in behind:
        await events.wait_for(AppointmentBooked, about(message.appointment_id))
    (letter,) = await at_least(infrastructure, calendar, 1)
    assert "header name b'\\xff\\xfe' is not UTF-8" in letter.header("reason")
    assert (deadletters.UNREADABLE_HEADER, b"\xff\xfe=x") in letter.headers
    assert _metric(calendar, "packline_consumer_fetch_failures_total", "calendar.commands") == 0
    assert (
        await calendar.pool.fetchval(
            "SELECT count(*) FROM appointments WHERE appointment_id = $1", bad.appointment_id
        )
        == 0
    )


# --- 4. values the database cannot hold -------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda o: o["payload"].update(booked_by="reception\u0000maria"), "booked_by"),
        (lambda o: o["payload"].update(starts_at="9999-12-31T23:30:00Z"), "starts_at"),
        (lambda o: o["payload"].update(starts_at="0001-01-01T00:30:00+05:00"), "starts_at"),
    ],
    ids=["NUL in text", "start near 9999-12-31", "UTC form before year 1"],
)
async def test_values_the_database_cannot_hold_are_refused_at_once_and_answered(
    start_service: StartService,
    producer: Any,
    read_events: ReadEvents,
    infrastructure: Infrastructure,
    change: Any,
    field: str,
) -> None:
    calendar = await calendar_with_directory(start_service, producer)
    events = await read_events(CALENDAR_EVENTS)
    topic = calendar.settings.topic(CALENDAR_COMMANDS)
    who = patient()
    bad = booking(who, days_ahead(2))
    await kcat(infrastructure, topic, edited(bad, change), key=who)
    behind = booking(who, days_ahead(3))
    await kcat(infrastructure, topic, encode(Envelope.wrap(behind, producer="kcat")).value, key=who)

    answer = await events.wait_for(
        BookingRefused, lambda e: e.payload.appointment_id == bad.appointment_id
    )
    assert answer.payload.code.value == "invalid"
    assert field in answer.payload.reason
    await events.wait_for(
        AppointmentBooked, lambda e: e.payload.appointment.appointment_id == behind.appointment_id
    )
    (letter,) = await at_least(infrastructure, calendar, 1)
    assert letter.header("attempts") == "1"
    assert field in letter.header("reason")


async def test_a_value_the_database_refuses_is_dead_lettered_at_the_first_attempt(
    start_service: StartService, infrastructure: Infrastructure
) -> None:
    """The contract allowed it, the table does not (here a short column): a data error is the
    message's fault, so it is not retried five times while its partition waits."""

    def add_narrow_consumer(service: Service) -> None:
        narrow = MessageConsumer(service, _consumer_spec(service, "narrow"))
        service.consumers.append(narrow)

        @narrow.handles(ProbeSent)
        async def keep(tx: Transaction, envelope: Envelope[ProbeSent]) -> None:
            await tx.conn.execute(
                "INSERT INTO narrow (sent_by) VALUES ($1)", envelope.payload.sent_by
            )

    calendar = await start_service("calendar", customize=add_narrow_consumer)
    await calendar.pool.execute("CREATE TABLE narrow (sent_by varchar(8) PRIMARY KEY)")
    too_long, fits = probe_on(1, "far-too-long-for-the-column"), probe_on(1, "short")
    kafka = AIOKafkaProducer(bootstrap_servers=infrastructure.kafka_bootstrap)
    await kafka.start()
    try:
        for message in (too_long, fits):
            record = encode(Envelope.wrap(message, producer="aiokafka"))
            await kafka.send_and_wait(
                calendar.settings.topic(OPS_PROBES),
                record.value,
                record.key,
                headers=record.headers,
            )
    finally:
        await kafka.stop()

    async def kept() -> bool:
        return bool(await calendar.pool.fetchval("SELECT count(*) FROM narrow") == 1)

    await eventually(kept, what="the probe that fits")
    (letter,) = [
        letter
        for letter in await at_least(infrastructure, calendar, 1)
        if letter.header("consumer") == "calendar.narrow"
    ]
    assert letter.header("attempts") == "1"
    assert "the database cannot hold a value" in letter.header("reason")
    failed = calendar.metrics.registry.get_sample_value(
        "packline_messages_failed_total", {"consumer": "calendar.narrow", "transient": "false"}
    )
    assert failed is not None and failed <= 2  # its batch's attempt, then its own: no retries


def _consumer_spec(service: Service, name: str) -> Any:
    from packline_contracts.topics import Consumer

    return Consumer(service.name, name, (OPS_PROBES,))


# --- 6. another client's partitioner ----------------------------------------------------------


async def test_a_record_on_the_wrong_partition_for_its_key_is_refused_naming_the_partitioner(
    start_service: StartService,
    producer: Any,
    read_events: ReadEvents,
    infrastructure: Infrastructure,
) -> None:
    calendar = await calendar_with_directory(start_service, producer)
    events = await read_events(CALENDAR_EVENTS)
    topic = calendar.settings.topic(CALENDAR_COMMANDS)
    # librdkafka's default (consistent_random) is CRC32 of the key; pick a patient it misplaces.
    who = next(
        p
        for p in (patient() for _ in range(100))
        if zlib.crc32(p.encode()) % TEST_PARTITIONS != partition_of(p.encode())
    )
    misplaced, placed = booking(who, days_ahead(2)), booking(who, days_ahead(3))
    await kcat(
        infrastructure,
        topic,
        encode(Envelope.wrap(misplaced, producer="kcat")).value,
        key=who,
        partitioner="consistent_random",
    )
    await kcat(infrastructure, topic, encode(Envelope.wrap(placed, producer="kcat")).value, key=who)

    await events.wait_for(
        AppointmentBooked, lambda e: e.payload.appointment.appointment_id == placed.appointment_id
    )
    (letter,) = await at_least(infrastructure, calendar, 1)
    reason = letter.header("reason")
    assert "partitioner=murmur2_random" in reason, reason
    assert letter.origin[1] == zlib.crc32(who.encode()) % TEST_PARTITIONS
    assert (
        await calendar.pool.fetchval(
            "SELECT count(*) FROM appointments WHERE appointment_id = $1", misplaced.appointment_id
        )
        == 0
    )


# --- 8. headers and clock that are checked, not trusted ---------------------------------------


async def test_headers_that_contradict_the_value_and_unknown_versions_are_refused(
    start_service: StartService,
    producer: Any,
    read_events: ReadEvents,
    infrastructure: Infrastructure,
) -> None:
    calendar = await calendar_with_directory(start_service, producer)
    events = await read_events(CALENDAR_EVENTS)
    topic = calendar.settings.topic(CALENDAR_COMMANDS)
    who = patient()
    cases: list[tuple[bytes, dict[str, str], str]] = [
        (
            edited(booking(who, days_ahead(2)), lambda o: None),
            {"schema-version": "2"},
            "schema-version",
        ),
        (edited(booking(who, days_ahead(2)), lambda o: None), {"producer": "matcher"}, "producer"),
        (
            edited(booking(who, days_ahead(2)), lambda o: None),
            {"causation-id": str(uuid4())},
            "causation-id",
        ),
        (
            edited(booking(who, days_ahead(2)), lambda o: None),
            {"content-type": "text/plain"},
            "content-type",
        ),
        (
            edited(booking(who, days_ahead(2)), lambda o: o.update(schema_version=99)),
            {},
            "schema_version: 99 is unknown",
        ),
    ]
    for value, headers, _ in cases:
        await kcat(infrastructure, topic, value, key=who, headers=headers)
    backdated = booking(who, datetime(2020, 3, 2, 10, tzinfo=UTC))
    await kcat(
        infrastructure,
        topic,
        edited(backdated, lambda o: o.update(occurred_at="2020-03-01T09:00:00Z")),
        key=who,
    )
    behind = booking(who, days_ahead(4))
    await kcat(infrastructure, topic, encode(Envelope.wrap(behind, producer="kcat")).value, key=who)

    await events.wait_for(
        AppointmentBooked, lambda e: e.payload.appointment.appointment_id == behind.appointment_id
    )
    refused = await events.wait_for(
        BookingRefused, lambda e: e.payload.appointment_id == backdated.appointment_id
    )
    assert refused.payload.code.value == "in_the_past"
    letters = await at_least(infrastructure, calendar, len(cases))
    reasons = [letter.header("reason") for letter in letters]
    assert len(letters) == len(cases), reasons
    for (_, _, named), reason in zip(cases, reasons, strict=True):
        assert named in reason, (named, reason)


# --- 9. a stall shows; a failing dead-letter topic does not hold the partition ----------------


async def test_a_partition_that_cannot_make_progress_shows_in_lag_and_readiness(
    start_service: StartService, infrastructure: Infrastructure
) -> None:
    blocked = {"on": True}

    def add_stuck_consumer(service: Service) -> None:
        stuck = MessageConsumer(service, _consumer_spec(service, "stuck"))
        service.consumers.append(stuck)

        @stuck.handles(ProbeSent)
        async def apply(tx: Transaction, envelope: Envelope[ProbeSent]) -> None:
            if blocked["on"]:
                raise ConnectionRefusedError("the downstream is away")  # transient: retried
            await tx.conn.execute(
                "INSERT INTO stuck (probe_id) VALUES ($1)", envelope.payload.probe_id
            )

    calendar = await start_service(
        "calendar",
        customize=add_stuck_consumer,
        consumer_stall_seconds=2,
        consumer_lag_seconds=0.3,
    )
    await calendar.pool.execute("CREATE TABLE stuck (probe_id uuid PRIMARY KEY)")
    stuck_probe = probe_on(2)
    record = encode(Envelope.wrap(stuck_probe, producer="test"))
    await calendar.producer.send_and_wait(
        calendar.settings.topic(OPS_PROBES), record.value, record.key, headers=record.headers
    )
    lag_labels = {
        "consumer": "calendar.stuck",
        "topic": calendar.settings.topic(OPS_PROBES),
        "partition": "2",
    }

    async def not_ready() -> str | None:
        checks = await calendar.ready()
        return checks["consumers"] if checks["consumers"] != "ok" else None

    why = await eventually(not_ready, what="readiness to report the stalled partition")
    assert "calendar.stuck" in why and "/2 (1 waiting)" in why, why
    assert calendar.metrics.registry.get_sample_value("packline_consumer_lag", lag_labels) == 1

    async def gauge_shows_it() -> bool:
        return _metric(calendar, "packline_consumer_stalled_partitions", "calendar.stuck") == 1

    await eventually(gauge_shows_it, what="the stalled-partitions gauge")

    blocked["on"] = False

    async def ready_again() -> bool:
        checks = await calendar.ready()
        lag = calendar.metrics.registry.get_sample_value("packline_consumer_lag", lag_labels)
        return checks["consumers"] == "ok" and lag == 0

    await eventually(ready_again, within=60, what="the stall to clear once the probe applies")
    assert await calendar.pool.fetchval("SELECT count(*) FROM stuck") == 1


async def test_a_dead_letter_topic_that_refuses_writes_does_not_hold_the_partition(
    start_service: StartService, infrastructure: Infrastructure
) -> None:
    calendar = await start_service(
        "calendar", dead_letter_publish_seconds=0.5, dead_letter_sweep_seconds=0.5
    )
    dead_topic = calendar.settings.topic(dead_letter_topic_of("calendar"))
    admin = AIOKafkaAdminClient(bootstrap_servers=infrastructure.kafka_bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([dead_topic])

        async def gone() -> bool:  # deleting is asynchronous: a publish before it is done lands
            return dead_topic not in await admin.list_topics()

        await eventually(gone, what="the dead-letter topic deleted")
        poison, good = b"not an envelope", probe_on(0)
        await calendar.producer.send_and_wait(
            calendar.settings.topic(OPS_PROBES), poison, b"junk", partition=0
        )
        record = encode(Envelope.wrap(good, producer="test"))
        await calendar.producer.send_and_wait(
            calendar.settings.topic(OPS_PROBES), record.value, record.key, headers=record.headers
        )
        await eventually(
            lambda: _is(recorded(calendar, good), 1), what="the probe behind the poison"
        )

        async def parked() -> Any:
            return await calendar.pool.fetchrow(
                "SELECT * FROM dead_letter_store WHERE published_at IS NULL"
            )

        row = await eventually(parked, what="the poison kept in the database")
        assert row["value"] == poison
        assert (
            _metric(calendar, "packline_dead_letter_publish_failures_total", "calendar.probes") >= 1
        )

        async def recreated() -> bool:
            try:
                await admin.create_topics([NewTopic(dead_topic, TEST_PARTITIONS, 1)])
            except Exception as error:  # still being deleted: try again
                return "TopicAlreadyExists" in type(error).__name__
            return True

        await eventually(recreated, what="the dead-letter topic back")
    finally:
        await admin.close()

    # The stored copy's reference arrives with the sweep. A publish attempt that was still in
    # flight when the topic came back may land too (dead letters are at least once): the test
    # waits for the stored one, whichever comes first.
    async def stored_letter() -> Any:
        letters = await letters_of(infrastructure, calendar)
        # A letter that landed whole has no "stored" header: stored_id is None for it.
        return next((x for x in letters if x.stored_id == str(row["id"])), None)

    letter = await eventually(stored_letter, what="the stored dead letter's reference")
    assert "not JSON" in letter.header("reason")

    async def none_waiting() -> bool:
        gauge = calendar.metrics.registry.get_sample_value("packline_dead_letters_unpublished")
        return gauge == 0

    await eventually(none_waiting, what="the unpublished gauge back to 0")


async def test_an_invoice_command_invoicing_cannot_apply_is_answered_naming_the_field(
    start_service: StartService, read_events: ReadEvents, infrastructure: Infrastructure
) -> None:
    invoicing = await start_service("invoicing")
    events = await read_events(INVOICING_EVENTS)
    who = patient()
    sale = IssuePackageInvoice(
        patient_id=who,
        invoice_id=uuid4(),
        package_id="massage-5",
        channel=PurchaseChannel.STAFF,
        issued_by="reception:maria",
        issued_at=datetime.now(UTC),
    )
    await kcat(
        infrastructure,
        invoicing.settings.topic(INVOICING_COMMANDS),
        edited(sale, lambda o: o["payload"].update(issued_by="reception\u0000maria")),
        key=who,
    )

    answer = await events.wait_for(
        InvoiceCommandRefused, lambda e: e.payload.invoice_id == sale.invoice_id
    )
    assert answer.payload.command_type == "IssuePackageInvoice"
    assert "issued_by" in answer.payload.reason
    (letter,) = await at_least(infrastructure, invoicing, 1)
    assert "issued_by" in letter.header("reason")


async def test_a_fetch_that_raises_skips_nothing_on_any_partition(
    start_service: StartService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever makes aiokafka's fetch raise (here: a record set that cannot be read, once),
    the records it had already taken from other partitions are read again, not skipped."""
    calendar = await start_service("calendar")
    unread = records.TolerantMemoryRecords.next_batch
    left = {"failures": 1}

    def next_batch(self: records.TolerantMemoryRecords) -> Any:
        if left["failures"]:
            left["failures"] -= 1
            raise ValueError("a record set nobody expected")
        return unread(self)

    monkeypatch.setattr(records.TolerantMemoryRecords, "next_batch", next_batch)
    probes = [probe_on(partition) for partition in range(TEST_PARTITIONS) for _ in range(5)]
    for message in probes:
        record = encode(Envelope.wrap(message, producer="test"))
        await calendar.producer.send(  # not awaited one by one: one fetch, several partitions
            calendar.settings.topic(OPS_PROBES), record.value, record.key, headers=record.headers
        )
    await calendar.producer.flush()

    await eventually(
        lambda: _is(recorded(calendar, *probes), len(probes)), what="every probe, none skipped"
    )
    assert left["failures"] == 0
    assert _metric(calendar, "packline_consumer_fetch_failures_total", "calendar.probes") == 1
