"""The whole story of a package line (issue #21 point 2) and the invoice's number (point 3), with
the three real services on the real broker and databases: a line linked by the matcher, moved
with its appointment, unlinked when it is cancelled; another booked from the invoice, unassigned
by staff; a third used when the patient arrives; one transferred to another patient. Each change
is one history row at the time of the message that made it, read a page at a time from GET
/invoices/{invoice_id}/lines/{line_number}/history; a message applied twice writes nothing twice."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import httpx
import pytest
from packline_contracts.appointments import (
    AppointmentRescheduled,
    Attendance,
    CancelAppointment,
    RecordAttendance,
    RescheduleAppointment,
)
from packline_contracts.invoices import (
    InvoiceCommandRefused,
    LineBookingRequested,
    LineLinked,
    LineUnlinked,
    LineUsed,
    SessionsTransferred,
    TransferSessions,
    UnassignInvoiceLine,
)

from tests.clinic import DR_A, NORTHSIDE, booking, days_ahead, patient
from tests.conftest import ReadEvents, StartService
from tests.helpers import eventually
from tests.system import System, http, start_system

pytestmark = pytest.mark.infra


@pytest.fixture
async def system(start_service: StartService, producer: Any, read_events: ReadEvents) -> System:
    return await start_system(start_service, producer, read_events)


@pytest.fixture
async def client(system: System) -> AsyncIterator[httpx.AsyncClient]:
    async with http(system.invoicing) as invoicing:
        yield invoicing


async def story(client: httpx.AsyncClient, invoice_id: Any, number: int) -> list[dict[str, Any]]:
    answer = await client.get(f"/invoices/{invoice_id}/lines/{number}/history")
    assert answer.status_code == 200, answer.text
    return list(answer.json())


async def story_is(
    client: httpx.AsyncClient, invoice_id: Any, number: int, happened: list[str]
) -> list[dict[str, Any]]:
    """The line's story once it says ``happened`` (the last change may still be on its way)."""
    told: list[dict[str, Any]] = []

    async def complete() -> bool:
        told[:] = await story(client, invoice_id, number)
        return [entry["happened"] for entry in told] == happened

    await eventually(
        complete, what=f"line {number}'s story {happened}", describe=lambda: _said(told)
    )
    return told


async def _said(told: list[dict[str, Any]]) -> list[str]:
    return [entry["happened"] for entry in told]


async def test_invoices_are_numbered_once_in_the_order_they_are_issued(
    system: System, client: httpx.AsyncClient
) -> None:
    who = patient()
    first = await system.buy(who, "massage-5x60", location_id=NORTHSIDE)
    second = await system.buy(who, "massage-5x60", location_id=NORTHSIDE)
    one = (await client.get(f"/invoices/{first.invoice_id}")).json()["invoice_number"]
    two = (await client.get(f"/invoices/{second.invoice_id}")).json()["invoice_number"]
    assert re.fullmatch(r"INV-\d{6,}", one) and re.fullmatch(r"INV-\d{6,}", two)
    assert int(two[4:]) > int(one[4:])
    listed = (await client.get(f"/patients/{who}/invoices")).json()
    assert [invoice["invoice_number"] for invoice in listed] == [one, two]
    # Stored in the row: read again, the same number.
    assert (await client.get(f"/invoices/{first.invoice_id}")).json()["invoice_number"] == one
    # A sale over HTTP answers with its number too.
    sold = await client.post(
        "/invoices",
        json={"patient_id": who, "package_id": "massage-5x60", "location_id": NORTHSIDE},
    )
    assert sold.status_code == 201, sold.text
    assert int(sold.json()["invoice_number"][4:]) > int(two[4:])


async def test_a_line_linked_moved_and_unlinked_tells_its_whole_story(
    system: System, client: httpx.AsyncClient
) -> None:
    who = patient()
    invoice = await system.buy(who, "massage-5x60", location_id=NORTHSIDE)
    assert (await story(client, invoice.invoice_id, 1)) == []

    # Booked in the calendar: the matcher links line 1.
    appointment = booking(who, days_ahead(3, 9))
    await system.book(appointment)
    linked = await system.events.wait_for(
        LineLinked, lambda e: e.payload.appointment_id == appointment.appointment_id
    )
    ref = {"patient_id": who, "appointment_id": appointment.appointment_id}
    # Moved to 14:00 the same day: the line keeps it, at the new time (R10).
    new_time = days_ahead(3, 14)
    await system.producer.send(
        RescheduleAppointment(**ref, starts_at=new_time, requested_by="reception:maria")
    )
    await system.events.wait_for(
        AppointmentRescheduled,
        lambda e: e.payload.appointment.appointment_id == appointment.appointment_id,
    )
    moved = await system.events.wait_for(
        LineLinked,
        lambda e: (
            e.payload.appointment_id == appointment.appointment_id
            and e.payload.appointment_version > linked.payload.appointment_version
        ),
    )
    # Cancelled: the line is released.
    await system.producer.send(
        CancelAppointment(**ref, cancelled_by="reception:sam", cancelled_at=datetime.now(UTC))
    )
    unlinked = await system.events.wait_for(
        LineUnlinked, lambda e: e.payload.appointment_id == appointment.appointment_id
    )

    told = await story_is(client, invoice.invoice_id, 1, ["linked", "moved", "unlinked"])
    first, second, third = told
    assert first["appointment_id"] == str(appointment.appointment_id)
    assert datetime.fromisoformat(first["appointment_starts_at"]) == appointment.starts_at
    assert first["practitioner_id"] == DR_A and first["status"] == "linked"
    # Under the message that did it (the matcher's link, which the event names as its cause),
    # at that message's time, also as its location's clocks show it (Northside).
    assert first["message_id"] == str(linked.causation_id)
    assert datetime.fromisoformat(first["at"]) <= linked.occurred_at
    assert datetime.fromisoformat(first["local_at"]) == datetime.fromisoformat(first["at"])
    assert datetime.fromisoformat(first["local_at"]).utcoffset() is not None
    assert second["message_id"] == str(moved.causation_id)
    assert datetime.fromisoformat(second["appointment_starts_at"]) == new_time
    assert datetime.fromisoformat(second["previous_starts_at"]) == appointment.starts_at
    assert second["local_previous_starts_at"] is not None
    assert third["reason"] == "cancelled" and third["status"] == "open"
    # Who cancelled it in the calendar released the line: the event and the story name them.
    assert unlinked.payload.unlinked_by == third["by_staff"] == "reception:sam"
    assert third["appointment_id"] == str(appointment.appointment_id)
    assert third["message_id"] == str(unlinked.causation_id)
    assert [entry["version"] for entry in told] == sorted(entry["version"] for entry in told)

    # A page at a time: the next page's link carries on after the first.
    page = await client.get(f"/invoices/{invoice.invoice_id}/lines/1/history", params={"limit": 2})
    assert [entry["happened"] for entry in page.json()] == ["linked", "moved"]
    following = page.links["next"]["url"]
    rest = await client.get(following)
    assert [entry["happened"] for entry in rest.json()] == ["unlinked"]
    assert "next" not in rest.links
    # Another line of the invoice has nothing to tell.
    assert await story(client, invoice.invoice_id, 2) == []


async def test_booked_from_the_invoice_and_unassigned_by_staff_names_who_once(
    system: System, client: httpx.AsyncClient
) -> None:
    who = patient()
    invoice = await system.buy(who, "massage-5x60", location_id=NORTHSIDE)
    line = invoice.lines[0]
    base = f"/invoices/{invoice.invoice_id}/lines/{line.line_id}"
    asked = await client.put(
        f"{base}/appointment",
        json={
            "starts_at": days_ahead(4, 11).isoformat(),
            "practitioner_id": DR_A,
            "location_id": NORTHSIDE,
            "booked_by": "reception:maria",
        },
    )
    assert asked.status_code == 202, asked.text
    appointment_id = asked.json()["appointment_id"]
    await system.events.wait_for(
        LineLinked, lambda e: str(e.payload.appointment_id) == appointment_id
    )
    requested = await system.events.wait_for(
        LineBookingRequested, lambda e: str(e.payload.appointment_id) == appointment_id
    )
    # Staff unassign it (R8), by a command sent twice under one message id: applied once.
    unassign = UnassignInvoiceLine(
        patient_id=who, invoice_id=invoice.invoice_id, line_id=line.line_id, unassigned_by="sam"
    )
    message_id = uuid4()
    sent = await system.producer.send(unassign, message_id=message_id)
    await system.events.wait_for(
        LineUnlinked, lambda e: str(e.payload.appointment_id) == appointment_id
    )
    await system.producer.send(unassign, message_id=message_id)

    told = await story_is(
        client, invoice.invoice_id, 1, ["booking_requested", "booked", "unlinked"]
    )
    request, booked, unassigned = told
    assert request["by_staff"] == "reception:maria" and request["status"] == "booking_requested"
    assert request["practitioner_id"] == DR_A
    assert abs(datetime.fromisoformat(request["at"]) - requested.occurred_at) < timedelta(seconds=1)
    assert booked["status"] == "linked" and booked["appointment_id"] == appointment_id
    assert unassigned["by_staff"] == "sam" and unassigned["reason"] == "unassigned_by_staff"
    assert unassigned["message_id"] == str(message_id)
    assert datetime.fromisoformat(unassigned["at"]) == sent.occurred_at
    # The second send is applied by nobody. A later command of the same patient (the same
    # partition, so applied after it) is refused: by then the second send was seen.
    await system.producer.send(unassign.model_copy(update={"line_id": invoice.lines[1].line_id}))
    await system.events.wait_for(
        InvoiceCommandRefused, lambda e: e.payload.line_id == invoice.lines[1].line_id
    )
    assert [entry["happened"] for entry in await story(client, invoice.invoice_id, 1)] == [
        "booking_requested",
        "booked",
        "unlinked",
    ]
    rows = await system.invoicing.pool.fetchval(
        "SELECT count(*) FROM line_history WHERE message_id = $1", message_id
    )
    assert rows == 1


async def test_a_session_used_when_the_patient_arrives(
    system: System, client: httpx.AsyncClient
) -> None:
    who = patient()
    invoice = await system.buy(who, "massage-5x60", location_id=NORTHSIDE)
    appointment = booking(who, days_ahead(2, 10))
    await system.book(appointment)
    await system.events.wait_for(
        LineLinked, lambda e: e.payload.appointment_id == appointment.appointment_id
    )
    await system.producer.send(
        RecordAttendance(
            patient_id=who,
            appointment_id=appointment.appointment_id,
            attendance=Attendance.ARRIVED,
            recorded_by="dr-adams",
        )
    )
    used = await system.events.wait_for(
        LineUsed, lambda e: e.payload.appointment_id == appointment.appointment_id
    )
    told = await story_is(client, invoice.invoice_id, 1, ["linked", "used"])
    assert told[1]["status"] == "used"
    assert told[1]["message_id"] == str(used.causation_id)


async def test_history_refuses_what_it_does_not_have(
    system: System, client: httpx.AsyncClient
) -> None:
    who = patient()
    invoice = await system.buy(who, "massage-5x60", location_id=NORTHSIDE)
    missing = await client.get(f"/invoices/{invoice.invoice_id}/lines/9/history")
    assert missing.status_code == 404
    unknown = await client.get(f"/invoices/{uuid4()}/lines/1/history")
    assert unknown.status_code == 404
    bad = await client.get(
        f"/invoices/{invoice.invoice_id}/lines/1/history", params={"cursor": "nope"}
    )
    assert bad.status_code == 422
    zero = await client.get(f"/invoices/{invoice.invoice_id}/lines/0/history")
    assert zero.status_code == 422


async def test_a_transferred_session_says_who_moved_it_and_why(
    system: System, client: httpx.AsyncClient
) -> None:
    giver, recipient = patient(), patient()
    invoice = await system.buy(giver, "massage-5x60", location_id=NORTHSIDE)
    transfer_id = uuid4()
    sent = await system.producer.send(
        TransferSessions(
            patient_id=giver,
            invoice_id=invoice.invoice_id,
            transfer_id=transfer_id,
            to_patient_id=recipient,
            sessions=1,
            reason="given to her daughter",
            transferred_by="manager:li",
        )
    )
    await system.events.wait_for(
        SessionsTransferred, lambda e: e.payload.transfer_id == transfer_id
    )
    number = await system.invoicing.pool.fetchval(
        "SELECT line_number FROM invoice_lines WHERE invoice_id = $1 AND status = 'transferred'",
        invoice.invoice_id,
    )
    (moved,) = await story(client, invoice.invoice_id, number)
    assert (moved["happened"], moved["status"]) == ("transferred", "transferred")
    assert (moved["by_staff"], moved["reason"]) == ("manager:li", "given to her daughter")
    assert moved["message_id"] == str(sent.message_id)
    # The recipient's new invoice has a number of its own, after the giver's.
    (received,) = (await client.get(f"/patients/{recipient}/invoices")).json()
    given = (await client.get(f"/invoices/{invoice.invoice_id}")).json()
    assert int(received["invoice_number"][4:]) > int(given["invoice_number"][4:])
