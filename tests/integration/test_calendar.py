"""The calendar service through the real broker and database (issue: calendar)."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest
from packline_calendar import appointments
from packline_contracts.appointments import (
    AppointmentBooked,
    AppointmentCancelled,
    AppointmentChanged,
    AppointmentChangeRefused,
    AppointmentDeleted,
    AppointmentEvent,
    AppointmentRescheduled,
    Attendance,
    AttendanceRecorded,
    BookingRefused,
    CancelAppointment,
    ChangeAppointment,
    DeleteAppointment,
    RecordAttendance,
    RefusalCode,
    RescheduleAppointment,
)
from packline_contracts.envelope import Envelope, Message
from packline_contracts.invoices import LineForfeited, LineLinked, LineStatus, LineUnlinked
from packline_contracts.topics import CALENDAR_COMMANDS, CALENDAR_EVENTS
from packline_core.service import Service

from tests.clinic import DR_A, DR_B, MASSAGE_30, booking, days_ahead, line_event, patient
from tests.conftest import ReadEvents, StartService
from tests.helpers import about, read_until
from tests.system import calendar_alone, http

pytestmark = pytest.mark.infra


@pytest.fixture
async def calendar(start_service: StartService, producer: Any) -> Service:
    return await calendar_alone(start_service, producer)


async def send_twice(producer: Any, message: Message) -> Envelope[Any]:
    """Deliver a command twice, with the same message id, as a retrying producer would."""
    sent = await producer.send(message)
    await producer.send(message, message_id=sent.message_id)
    return sent


async def test_every_command_is_answered_once_in_order_even_when_delivered_twice(
    calendar: Service, producer: Any, read_events: ReadEvents
) -> None:
    events = await read_events(CALENDAR_EVENTS)
    who = patient()
    first = booking(who, days_ahead(3))
    second = booking(who, days_ahead(4))
    third = booking(who, days_ahead(5))
    ref = {"patient_id": who, "appointment_id": first.appointment_id}
    commands: list[Message] = [
        first,
        RescheduleAppointment(**ref, starts_at=days_ahead(3, hour=14), requested_by="maria"),
        ChangeAppointment(**ref, practitioner_id=DR_B, fee_ids=[MASSAGE_30], requested_by="maria"),
        RecordAttendance(**ref, attendance=Attendance.ARRIVED, recorded_by="dr-baker"),
        RecordAttendance(**ref, attendance=Attendance.COMPLETED, recorded_by="dr-baker"),
        second,
        CancelAppointment(
            patient_id=who,
            appointment_id=second.appointment_id,
            cancelled_by="patient",
            cancelled_at=days_ahead(0),
        ),
        third,
        DeleteAppointment(patient_id=who, appointment_id=third.appointment_id, deleted_by="maria"),
    ]
    for command in commands:
        await send_twice(producer, command)

    await events.wait_for(AppointmentDeleted, lambda e: e.patient_id == who)
    mine = [e.payload for e in events.received if e.patient_id == who]
    assert [type(event) for event in mine] == [
        AppointmentBooked,
        AppointmentRescheduled,
        AppointmentChanged,
        AttendanceRecorded,
        AttendanceRecorded,
        AppointmentBooked,
        AppointmentCancelled,
        AppointmentBooked,
        AppointmentDeleted,
    ]
    history = [
        e.appointment
        for e in mine
        if isinstance(e, AppointmentEvent) and e.appointment.appointment_id == first.appointment_id
    ]
    assert [a.version for a in history] == [1, 2, 3, 4, 5]
    assert [a.status.value for a in history] == [
        "booked",
        "booked",
        "booked",
        "arrived",
        "completed",
    ]
    assert history[1].starts_at == days_ahead(3, hour=14)
    assert (history[2].practitioner_id, history[2].fee_ids) == (DR_B, [MASSAGE_30])
    assert history[0].duration_minutes == 60  # the fee's duration when none is given (R3)
    changed = next(e for e in mine if isinstance(e, AppointmentChanged))
    assert changed.changed == ["fee_ids", "practitioner_id"]


async def test_two_bookings_racing_for_one_slot_exactly_one_wins_both_are_answered(
    calendar: Service, producer: Any, read_events: ReadEvents
) -> None:
    events = await read_events(CALENDAR_EVENTS)
    when = days_ahead(6)
    one, other = booking(patient(), when), booking(patient(), when + timedelta(minutes=30))
    await asyncio.gather(producer.send(one), producer.send(other))

    answers = []
    for command in (one, other):
        answers.append(
            await events.wait_for_any(
                AppointmentBooked, BookingRefused, where=about(command.appointment_id)
            )
        )
    kinds = sorted(type(answer.payload).__name__ for answer in answers)
    assert kinds == ["AppointmentBooked", "BookingRefused"]
    booked = next(a.payload for a in answers if isinstance(a.payload, AppointmentBooked))
    refused = next(a.payload for a in answers if isinstance(a.payload, BookingRefused))
    assert refused.code == RefusalCode.SLOT_TAKEN
    assert refused.clashing_appointment_id == booked.appointment.appointment_id
    assert refused.reason.startswith("Dr Adams is already booked from")
    assert (
        await calendar.pool.fetchval(
            "SELECT count(*) FROM appointments WHERE practitioner_id = $1 AND starts_at >= $2",
            DR_A,
            when - timedelta(hours=1),
        )
        == 1
    )


async def test_the_database_alone_refuses_a_double_booking_under_concurrency(
    calendar: Service,
) -> None:
    when = days_ahead(7)
    contenders = [booking(patient(), when) for _ in range(8)]

    async def insert(command: Any) -> bool:
        async with calendar.pool.acquire() as conn, conn.transaction():
            appointment = await _as_appointment(command)
            try:
                return await appointments.insert_unless_taken(conn, appointment, "test")
            except asyncpg.ExclusionViolationError:
                return False
            except asyncpg.DeadlockDetectedError:
                # Racing inserts under an exclusion constraint can deadlock; PostgreSQL aborts
                # one of them (the service retries such a transaction, then sees the clash).
                return False

    results = await asyncio.gather(*(insert(command) for command in contenders))
    assert sorted(results) == [False] * 7 + [True]


async def _as_appointment(command: Any) -> Any:
    from packline_contracts.types import Appointment, AppointmentStatus

    return Appointment(
        appointment_id=command.appointment_id,
        version=1,
        patient_id=command.patient_id,
        practitioner_id=command.practitioner_id,
        location_id=command.location_id,
        starts_at=command.starts_at,
        duration_minutes=60,
        fee_ids=command.fee_ids,
        status=AppointmentStatus.BOOKED,
        source=command.source,
    )


async def test_bad_commands_are_refused_with_a_reason(
    calendar: Service, producer: Any, read_events: ReadEvents
) -> None:
    events = await read_events(CALENDAR_EVENTS)
    who = patient()
    cases = {
        RefusalCode.IN_THE_PAST: booking(who, days_ahead(-1)),
        RefusalCode.UNKNOWN_FEE: booking(who, days_ahead(8), fees=["no-such-fee"]),
        RefusalCode.UNKNOWN_PRACTITIONER: booking(who, days_ahead(8), practitioner="dr-nobody"),
        RefusalCode.UNKNOWN_LOCATION: booking(who, days_ahead(8), location="atlantis"),
    }
    for command in cases.values():
        await producer.send(command)
    for code, command in cases.items():
        refused = await events.wait_for(BookingRefused, about(command.appointment_id))
        assert refused.payload.code == code, refused.payload.reason
    zero = booking(who, days_ahead(8)).model_dump(mode="json")
    zero["duration_minutes"] = 0  # invalid at the edge: dead-lettered, and still answered
    envelope = Envelope.wrap(booking(who, days_ahead(8)), producer="test").model_dump(mode="json")
    envelope["payload"] = zero
    await producer._producer.send_and_wait(
        producer.topic_prefix + CALENDAR_COMMANDS.name, json.dumps(envelope).encode(), who.encode()
    )
    invalid = await events.wait_for(
        BookingRefused, lambda e: str(e.payload.appointment_id) == zero["appointment_id"]
    )
    assert invalid.payload.code == RefusalCode.INVALID
    assert "payload.duration_minutes: Input should be greater than 0" in invalid.payload.reason
    ghost = uuid4()
    await producer.send(
        RescheduleAppointment(
            patient_id=who, appointment_id=ghost, starts_at=days_ahead(9), requested_by="maria"
        )
    )
    refused_change = await events.wait_for(
        AppointmentChangeRefused, lambda e: e.payload.appointment_id == ghost
    )
    assert refused_change.payload.code == RefusalCode.UNKNOWN_APPOINTMENT
    assert refused_change.payload.command_type == "RescheduleAppointment"
    assert (
        await calendar.pool.fetchval("SELECT count(*) FROM appointments WHERE patient_id = $1", who)
        == 0
    )


async def test_check_availability_answers_free_or_taken_with_the_clash(
    calendar: Service, producer: Any, read_events: ReadEvents
) -> None:
    events = await read_events(CALENDAR_EVENTS)
    taken = booking(patient(), days_ahead(10))
    await producer.send(taken)
    await events.wait_for(
        AppointmentBooked, lambda e: e.payload.appointment.appointment_id == taken.appointment_id
    )
    async with http(calendar) as client:
        busy = await client.get(
            "/availability",
            params={
                "practitioner_id": DR_A,
                "starts_at": (days_ahead(10) + timedelta(minutes=30)).isoformat(),
                "duration_minutes": 60,
            },
        )
        free = await client.get(
            "/availability",
            params={
                "practitioner_id": DR_A,
                "starts_at": days_ahead(10, hour=12).isoformat(),
                "duration_minutes": 60,
            },
        )
        naive = await client.get(
            "/availability",
            params={
                "practitioner_id": DR_A,
                "starts_at": "2030-01-01T10:00:00",
                "duration_minutes": 60,
            },
        )
    assert busy.json()["available"] is False
    assert busy.json()["clash"]["appointment_id"] == str(taken.appointment_id)
    assert free.json()["available"] is True
    assert naive.status_code == 422


async def test_package_note_follows_the_newest_link_event_whatever_the_order(
    calendar: Service, producer: Any, read_events: ReadEvents
) -> None:
    events = await read_events(CALENDAR_EVENTS)
    who = patient()
    first, second = booking(who, days_ahead(11)), booking(who, days_ahead(12))
    for command in (first, second):
        await producer.send(command)
        await events.wait_for(AppointmentBooked, about(command.appointment_id))

    async def panel(appointment_id: UUID) -> dict[str, Any]:
        async with http(calendar) as client:
            answer = await client.get(f"/appointments/{appointment_id}")
        assert answer.status_code == 200
        return dict(answer.json())

    async def panel_until(appointment_id: UUID, holds: Any, what: str) -> dict[str, Any]:
        """The panel once ``holds`` is true of it: the calendar applies line events in its own
        time after they are on invoicing's topic."""
        return await read_until(lambda: panel(appointment_id), holds, what=what)

    linked = line_event(LineLinked, who, first.appointment_id, link_version=1, session=2)
    await producer.send(linked)
    shown = (await panel_until(first.appointment_id, lambda p: p["package"], "the note"))["package"]
    assert shown["text"] == "5 x 60-min massage: session 2 of 5, 4 left"
    assert shown["invoice_id"] == str(linked.invoice_id)

    await producer.send(line_event(LineUnlinked, who, first.appointment_id, link_version=2))
    await panel_until(first.appointment_id, lambda p: p["package"] is None, "the note to go")
    marker = line_event(LineLinked, who, second.appointment_id, link_version=5)
    await producer.send(linked)  # the old link again, as a replay would send it
    await producer.send(marker)
    await panel_until(second.appointment_id, lambda p: p["package"], "the marker's note")
    assert (await panel(first.appointment_id))["package"] is None

    # The other order: the newer unlink arrives before the older link.
    third = booking(who, days_ahead(13))
    await producer.send(third)
    await events.wait_for(
        AppointmentBooked, lambda e: e.payload.appointment.appointment_id == third.appointment_id
    )
    await producer.send(line_event(LineUnlinked, who, third.appointment_id, link_version=4))
    await producer.send(line_event(LineLinked, who, third.appointment_id, link_version=3))
    marker = line_event(LineLinked, who, second.appointment_id, link_version=6, session=3)
    await producer.send(marker)
    await panel_until(second.appointment_id, lambda p: _session(p, 3), "the second marker")
    assert (await panel(third.appointment_id))["package"] is None


def _session(panel: dict[str, Any], number: int) -> bool:
    package = panel["package"]
    return bool(package and package["session_number"] == number)


async def test_a_forfeited_session_keeps_its_number_on_the_panel(
    calendar: Service, producer: Any, read_events: ReadEvents
) -> None:
    """LineForfeited carries no session number: the panel (and every list holding the
    appointment) shows the number it was linked as, instead of failing on its absence."""
    events = await read_events(CALENDAR_EVENTS)
    who = patient()
    late = booking(who, days_ahead(11))
    await producer.send(late)
    await events.wait_for(AppointmentBooked, about(late.appointment_id))
    linked = line_event(LineLinked, who, late.appointment_id, link_version=1, session=2)
    assert isinstance(linked, LineLinked)
    forfeited = LineForfeited(
        **linked.model_dump(
            include={"patient_id", "invoice_id", "package_id", "package_name", "balance"}
        ),
        line=linked.line.model_copy(update={"status": LineStatus.FORFEITED}),
        appointment_id=late.appointment_id,
        link_version=2,
        reason="cancelled 3 hours before: under 24 hours",
    )
    await producer.send(linked)
    await producer.send(forfeited)

    async def panel() -> dict[str, Any]:
        async with http(calendar) as client:
            answer = await client.get(f"/appointments/{late.appointment_id}")
            listed = await client.get(f"/patients/{who}/appointments")
        assert answer.status_code == 200, answer.text
        assert listed.status_code == 200, listed.text
        return dict(answer.json())

    shown = await read_until(
        panel, lambda p: p["package"] and p["package"]["state"] == "forfeited", what="forfeit"
    )
    assert shown["package"]["session_number"] == 2
    assert shown["package"]["text"] == (
        "5 x 60-min massage: session 2 forfeited (cancelled 3 hours before: under 24 hours)"
    )
