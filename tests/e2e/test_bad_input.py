"""Bad input from a plain, non-Python Kafka client (kcat): every kind lands on the right
dead-letter topic with its reason, and the partition keeps flowing behind it."""

from __future__ import annotations

import json
from typing import Any
from uuid import uuid4

import pytest
from packline_contracts.appointments import (
    AppointmentBooked,
    AppointmentChangeRefused,
    BookingRefused,
)
from packline_contracts.envelope import MAX_MESSAGE_BYTES, Envelope, encode
from packline_contracts.topics import CALENDAR_COMMANDS, CALENDAR_EVENTS, dead_letter_topic
from packline_core import deadletters
from packline_core.service import Service

from tests.clinic import SETUP, booking, days_ahead, patient
from tests.conftest import Infrastructure, ReadEvents, StartService
from tests.helpers import eventually
from tests.kcat import kcat

pytestmark = pytest.mark.infra


async def test_every_kind_of_bad_input_is_dead_lettered_with_its_reason(
    start_service: StartService,
    producer: Any,
    read_events: ReadEvents,
    infrastructure: Infrastructure,
) -> None:
    calendar: Service = await start_service("calendar")
    for message in SETUP:
        await producer.send(message)

    async def ready() -> bool:
        fees = await calendar.pool.fetchval("SELECT count(*) FROM fees")
        people = await calendar.pool.fetchval("SELECT count(*) FROM practitioners")
        return bool(fees == 2 and people == 2)

    await eventually(ready, what="the calendar's fees")
    events = await read_events(CALENDAR_EVENTS)
    topic = calendar.settings.topic(CALENDAR_COMMANDS)
    who = patient()
    good = encode(Envelope.wrap(booking(who, days_ahead(2)), producer="kcat"))
    wrong_header = encode(Envelope.wrap(booking(who, days_ahead(3)), producer="kcat"))
    big = json.loads(good.value)
    big["payload"]["booked_by"] = "x" * (MAX_MESSAGE_BYTES + 10)
    bad = {
        "not JSON": (b'{"message_type": "BookAppointment", ', who),
        "wrong shape": (b'{"hello": "world"}', who),
        "unknown type": (b'{"message_type": "BookTaxi", "payload": {}}', who),
        "oversized": (json.dumps(big).encode(), who),
        "missing key": (good.value, None),
        "wrong key": (good.value, "someone-else"),
    }
    expected = {
        "not JSON": "value: not JSON",
        "wrong shape": "message_type: missing or not a string",
        "unknown type": "unknown message type 'BookTaxi'",
        "oversized": f"the limit is {MAX_MESSAGE_BYTES}",
        "missing key": "key: missing; this message must be keyed by",
        "wrong key": "must be keyed by",
        "wrong header": "header message-type",
    }
    for value, key in bad.values():
        await kcat(infrastructure, topic, value, key=key)
    await kcat(
        infrastructure,
        topic,
        wrong_header.value,
        key=who,
        headers={"message-type": "CancelAppointment"},
    )
    # Behind all of them on the same partition: a good booking, and one for an unknown appointment.
    marker = booking(who, days_ahead(4))
    marker_record = encode(Envelope.wrap(marker, producer="kcat"))
    await kcat(infrastructure, topic, marker_record.value, key=who)
    ghost = json.loads(encode(Envelope.wrap(booking(who, days_ahead(5)), producer="kcat")).value)
    ghost.update(message_type="CancelAppointment", message_id=str(uuid4()))
    ghost["payload"] = {
        "patient_id": who,
        "appointment_id": str(uuid4()),
        "cancelled_by": "kcat",
        "cancelled_at": days_ahead(0).isoformat(),
    }
    await kcat(infrastructure, topic, json.dumps(ghost).encode(), key=who)

    await events.wait_for(
        AppointmentBooked, lambda e: e.payload.appointment.appointment_id == marker.appointment_id
    )
    refused = await events.wait_for(
        AppointmentChangeRefused, lambda e: e.payload.command_type == "CancelAppointment"
    )
    assert refused.payload.code.value == "unknown_appointment"

    dead_topic = calendar.settings.topic(dead_letter_topic("calendar"))

    async def all_dead() -> list[Any] | None:
        letters = await deadletters.read_all(infrastructure.kafka_bootstrap, dead_topic)
        return letters if len(letters) >= len(expected) else None

    letters = await eventually(all_dead, what="every bad record on the dead-letter topic")
    reasons = [letter.header("reason") for letter in letters]
    for kind, text in expected.items():
        assert sum(text in reason for reason in reasons) >= 1, (kind, reasons)
    assert len(letters) == len(expected)
    assert {letter.header("topic") for letter in letters} == {topic}
    counted = calendar.metrics.registry.get_sample_value(
        "packline_messages_dead_lettered_total", {"consumer": "calendar.commands"}
    )
    assert counted == len(expected)
    # A booking refused at the edge still answers its sender when it names patient and appointment:
    appointment_id = json.loads(good.value)["payload"]["appointment_id"]
    answered = await events.wait_for(
        BookingRefused, lambda e: str(e.payload.appointment_id) == appointment_id
    )
    assert answered.payload.code.value == "invalid"
