"""The matcher's batch fold (packline_matcher.fold), without Kafka or a database: folding a batch
at once says what folding it in pieces says, a replay says nothing, a session is never asked for
twice, and an appointment that is not active never gets a link."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from uuid import UUID, uuid5

from hypothesis import given, settings
from hypothesis import strategies as st
from packline_contracts.appointments import (
    AppointmentBooked,
    AppointmentCancelled,
    AppointmentEvent,
    AppointmentRescheduled,
)
from packline_contracts.invoices import LineLinked, LinkAppointment, UnlinkAppointment
from packline_contracts.types import Appointment as Snapshot
from packline_contracts.types import AppointmentStatus, BookingSource
from packline_matcher import fold, readmodel
from packline_matcher.decision import Line, condensed, in_order

from tests.clinic import line_event
from tests.decisions import START, line

PATIENT = "p-1"
SPACE = UUID("00000000-0000-0000-0000-00000000f01d")


def appointment_id(n: int) -> UUID:
    return uuid5(SPACE, f"appointment-{n}")


def snapshot(n: int, version: int, *, fee: str, day: int, status: AppointmentStatus) -> Snapshot:
    return Snapshot(
        appointment_id=appointment_id(n),
        version=version,
        patient_id=PATIENT,
        practitioner_id="dr-a",
        location_id="north",
        starts_at=START + timedelta(days=day),
        duration_minutes=60,
        fee_ids=[fee],
        status=status,
        source=BookingSource.STAFF,
    )


@st.composite
def events(draw: st.DrawFn) -> list[fold.Input]:
    """A few appointments' lives: booked, moved, cancelled, in versions that may repeat or come
    late, mixed with decisions asked again."""
    messages: list[fold.Input] = []
    for _ in range(draw(st.integers(1, 12))):
        n = draw(st.integers(0, 3))
        version = draw(st.integers(1, 4))
        fee = draw(st.sampled_from(["massage", "physio"]))
        day = draw(st.integers(-20, 90))
        kind = draw(st.sampled_from(["booked", "moved", "cancelled", "reconsider"]))
        if kind == "reconsider":
            messages.append(fold.Reconsider(appointment_id(n), draw(st.booleans())))
            continue
        status = AppointmentStatus.CANCELLED if kind == "cancelled" else AppointmentStatus.BOOKED
        appointment = snapshot(n, version, fee=fee, day=day, status=status)
        event: AppointmentEvent
        if kind == "booked":
            event = AppointmentBooked(patient_id=PATIENT, appointment=appointment)
        elif kind == "moved":
            event = AppointmentRescheduled(
                patient_id=PATIENT, appointment=appointment, previous_starts_at=START
            )
        else:
            event = AppointmentCancelled(
                patient_id=PATIENT,
                appointment=appointment,
                cancelled_by="reception",
                cancelled_at=START - timedelta(days=2),
            )
        messages.append(event)
    return messages


@st.composite
def packages(draw: st.DrawFn) -> dict[UUID, Line]:
    lines = [
        line(
            number,
            line_id=uuid5(SPACE, f"line-{number}"),
            fee_id=draw(st.sampled_from(["massage", "physio"])),
            valid_until=START.date() + timedelta(days=draw(st.integers(0, 60))),
        )
        for number in range(1, draw(st.integers(0, 4)) + 1)
    ]
    return {x.line_id: x for x in lines}


def state(lines: dict[UUID, Line]) -> fold.State:
    start = fold.State()
    for held in lines.values():
        start.hold(PATIENT, held)
    return start


def published(said: list[list[fold.Publish]]) -> list[fold.Publish]:
    return [p for out in said for p in out]


@settings(max_examples=300, deadline=None)
@given(packages(), events(), st.integers(0, 12))
def test_a_batch_says_what_its_pieces_say(
    lines: dict[UUID, Line], messages: list[fold.Input], cut: int
) -> None:
    whole_state, whole = fold.fold(state(lines), messages)
    first_state, first = fold.fold(state(lines), messages[:cut])
    second_state, second = fold.fold(first_state, messages[cut:])
    assert published(whole) == published(first) + published(second)
    assert whole_state.lines == second_state.lines
    assert whole_state.appointments == second_state.appointments
    assert whole_state.explanations == second_state.explanations


@settings(max_examples=300, deadline=None)
@given(packages(), events())
def test_replayed_appointment_events_say_nothing(
    lines: dict[UUID, Line], messages: list[fold.Input]
) -> None:
    after, _ = fold.fold(state(lines), messages)
    replay = [m for m in messages if isinstance(m, AppointmentEvent)]
    again, said = fold.fold(after, replay)
    assert published(said) == []
    assert again.lines == after.lines


@settings(max_examples=300, deadline=None)
@given(packages(), events())
def test_a_session_is_asked_for_one_appointment_and_never_for_an_inactive_one(
    lines: dict[UUID, Line], messages: list[fold.Input]
) -> None:
    after, said = fold.fold(state(lines), messages)
    asked: dict[UUID, UUID] = {}
    for publish in published(said):
        message = publish.message
        if isinstance(message, UnlinkAppointment):
            asked.pop(message.line_id, None)  # released: it may be asked for again
        if isinstance(message, LinkAppointment):
            holder = asked.setdefault(message.line_id, message.appointment.appointment_id)
            assert holder == message.appointment.appointment_id, "one session, two appointments"
            stored = after.appointments[message.appointment.appointment_id]
            assert message.appointment.status == AppointmentStatus.BOOKED
            assert message.appointment.version <= stored.appointment.version
    for held in after.patient_lines(PATIENT):
        if held.status == "requested":
            assert held.appointment_id is not None


@settings(max_examples=200, deadline=None)
@given(packages(), events())
def test_a_link_answered_is_recorded_and_its_explanation_forgotten(
    lines: dict[UUID, Line], messages: list[fold.Input]
) -> None:
    after, said = fold.fold(state(lines), messages)
    links = [p.message for p in published(said) if isinstance(p.message, LinkAppointment)]
    if not links:
        return
    link = links[-1]
    if (
        after.appointments[link.appointment.appointment_id].appointment.version
        != link.appointment.version
    ):
        return  # the appointment moved on since: the answer is decided again (tested elsewhere)
    answer = line_event(LineLinked, PATIENT, link.appointment.appointment_id, 1)
    assert isinstance(answer, LineLinked)
    answer = answer.model_copy(
        update={
            "line": answer.line.model_copy(update={"line_id": link.line_id}),
            "appointment_version": link.appointment.version,
        }
    )
    linked, _ = fold.fold(after, [answer])
    held = linked.lines[link.line_id]
    assert (held.status, held.appointment_id) == ("linked", link.appointment.appointment_id)
    assert linked.explanations[link.appointment.appointment_id] is None


def test_the_state_the_fold_started_from_is_left_as_it_was() -> None:
    """The handler folds twice when an explanation needs names: the first fold must not have
    changed what the second starts from."""
    only = line(line_id=uuid5(SPACE, "line-1"))
    start = state({only.line_id: only})
    booked = AppointmentBooked(
        patient_id=PATIENT,
        appointment=snapshot(0, 1, fee="massage", day=0, status=AppointmentStatus.BOOKED),
    )
    after, said = fold.fold(start, [booked])
    assert start.lines[only.line_id].status == "open"
    assert start.appointments == {} and start.changed_lines == {}
    assert after.lines[only.line_id] == replace(
        only, status="requested", appointment_id=appointment_id(0)
    )
    assert [type(p.message) for p in published(said)] == [LinkAppointment]


@st.composite
def histories(draw: st.DrawFn) -> list[Line]:
    """A patient's lines after some life: a few invoices of several sessions, some with
    restrictions or a shorter validity, open, booked (some by the batch's appointments), used,
    expired or forfeited."""
    lines: list[Line] = []
    for invoice in range(draw(st.integers(1, 3))):
        paid = draw(st.booleans())
        for number in range(1, draw(st.integers(1, 9)) + 1):
            status = draw(
                st.sampled_from(["open"] * 3 + ["linked", "used", "expired", "forfeited"])
            )
            held = None
            if status == "linked":
                held = draw(
                    st.sampled_from([uuid5(SPACE, "elsewhere"), *map(appointment_id, (0, 1))])
                )
            lines.append(
                line(
                    number,
                    line_id=uuid5(SPACE, f"line-{invoice}-{number}"),
                    invoice_id=uuid5(SPACE, f"invoice-{invoice}"),
                    invoice_issued_at=START - timedelta(days=30 - invoice),
                    redeemable=paid,
                    unpaid=not paid,
                    fee_id=draw(st.sampled_from(["massage", "physio"])),
                    valid_until=START.date() + timedelta(days=draw(st.sampled_from([0, 30, 60]))),
                    practitioner_ids=draw(st.sampled_from([None, ("dr-a",), ("dr-b",)])),
                    status=status,
                    appointment_id=held,
                )
            )
    return lines


@settings(max_examples=300, deadline=None)
@given(histories(), events())
def test_the_lines_read_decide_as_every_line_would(
    lines: list[Line], messages: list[fold.Input]
) -> None:
    """The matcher reads a few of a patient's alike lines (decision.condensed, readmodel.load):
    a batch folded over them says, and changes, exactly what it would over every line."""
    batch = {readmodel.appointment_named(m) for m in messages}
    _, decided = readmodel.deciding(messages, fold.State())
    apart = [x for x in lines if x.appointment_id in batch]
    rest = [x for x in lines if x.appointment_id not in batch]
    read = sorted([*apart, *condensed(rest, decided.get(PATIENT, 0) + 1)], key=in_order)
    everything = sorted(lines, key=in_order)
    every_state, every = fold.fold(state({x.line_id: x for x in everything}), messages)
    read_state, said = fold.fold(state({x.line_id: x for x in read}), messages)
    assert published(said) == published(every)
    assert read_state.changed_lines == every_state.changed_lines
    assert read_state.explanations == every_state.explanations


def test_a_shared_session_is_asked_for_one_member_of_a_household() -> None:
    """A parent's package shared with their child (R18): booked in the same batch, only one of
    them is given its single session, and the other is told it is booked, whose package it is."""
    only = line(line_id=uuid5(SPACE, "line-1"), patient_id=PATIENT, patient_name="Ann Lee")
    start = fold.State()
    start.hold(PATIENT, only)
    start.hold("p-child", only)
    parent = AppointmentBooked(
        patient_id=PATIENT,
        appointment=snapshot(0, 1, fee="massage", day=0, status=AppointmentStatus.BOOKED),
    )
    child_booking = snapshot(1, 1, fee="massage", day=1, status=AppointmentStatus.BOOKED)
    child = AppointmentBooked(
        patient_id="p-child",
        appointment=child_booking.model_copy(update={"patient_id": "p-child"}),
    )
    after, said = fold.fold(start, [child, parent])
    links = [p.message for p in published(said) if isinstance(p.message, LinkAppointment)]
    assert [(x.line_id, x.appointment.patient_id) for x in links] == [(only.line_id, "p-child")]
    assert links[0].rule.endswith(", shared by Ann Lee")
    explained = after.explanations[appointment_id(0)]
    assert explained is not None and "its only session is booked" in explained.summary
    assert after.lines[only.line_id].appointment_id == appointment_id(1)
