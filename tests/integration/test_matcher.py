"""The matcher end to end with the real calendar and invoicing services: every trigger links the
right line, releases it, or explains why not (issue: matcher)."""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Any

import httpx
import pytest
from packline_contracts import wording
from packline_contracts.appointments import (
    Attendance,
    CancelAppointment,
    ChangeAppointment,
    RecordAttendance,
    RescheduleAppointment,
)
from packline_contracts.invoices import (
    LineForfeited,
    LineLinked,
    LineUnlinked,
    UnlinkReason,
    VoidPackageInvoice,
)
from packline_contracts.matching import AppointmentNotMatched, NoMatchCode
from packline_contracts.types import LateCancelPolicy
from packline_core.service import Service

from tests.clinic import DR_A, DR_B, NORTHSIDE, SOUTHSIDE, booking, days_ahead, package, patient
from tests.conftest import ReadEvents, StartService
from tests.helpers import about, read_until, shown
from tests.system import System, start_system

pytestmark = pytest.mark.infra

DR_A_NORTH = package("dr-a-north", count=2, practitioners=[DR_A], locations=[NORTHSIDE])
ANYONE_5 = package("anyone-5", count=5)
SHORT = package("short", count=1, days=30)
POLICY = package("strict", count=2)
POLICY = POLICY.model_copy(update={"late_cancel_policy": LateCancelPolicy(forfeit_within_hours=24)})
NO_SHOW_FORFEITS = package("no-show-forfeits", count=2).model_copy(
    update={"late_cancel_policy": LateCancelPolicy(no_show_forfeits=True)}
)


@pytest.fixture
async def system(start_service: StartService, producer: Any, read_events: ReadEvents) -> System:
    return await start_system(
        start_service,
        producer,
        read_events,
        [DR_A_NORTH, ANYONE_5, SHORT, POLICY, NO_SHOW_FORFEITS],
    )


def linked(system: System, appointment_id: Any) -> Any:
    return system.events.wait_for(LineLinked, lambda e: e.payload.appointment_id == appointment_id)


async def panel(service: Service, appointment_id: Any) -> dict[str, Any]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=service.http), base_url="http://x"
    ) as c:
        answer = await c.get(f"/appointments/{appointment_id}")
    assert answer.status_code == 200, shown(answer)
    return dict(answer.json())


async def test_r4_r5_a_booking_in_the_calendar_or_online_links_a_matching_line(
    system: System,
) -> None:
    who = patient()
    invoice = await system.buy(who, "dr-a-north")
    staff = await system.book(booking(who, days_ahead(2)))
    link = (await linked(system, staff)).payload
    assert link.invoice_id == invoice.invoice_id and link.line.line_number == 1
    from packline_contracts.types import BookingSource

    online = await system.book(booking(who, days_ahead(3), source=BookingSource.ONLINE))
    assert (await linked(system, online)).payload.line.line_number == 2


async def test_r6_r7_restrictions_block_the_link_and_the_reason_is_published(
    system: System,
) -> None:
    who = patient()
    await system.buy(who, "dr-a-north")
    wrong = await system.book(booking(who, days_ahead(2), practitioner=DR_B))
    explained = await system.events.wait_for(
        AppointmentNotMatched, lambda e: e.payload.appointment_id == wrong
    )
    candidate = explained.payload.candidates[0]
    assert candidate.code == NoMatchCode.PRACTITIONER_NOT_ALLOWED
    assert candidate.reason == "covers this fee only with Dr Adams"
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=system.matcher.http), base_url="http://x"
    ) as c:
        shown = (await c.get(f"/appointments/{wrong}/explanation")).json()
    assert "only with Dr Adams" in shown["summary"]
    elsewhere = await system.book(booking(who, days_ahead(4), location=SOUTHSIDE))
    explained = await system.events.wait_for(
        AppointmentNotMatched, lambda e: e.payload.appointment_id == elsewhere
    )
    assert explained.payload.candidates[0].reason == "covers this fee only at Northside clinic"


async def test_r11_the_line_expiring_first_is_used(system: System) -> None:
    who = patient()
    await system.buy(who, "anyone-5")
    short = await system.buy(who, "short")
    appointment = await system.book(booking(who, days_ahead(2)))
    assert (await linked(system, appointment)).payload.invoice_id == short.invoice_id


async def test_r9_cancel_releases_the_line_and_a_late_cancel_forfeits_it(system: System) -> None:
    who = patient()
    await system.buy(who, "strict")
    early = booking(who, days_ahead(5))
    late = booking(who, days_ahead(6))
    for command in (early, late):
        await system.book(command)
        await linked(system, command.appointment_id)
    await system.producer.send(
        CancelAppointment(
            patient_id=who,
            appointment_id=early.appointment_id,
            cancelled_by="patient",
            cancelled_at=days_ahead(0),
        )
    )
    released = await system.events.wait_for(
        LineUnlinked, lambda e: e.payload.appointment_id == early.appointment_id
    )
    assert released.payload.reason == UnlinkReason.CANCELLED
    assert released.payload.balance.remaining == 1
    await system.producer.send(
        CancelAppointment(
            patient_id=who,
            appointment_id=late.appointment_id,
            cancelled_by="patient",
            cancelled_at=late.starts_at - timedelta(hours=3),
        )
    )
    forfeited = await system.events.wait_for(
        LineForfeited, lambda e: e.payload.appointment_id == late.appointment_id
    )
    assert forfeited.payload.balance.used == 1 and forfeited.payload.balance.remaining == 1
    # The window is worded with the location's clock (UTC here; Sydney in the unit test).
    starts = late.starts_at.astimezone(UTC)
    assert forfeited.payload.reason == (
        f"a late cancellation: cancelled {wording.moment(starts - timedelta(hours=3))}, 3 hours"
        f" before the appointment at {starts:%H:%M} (this package forfeits inside 24 hours)"
    )


async def test_r9_a_no_show_is_worded_as_one_and_follows_the_packages_policy(
    system: System,
) -> None:
    for hour, (package_id, forfeits) in enumerate(
        (("no-show-forfeits", True), ("anyone-5", False)), start=9
    ):
        who = patient()
        await system.buy(who, package_id)
        missed = booking(who, days_ahead(2, hour=hour))
        await system.book(missed)
        await linked(system, missed.appointment_id)
        await system.producer.send(
            RecordAttendance(
                patient_id=who,
                appointment_id=missed.appointment_id,
                attendance=Attendance.NO_SHOW,
                recorded_by="reception:maria",
            )
        )
        if forfeits:
            forfeited = await system.events.wait_for(LineForfeited, about(missed.appointment_id))
            assert forfeited.payload.reason == "a no-show under the package's policy"
            assert forfeited.payload.balance.used == 1
        else:
            released = await system.events.wait_for(LineUnlinked, about(missed.appointment_id))
            assert released.payload.reason == UnlinkReason.NO_SHOW
            assert released.payload.balance.remaining == 5


async def test_r10_reschedule_keeps_the_link_a_change_that_no_longer_fits_is_unlinked(
    system: System,
) -> None:
    who = patient()
    await system.buy(who, "dr-a-north")
    command = booking(who, days_ahead(2))
    await system.book(command)
    first = (await linked(system, command.appointment_id)).payload
    moved_to = days_ahead(3, hour=15)
    await system.producer.send(
        RescheduleAppointment(
            patient_id=who,
            appointment_id=command.appointment_id,
            starts_at=moved_to,
            requested_by="m",
        )
    )
    relinked = await system.events.wait_for(
        LineLinked,
        lambda e: (
            e.payload.appointment_id == command.appointment_id and e.payload.link_version == 2
        ),
    )
    assert relinked.payload.line.line_id == first.line.line_id
    assert relinked.payload.line.appointment_starts_at == moved_to
    await system.producer.send(
        ChangeAppointment(
            patient_id=who,
            appointment_id=command.appointment_id,
            practitioner_id=DR_B,
            requested_by="m",
        )
    )
    unlinked = await system.events.wait_for(
        LineUnlinked, lambda e: e.payload.appointment_id == command.appointment_id
    )
    assert unlinked.payload.reason == UnlinkReason.NO_LONGER_FITS
    note = await _eventually_panel(system, command.appointment_id, lambda p: p["package"] is None)
    assert note["practitioner_id"] == DR_B


async def _eventually_panel(system: System, appointment_id: Any, test: Any) -> dict[str, Any]:
    """The calendar's panel once ``test`` holds of it; at the deadline, fail showing it."""
    return await read_until(
        lambda: panel(system.calendar, appointment_id), test, what="the appointment panel"
    )


async def test_r12_a_late_purchase_links_waiting_appointments_earliest_first(
    system: System,
) -> None:
    who = patient()
    later = await system.book(booking(who, days_ahead(6)))
    sooner = await system.book(booking(who, days_ahead(4)))
    past_free = booking(who, days_ahead(5), practitioner=DR_B)  # does not fit dr-a-north
    await system.book(past_free)
    await system.buy(who, "dr-a-north")
    first = (await linked(system, sooner)).payload
    second = (await linked(system, later)).payload
    assert (first.line.line_number, second.line.line_number) == (1, 2)


async def test_r8_an_appointment_unlinked_by_staff_is_not_linked_again(system: System) -> None:
    who = patient()
    invoice = await system.buy(who, "dr-a-north")
    kept = await system.book(booking(who, days_ahead(2)))
    link = (await linked(system, kept)).payload
    await _eventually_panel(system, kept, lambda p: p["package"] is not None)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=system.invoicing.http), base_url="http://x"
    ) as c:
        answer = await c.delete(
            f"/invoices/{invoice.invoice_id}/lines/{link.line.line_id}/appointment",
            params={"unassigned_by": "maria"},
        )
    assert answer.status_code == 200
    await system.events.wait_for(LineUnlinked, lambda e: e.payload.appointment_id == kept)
    await system.matcher_has(
        "SELECT 1 FROM appointments WHERE appointment_id = $1 AND hand_unlinked", kept
    )
    explained = await system.events.wait_for(
        AppointmentNotMatched, lambda e: e.payload.appointment_id == kept
    )
    assert [c.code for c in explained.payload.candidates] == [NoMatchCode.UNASSIGNED_BY_STAFF]
    assert "unassigned from its package" in explained.payload.summary
    marker = await system.book(booking(who, days_ahead(3)))
    assert (
        await linked(system, marker)
    ).payload.line.line_number == 1  # the freed line, not `kept`
    # The calendar applies the unlink from invoicing's topic in its own time: wait for it.
    after = await _eventually_panel(system, kept, lambda p: p["package"] is None)
    assert after["status"] == "booked"
    assert not [
        e
        for e in system.events.received
        if isinstance(e.payload, LineLinked)
        and e.payload.appointment_id == kept
        and e.payload.link_version > 1
    ]


async def test_r13_voiding_unlinks_and_the_appointment_matches_another_package(
    system: System,
) -> None:
    who = patient()
    short = await system.buy(who, "short")
    appointment = await system.book(booking(who, days_ahead(2)))
    assert (await linked(system, appointment)).payload.invoice_id == short.invoice_id
    other = await system.buy(who, "anyone-5")
    await system.producer.send(
        VoidPackageInvoice(
            patient_id=who, invoice_id=short.invoice_id, voided_by="manager", reason="error"
        )
    )
    moved = await system.events.wait_for(
        LineLinked,
        lambda e: (
            e.payload.appointment_id == appointment and e.payload.invoice_id == other.invoice_id
        ),
    )
    assert moved.payload.link_version == 3


async def test_i8_two_appointments_racing_for_the_last_session_one_wins_one_is_explained(
    system: System,
) -> None:
    who = patient()
    await system.buy(who, "short")
    one, two = booking(who, days_ahead(2)), booking(who, days_ahead(3))
    await system.producer.send(one)
    await system.producer.send(two)
    outcome = {}
    for command in (one, two):
        outcome[command.appointment_id] = await system.events.wait_for_any(
            LineLinked, AppointmentNotMatched, where=about(command.appointment_id)
        )
    kinds = sorted(type(e.payload).__name__ for e in outcome.values())
    assert kinds == ["AppointmentNotMatched", "LineLinked"]
    explained = next(
        e.payload for e in outcome.values() if isinstance(e.payload, AppointmentNotMatched)
    )
    assert explained.candidates[0].code == NoMatchCode.ALL_SESSIONS_BOOKED
    assert explained.candidates[0].reason == "its only session is booked"


async def test_r8_holds_when_the_staff_unlink_arrives_before_the_booking(
    start_service: StartService,
) -> None:
    """Two topics, no order between them: the matcher may read invoicing's LineUnlinked (staff)
    before the calendar's AppointmentBooked. The booking must arrive already marked (found by
    the fault suite: the appointment was linked again)."""
    from uuid import uuid4

    from packline_contracts.appointments import AppointmentBooked
    from packline_contracts.envelope import Envelope
    from packline_contracts.types import Appointment, AppointmentStatus, BookingSource
    from packline_matcher.matching import fold_batch, line_unlinked

    from tests.clinic import MASSAGE_60, line_event

    matcher = await start_service("matcher")
    who, appointment_id = patient(), uuid4()
    unlinked = line_event(LineUnlinked, who, appointment_id, 2)
    assert isinstance(unlinked, LineUnlinked)
    booked = AppointmentBooked(
        patient_id=who,
        appointment=Appointment(
            appointment_id=appointment_id,
            version=1,
            patient_id=who,
            practitioner_id=DR_A,
            location_id=NORTHSIDE,
            starts_at=days_ahead(2),
            duration_minutes=60,
            fee_ids=[MASSAGE_60],
            status=AppointmentStatus.BOOKED,
            source=BookingSource.INVOICE,
        ),
    )
    async with matcher.transaction() as tx:
        await line_unlinked(tx, Envelope.wrap(unlinked, producer="invoicing"))
    async with matcher.transaction() as tx:
        await fold_batch(tx.conn, [(tx, Envelope.wrap(booked, producer="calendar"))])
    marked = await matcher.pool.fetchval(
        "SELECT hand_unlinked FROM appointments WHERE appointment_id = $1", appointment_id
    )
    assert marked is True


async def test_an_appointment_explained_before_is_explained_again_when_unassigned(
    system: System,
) -> None:
    """Not matched (only Dr A's package), then linked by a late purchase, then unassigned by
    staff, all at one appointment version: the second explanation is published too."""
    who = patient()
    await system.buy(who, "dr-a-north")
    with_dr_b = await system.book(booking(who, days_ahead(2, hour=15), practitioner=DR_B))
    first = await system.events.wait_for(
        AppointmentNotMatched, lambda e: e.payload.appointment_id == with_dr_b
    )
    assert first.payload.candidates[0].code == NoMatchCode.PRACTITIONER_NOT_ALLOWED
    anyone = await system.buy(who, "anyone-5")
    link = (await linked(system, with_dr_b)).payload
    assert link.invoice_id == anyone.invoice_id
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=system.invoicing.http), base_url="http://x"
    ) as c:
        answer = await c.delete(
            f"/invoices/{anyone.invoice_id}/lines/{link.line.line_id}/appointment",
            params={"unassigned_by": "maria"},
        )
    assert answer.status_code == 200, answer.text
    again = await system.events.wait_for(
        AppointmentNotMatched,
        lambda e: (
            e.payload.appointment_id == with_dr_b
            and e.payload.candidates[0].code == NoMatchCode.UNASSIGNED_BY_STAFF
        ),
    )
    assert again.payload.appointment_version == first.payload.appointment_version
