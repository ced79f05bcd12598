"""R14, sessions used when attended, with the three real services on the real broker: the
calendar's attendance marks the line used (once), every service says so, the balance counts it,
and nothing afterwards gives a used session back. A no-show follows the package's policy (R9)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import httpx
import pytest
from packline_contracts.appointments import (
    AppointmentCancelled,
    Attendance,
    AttendanceRecorded,
    CancelAppointment,
    RecordAttendance,
)
from packline_contracts.invoices import (
    InvoiceCommandRefused,
    LineForfeited,
    LineLinked,
    LineStatus,
    LineUnlinked,
    LineUsed,
    UnlinkAppointment,
    UnlinkReason,
)
from packline_contracts.topics import CALENDAR_EVENTS, INVOICING_EVENTS
from packline_contracts.types import LateCancelPolicy
from packline_core.reconcile import reconcile
from packline_invoicing.attendance import USED_STAYS

from tests.clinic import booking, days_ahead, package, patient
from tests.conftest import Infrastructure, ReadEvents, StartService
from tests.helpers import about, caught_up, eventually, get_until
from tests.system import System, start_system

pytestmark = pytest.mark.infra

FIVE = package("massage-5x60", count=5)
STRICT = package("no-show-forfeits", count=2).model_copy(
    update={"late_cancel_policy": LateCancelPolicy(no_show_forfeits=True)}
)
PLAIN = package("plain-2", count=2)


@pytest.fixture
async def system(start_service: StartService, producer: Any, read_events: ReadEvents) -> System:
    return await start_system(start_service, producer, read_events, [FIVE, STRICT, PLAIN])


@pytest.fixture
async def http(system: System) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    """Each service's HTTP API, as reconcile and staff screens reach it."""
    clients = {
        name: httpx.AsyncClient(
            transport=httpx.ASGITransport(app=service.http), base_url="http://x"
        )
        for name, service in (
            ("calendar", system.calendar),
            ("invoicing", system.invoicing),
            ("matcher", system.matcher),
        )
    }
    yield clients
    for client in clients.values():
        await client.aclose()


async def attend(system: System, who: str, appointment_id: UUID, attendance: Attendance) -> None:
    await system.producer.send(
        RecordAttendance(
            patient_id=who,
            appointment_id=appointment_id,
            attendance=attendance,
            recorded_by="dr-adams",
        )
    )


async def used(system: System, appointment_id: UUID) -> LineUsed:
    event = await system.events.wait_for(
        LineUsed, lambda e: e.payload.appointment_id == appointment_id
    )
    return event.payload


async def booked_and_linked(system: System, who: str, days: int) -> LineLinked:
    appointment_id = await system.book(booking(who, days_ahead(days)))
    event = await system.events.wait_for(
        LineLinked, lambda e: e.payload.appointment_id == appointment_id
    )
    return event.payload


async def agreed(http: dict[str, httpx.AsyncClient]) -> None:
    """I3: invoicing's links, the calendar's notes and the matcher's read model agree."""
    last: list[Any] = []

    async def agree() -> bool:
        last[:] = [await reconcile(http)]
        return bool(last[0].agreed)

    await eventually(
        agree,
        what="the three services to agree",
        describe=lambda: last[0].disagreements + last[0].pending if last else None,
    )


async def applied(infrastructure: Infrastructure, topic_prefix: str, system: System) -> None:
    """Invoicing and the matcher have applied everything the calendar and invoicing published."""
    for group, topics in (
        ("invoicing.booking-results", [CALENDAR_EVENTS]),
        ("matcher.events", [CALENDAR_EVENTS, INVOICING_EVENTS]),
    ):
        await caught_up(
            infrastructure.kafka_bootstrap,
            f"{topic_prefix}packline.{group}",
            [topic_prefix + topic.name for topic in topics],
        )


def events_of(system: System, kind: type[Any], appointment_id: UUID) -> list[Any]:
    return [
        e.payload
        for e in system.events.received
        if isinstance(e.payload, kind) and e.payload.appointment_id == appointment_id
    ]


async def test_attended_sessions_are_used_once_and_every_service_agrees(
    system: System, http: dict[str, httpx.AsyncClient]
) -> None:
    who = patient()
    invoice = await system.buy(who, FIVE.package_id)
    first = await booked_and_linked(system, who, 2)
    await attend(system, who, first.appointment_id, Attendance.ARRIVED)
    arrived = await used(system, first.appointment_id)
    assert arrived.line.status == LineStatus.USED and arrived.session_number == 1
    assert (arrived.balance.used, arrived.balance.booked, arrived.balance.remaining) == (1, 0, 4)
    assert arrived.link_version == first.link_version + 1
    await attend(system, who, first.appointment_id, Attendance.COMPLETED)  # changes nothing

    second = await booked_and_linked(system, who, 3)
    await attend(system, who, second.appointment_id, Attendance.COMPLETED)  # straight to done
    completed = await used(system, second.appointment_id)
    assert completed.session_number == 2
    assert (completed.balance.used, completed.balance.remaining, completed.balance.total) == (
        2,
        3,
        5,
    )
    # The first appointment's "completed" was applied before the second's attendance (one
    # patient, one partition, in order): a second LineUsed for it would have come first.
    assert len(events_of(system, LineUsed, first.appointment_id)) == 1

    shown = await get_until(
        http["invoicing"], f"/invoices/{invoice.invoice_id}", lambda body: body, what="invoice"
    )
    assert [line["status"] for line in shown["lines"][:3]] == ["used", "used", "open"]
    assert shown["balance"]["used"] == 2 and shown["balance_text"].startswith("3 of 5 left")
    panel = await get_until(
        http["calendar"],
        f"/appointments/{second.appointment_id}",
        lambda body: body["package"] and body["package"]["state"] == "used",
        what="the calendar's note of the second visit",
    )
    assert panel["package"]["text"] == "5 x 60-min massage: session 2 of 5 used, 3 left"
    seen = await get_until(
        http["matcher"],
        f"/patients/{who}/links",
        lambda body: [line["status"] for line in body["lines"]].count("used") == 2,
        what="the matcher's read model",
    )
    assert {line["appointment_id"] for line in seen["lines"] if line["status"] == "used"} == {
        str(first.appointment_id),
        str(second.appointment_id),
    }
    await agreed(http)


async def test_a_used_session_is_not_given_back_by_a_later_cancel_or_unlink(
    system: System,
    http: dict[str, httpx.AsyncClient],
    infrastructure: Infrastructure,
    topic_prefix: str,
) -> None:
    who = patient()
    invoice = await system.buy(who, FIVE.package_id)
    link = await booked_and_linked(system, who, 2)
    await attend(system, who, link.appointment_id, Attendance.ARRIVED)
    await used(system, link.appointment_id)
    # The calendar lets staff cancel an appointment the patient arrived for.
    await system.producer.send(
        CancelAppointment(
            patient_id=who,
            appointment_id=link.appointment_id,
            cancelled_by="reception:maria",
            cancelled_at=days_ahead(0),
        )
    )
    # The calendar has cancelled it (and published so) before anything below is judged.
    await system.events.wait_for(AppointmentCancelled, about(link.appointment_id))
    # Asked directly, invoicing refuses to release it, and says why; staff cannot unassign it.
    await system.producer.send(
        UnlinkAppointment(
            patient_id=who,
            invoice_id=invoice.invoice_id,
            line_id=link.line.line_id,
            appointment_id=link.appointment_id,
            appointment_version=3,
            reason=UnlinkReason.CANCELLED,
        )
    )
    refused = await system.events.wait_for(
        InvoiceCommandRefused, lambda e: e.payload.line_id == link.line.line_id
    )
    assert refused.payload.reason == USED_STAYS
    unassign = await http["invoicing"].delete(
        f"/invoices/{invoice.invoice_id}/lines/{link.line.line_id}/appointment",
        params={"unassigned_by": "reception:maria"},
    )
    assert unassign.status_code == 409 and "used" in unassign.text
    await applied(infrastructure, topic_prefix, system)
    assert not events_of(system, LineUnlinked, link.appointment_id)
    assert not events_of(system, LineForfeited, link.appointment_id)
    shown = (await http["invoicing"].get(f"/invoices/{invoice.invoice_id}")).json()
    assert shown["lines"][0]["status"] == "used" and shown["balance"]["remaining"] == 4
    await agreed(http)
    panel = (await http["calendar"].get(f"/appointments/{link.appointment_id}")).json()
    assert panel["status"] == "cancelled" and panel["package"]["state"] == "used"


async def test_attendance_before_the_link_uses_the_session_when_it_links(
    system: System,
    http: dict[str, httpx.AsyncClient],
    infrastructure: Infrastructure,
    topic_prefix: str,
) -> None:
    """A walk-in: arrived before the patient had a package; bought at the desk (R12 links the
    waiting appointment), the session is used at once. Attendance with no line changes nothing."""
    who = patient()
    walk_in = await system.book(booking(who, days_ahead(1)))
    await attend(system, who, walk_in, Attendance.ARRIVED)
    await system.events.wait_for(
        AttendanceRecorded, lambda e: e.payload.appointment.appointment_id == walk_in
    )
    await applied(infrastructure, topic_prefix, system)
    assert not events_of(system, LineUsed, walk_in)
    invoice = await system.buy(who, FIVE.package_id)
    link = await system.events.wait_for(LineLinked, lambda e: e.payload.appointment_id == walk_in)
    spent = await used(system, walk_in)
    assert spent.invoice_id == invoice.invoice_id == link.payload.invoice_id
    assert spent.link_version == link.payload.link_version + 1
    assert (spent.balance.used, spent.balance.remaining) == (1, 4)
    await agreed(http)


@pytest.mark.parametrize("forfeits", [True, False], ids=["no_show_forfeits", "no_policy"])
async def test_a_no_show_follows_the_packages_policy(
    system: System, http: dict[str, httpx.AsyncClient], forfeits: bool
) -> None:
    who = patient()
    await system.buy(who, STRICT.package_id if forfeits else PLAIN.package_id)
    link = await booked_and_linked(system, who, 2)
    await attend(system, who, link.appointment_id, Attendance.NO_SHOW)
    if forfeits:
        forfeited = await system.events.wait_for(
            LineForfeited, lambda e: e.payload.appointment_id == link.appointment_id
        )
        assert forfeited.payload.reason == "a no-show under the package's policy"
        assert (forfeited.payload.balance.used, forfeited.payload.balance.remaining) == (1, 1)
    else:
        released = await system.events.wait_for(
            LineUnlinked, lambda e: e.payload.appointment_id == link.appointment_id
        )
        assert released.payload.reason == UnlinkReason.NO_SHOW
        assert (released.payload.balance.used, released.payload.balance.remaining) == (0, 2)
    assert not events_of(system, LineUsed, link.appointment_id)
    await agreed(http)
