"""A line's booking request is never stuck (R3): a request the calendar does not answer is
released by the sweep after ``PACKLINE_BOOKING_REQUEST_TIMEOUT_SECONDS`` or by staff sooner; the
line is open again with the reason on it, can be booked again and unassigned, and an appointment
the calendar books late for a released request stays in the calendar without the package.

Through the real broker and PostgreSQL. "The calendar never answers" is a calendar that has
stopped: its command topic is not consumed until a test starts it again on the same database."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from packline_contracts.appointments import AppointmentBooked
from packline_contracts.catalogue import DefineLocation, DefinePractitioner
from packline_contracts.client import PacklineConsumer
from packline_contracts.invoices import (
    InvoiceLine,
    IssuePackageInvoice,
    LineBookingRefused,
    LineLinked,
    LineUnlinked,
    PackageInvoice,
    PackageInvoiceIssued,
    PurchaseChannel,
    UnlinkReason,
)
from packline_contracts.topics import CALENDAR_EVENTS, INVOICING_EVENTS
from packline_core.reconcile import reconcile
from packline_core.service import Service

from tests.clinic import DR_A, NORTHSIDE, SETUP, days_ahead, fee_commands, package, patient
from tests.conftest import ReadEvents, StartService, same_database
from tests.helpers import eventually

pytestmark = pytest.mark.infra

PACKAGE = "massage-2-dr-a-north"


def api(service: Service) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=service.http), base_url="http://x")


@dataclass
class Clinic:
    invoicing: Service
    matcher: Service
    calendar: Service  # stopped: nobody answers the calendar's commands
    events: PacklineConsumer
    start_service: StartService

    async def buy(self, producer: Any, who: str) -> PackageInvoice:
        invoice_id = uuid4()
        await producer.send(
            IssuePackageInvoice(
                patient_id=who,
                invoice_id=invoice_id,
                package_id=PACKAGE,
                channel=PurchaseChannel.STAFF,
                issued_by="reception:maria",
                issued_at=datetime.now().astimezone(),
            )
        )
        issued = await self.events.wait_for(
            PackageInvoiceIssued, lambda e: e.payload.invoice_id == invoice_id
        )

        async def matcher_knows() -> bool:
            count = await self.matcher.pool.fetchval(
                "SELECT count(*) FROM lines WHERE invoice_id = $1", invoice_id
            )
            return bool(count == 2)

        await eventually(matcher_knows, what="the matcher to know the invoice's lines")
        return issued.payload.invoice

    async def matcher_line(self, line: InvoiceLine) -> tuple[str, UUID | None]:
        row = await self.matcher.pool.fetchrow(
            "SELECT status, appointment_id FROM lines WHERE line_id = $1", line.line_id
        )
        assert row is not None
        return row["status"], row["appointment_id"]

    async def restart_calendar(self) -> Service:
        """The calendar comes back (same database, same consumer group) and answers late."""
        self.calendar = await self.start_service("calendar", **same_database(self.calendar))
        return self.calendar


async def open_clinic(
    start_service: StartService, producer: Any, read_events: ReadEvents, wait: float
) -> Clinic:
    events = await read_events(INVOICING_EVENTS, CALENDAR_EVENTS)
    calendar = await start_service("calendar")
    for message in SETUP:
        if isinstance(message, DefinePractitioner | DefineLocation):
            await producer.send(message)
    invoicing = await start_service("invoicing", booking_request_timeout_seconds=wait)
    matcher = await start_service("matcher")
    for message in [
        *fee_commands(),
        package(PACKAGE, count=2, practitioners=[DR_A], locations=[NORTHSIDE]),
    ]:
        await producer.send(message)

    async def catalogues() -> bool:
        fees = await calendar.pool.fetchval("SELECT count(*) FROM fees")
        people = await calendar.pool.fetchval("SELECT count(*) FROM practitioners")
        packages = await invoicing.pool.fetchval(
            "SELECT count(*) FROM packages WHERE package_id = $1", PACKAGE
        )
        return bool(fees == 2 and people == 2 and packages == 1)

    await eventually(catalogues, what="the calendar's directory and fees, and the package")
    # From here on the calendar answers nothing: its commands wait on the topic.
    await calendar.stop()
    return Clinic(invoicing, matcher, calendar, events, start_service)


async def book(client: httpx.AsyncClient, base: str, when: datetime) -> UUID:
    saved = await client.put(
        f"{base}/appointment", json={"starts_at": when.isoformat(), "booked_by": "reception:maria"}
    )
    assert saved.status_code == 202, saved.text
    assert saved.json()["status"] == "booking_requested"
    return UUID(saved.json()["appointment_id"])


async def shown_line(client: httpx.AsyncClient, invoice_id: UUID, line_id: UUID) -> Any:
    answer = await client.get(f"/invoices/{invoice_id}")
    assert answer.status_code == 200, answer.text
    return next(line for line in answer.json()["lines"] if line["line_id"] == str(line_id))


async def late_answer_then_book_again_and_unassign(
    clinic: Clinic, client: httpx.AsyncClient, invoice: PackageInvoice, released: UUID
) -> None:
    """What follows a release, whoever released: the calendar books the released request late
    and that appointment stays unlinked; the line is booked again, linked, and unassigned; the
    three services agree."""
    line = invoice.lines[0]
    base = f"/invoices/{invoice.invoice_id}/lines/{line.line_id}"
    calendar = await clinic.restart_calendar()
    late = await clinic.events.wait_for(
        AppointmentBooked, lambda e: e.payload.appointment.appointment_id == released
    )
    assert late.payload.appointment.invoice_line is not None

    async def applied_by_both() -> bool:
        query = "SELECT count(*) FROM inbox WHERE message_id = $1"
        seen_by_invoicing = await clinic.invoicing.pool.fetchval(query, late.message_id)
        seen_by_matcher = await clinic.matcher.pool.fetchval(query, late.message_id)
        return bool(seen_by_invoicing and seen_by_matcher)

    await eventually(applied_by_both, what="invoicing and the matcher to apply the late booking")
    # The late appointment took no line: not the released one (invoicing), and the matcher asked
    # for none (it would have marked the line requested in the same transaction).
    assert (await shown_line(client, invoice.invoice_id, line.line_id))["status"] == "open"
    assert not await clinic.invoicing.pool.fetchval(
        "SELECT count(*) FROM invoice_lines WHERE appointment_id = $1", released
    )
    assert not await clinic.matcher.pool.fetchval(
        "SELECT count(*) FROM lines WHERE appointment_id = $1", released
    )
    assert await clinic.matcher.pool.fetchval(
        "SELECT hand_unlinked FROM appointments WHERE appointment_id = $1", released
    )
    # It stays in the calendar, booked, without the package note.
    assert (
        await calendar.pool.fetchval(
            "SELECT status FROM appointments WHERE appointment_id = $1", released
        )
        == "booked"
    )
    assert not await calendar.pool.fetchval(
        "SELECT count(*) FROM package_notes WHERE appointment_id = $1", released
    )

    # The line is booked again (another time: the late appointment holds the first) and linked.
    again = await book(client, base, days_ahead(6, hour=14))
    assert again != released
    linked = await clinic.events.wait_for(
        LineLinked, lambda e: e.payload.appointment_id == again, within=30
    )
    assert linked.payload.line.line_id == line.line_id
    assert (await shown_line(client, invoice.invoice_id, line.line_id))["status"] == "linked"

    # ... and unassigned (R8).
    unassigned = await client.delete(f"{base}/appointment", params={"unassigned_by": "maria"})
    assert unassigned.status_code == 200, unassigned.text
    unlinked = await clinic.events.wait_for(
        LineUnlinked, lambda e: e.payload.appointment_id == again
    )
    assert unlinked.payload.reason == UnlinkReason.UNASSIGNED_BY_STAFF

    # I3: invoicing, the calendar's package notes and the matcher's read model agree.
    clients = {
        "invoicing": client,
        "calendar": api(calendar),
        "matcher": api(clinic.matcher),
    }

    async def agreed() -> bool:
        result = await reconcile(clients)
        return result.agreed and not await clinic.matcher.pool.fetchval(
            "SELECT count(*) FROM lines WHERE line_id = $1 AND status <> 'open'", line.line_id
        )

    await eventually(agreed, what="the three services to agree")
    for other in (clients["calendar"], clients["matcher"]):
        await other.aclose()
    # The released request was announced once, and its appointment was never linked.
    refusals = [
        e
        for e in clinic.events.received
        if isinstance(e.payload, LineBookingRefused) and e.payload.appointment_id == released
    ]
    assert len(refusals) == 1
    assert not [
        e
        for e in clinic.events.received
        if isinstance(e.payload, LineLinked) and e.payload.appointment_id == released
    ]


async def test_the_sweep_releases_an_unanswered_request_after_the_timeout(
    start_service: StartService, producer: Any, read_events: ReadEvents
) -> None:
    timeout = 1.5
    clinic = await open_clinic(start_service, producer, read_events, timeout)
    # A second replica sweeps the same database: each overdue line is released once.
    await start_service(
        "invoicing",
        **same_database(clinic.invoicing),
        booking_request_timeout_seconds=timeout,
    )
    invoice = await clinic.buy(producer, patient())
    line = invoice.lines[0]
    base = f"/invoices/{invoice.invoice_id}/lines/{line.line_id}"
    async with api(clinic.invoicing) as client:
        asked = time.monotonic()
        requested = await book(client, base, days_ahead(5, hour=9))
        shown = await shown_line(client, invoice.invoice_id, line.line_id)
        assert shown["status"] == "booking_requested"

        async def matcher_waits() -> bool:
            return await clinic.matcher_line(line) == ("requested", requested)

        await eventually(matcher_waits, what="the matcher to see the booking request")

        released = await clinic.events.wait_for(
            LineBookingRefused, lambda e: e.payload.appointment_id == requested, within=20
        )
        waited = time.monotonic() - asked
        assert waited >= timeout, f"released after {waited:.2f} s, before the {timeout} s timeout"
        assert released.payload.reason == "the calendar did not answer within 1.5 s"
        assert released.payload.line.status.value == "open"
        assert released.payload.line.appointment_id is None
        shown = await shown_line(client, invoice.invoice_id, line.line_id)
        assert shown["status"] == "open" and shown["shows"] == "Unassigned"
        assert shown["note"] == "the calendar did not answer within 1.5 s"
        assert (
            await clinic.invoicing.pool.fetchval(
                "SELECT booking_requested_at FROM invoice_lines WHERE line_id = $1", line.line_id
            )
            is None
        )

        async def matcher_freed() -> bool:
            return await clinic.matcher_line(line) == ("open", None)

        await eventually(matcher_freed, what="the matcher to see the line open again")
        await late_answer_then_book_again_and_unassign(clinic, client, invoice, requested)


async def test_staff_release_a_request_the_calendar_has_not_answered(
    start_service: StartService, producer: Any, read_events: ReadEvents
) -> None:
    # Long enough that only staff release it here.
    clinic = await open_clinic(start_service, producer, read_events, wait=600)
    who = patient()
    invoice = await clinic.buy(producer, who)
    line = invoice.lines[0]
    base = f"/invoices/{invoice.invoice_id}/lines/{line.line_id}"
    async with api(clinic.invoicing) as client:
        requested = await book(client, base, days_ahead(5, hour=9))

        # Neither booking again nor unassigning applies to a line waiting for the calendar; the
        # refusal says what does.
        again = await client.put(
            f"{base}/appointment",
            json={"starts_at": days_ahead(6).isoformat(), "booked_by": "reception:maria"},
        )
        assert again.status_code == 409 and "booking_requested" in again.json()["detail"]
        unassign = await client.delete(f"{base}/appointment", params={"unassigned_by": "maria"})
        assert unassign.status_code == 409
        assert f"{base}/booking-request" in unassign.json()["detail"]

        # Bad requests name what is wrong. (Without released_by, who releases is the verified
        # caller: tests/integration/test_identity.py; this API is open.)
        empty = await client.delete(f"{base}/booking-request", params={"released_by": ""})
        assert empty.status_code == 422 and "released_by" in empty.text
        other_invoice = await client.delete(
            f"/invoices/{uuid4()}/lines/{line.line_id}/booking-request",
            params={"released_by": "maria"},
        )
        assert other_invoice.status_code == 404
        assert str(line.line_id) in other_invoice.json()["detail"]
        open_line = await client.delete(
            f"/invoices/{invoice.invoice_id}/lines/{invoice.lines[1].line_id}/booking-request",
            params={"released_by": "maria"},
        )
        assert open_line.status_code == 409
        assert open_line.json()["detail"] == "the line is open: no booking request is waiting"

        released = await client.delete(
            f"{base}/booking-request",
            params={"released_by": "reception:maria", "reason": "the patient will call back"},
        )
        assert released.status_code == 200, released.text
        note = "booking request released by reception:maria: the patient will call back"
        assert released.json() == {
            "status": "open",
            "invoice_id": str(invoice.invoice_id),
            "line_id": str(line.line_id),
            "released_appointment_id": str(requested),
            "note": note,
        }
        twice = await client.delete(f"{base}/booking-request", params={"released_by": "maria"})
        assert twice.status_code == 409

        event = await clinic.events.wait_for(
            LineBookingRefused, lambda e: e.payload.appointment_id == requested
        )
        assert event.payload.reason == note
        assert event.payload.line.status.value == "open"
        shown = await shown_line(client, invoice.invoice_id, line.line_id)
        assert shown["shows"] == "Unassigned" and shown["note"] == note

        async def matcher_freed() -> bool:
            return await clinic.matcher_line(line) == ("open", None)

        await eventually(matcher_freed, what="the matcher to see the line open again")
        await late_answer_then_book_again_and_unassign(clinic, client, invoice, requested)


def test_the_release_route_is_documented_for_the_console() -> None:
    from packline_invoicing.factory import create_service
    from packline_invoicing.settings import InvoicingSettings

    service = create_service(InvoicingSettings(staff_api_open=True))
    route = service.http.openapi()["paths"][
        "/invoices/{invoice_id}/lines/{line_id}/booking-request"
    ]["delete"]
    assert route["summary"].startswith("Release a booking request the calendar has not answered")
    assert {p["name"] for p in route["parameters"]} >= {"released_by", "reason"}
