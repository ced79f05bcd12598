"""A package's end of life (R18, issue #22 point 1) with the three real services on the real
broker and databases: reminders before expiry (once per threshold), the write-off of unbooked
sessions after validity and grace (SessionsExpired, and the deferred-revenue report moving them
from owed to expired to the cent), staff extending an invoice so that a waiting appointment
links, and the refusals naming the field. The sweep is driven with an injected clock (I10)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from packline_contracts.appointments import CancelAppointment
from packline_contracts.envelope import Envelope
from packline_contracts.invoices import (
    ExtendPackageInvoice,
    InvoiceCommandRefused,
    LineLinked,
    LineStatus,
    LineUnlinked,
    PackageExpiringSoon,
    PackageInvoice,
    PackageInvoiceExtended,
    PackageInvoiceVoided,
    SessionsExpired,
    VoidPackageInvoice,
)
from packline_contracts.matching import AppointmentNotMatched, NoMatchCode
from packline_invoicing.expiry import ExpirySweep

from tests.clinic import NORTHSIDE, booking, days_ahead, package, patient
from tests.conftest import ReadEvents, StartService
from tests.system import System, http, start_system

pytestmark = pytest.mark.infra

# 3 sessions for 100.00 (shares 33.34, 33.33, 33.33), valid today and tomorrow, 2 days of grace.
SHORT = package("short", count=3, price_cents=10000, days=2).model_copy(update={"grace_days": 2})
# 2 sessions valid 60 days, reminders 30 and 7 days before the last day.
REMINDED = package("reminded", count=2, days=60).model_copy(update={"expiry_warning_days": [30, 7]})
# 1 session valid today and tomorrow: an appointment later waits for an extension.
BRIEF = package("brief", count=1, days=2)


@pytest.fixture
async def system(start_service: StartService, producer: Any, read_events: ReadEvents) -> System:
    return await start_system(start_service, producer, read_events, [SHORT, REMINDED, BRIEF])


@pytest.fixture
async def client(system: System) -> AsyncIterator[httpx.AsyncClient]:
    async with http(system.invoicing) as invoicing:
        yield invoicing


def sweep_at(system: System, when: datetime) -> ExpirySweep:
    """A sweep of the running invoicing service whose clock says ``when``."""
    return ExpirySweep(system.invoicing, 3600, clock=lambda: when)


def about(invoice: PackageInvoice) -> Callable[[Envelope[Any]], bool]:
    return lambda envelope: bool(envelope.payload.invoice_id == invoice.invoice_id)


async def outbox_count(system: System, message_type: str, invoice: PackageInvoice) -> int:
    """How many messages of this type about the invoice invoicing ever published."""
    count = await system.invoicing.pool.fetchval(
        "SELECT count(*) FROM outbox WHERE convert_from(value, 'UTF8')::jsonb"
        " ->> 'message_type' = $1 AND convert_from(value, 'UTF8')::jsonb"
        " -> 'payload' ->> 'invoice_id' = $2",
        message_type,
        str(invoice.invoice_id),
    )
    return int(count)


async def report(client: httpx.AsyncClient, first: date, last: date) -> dict[str, Any]:
    answer = await client.get(
        "/reports/deferred-revenue", params={"from": first.isoformat(), "to": last.isoformat()}
    )
    assert answer.status_code == 200, answer.text
    (eur,) = answer.json()["totals"]
    return dict(eur)


async def test_two_unbooked_sessions_are_written_off_after_the_grace_and_leave_what_is_owed(
    system: System, client: httpx.AsyncClient
) -> None:
    now = datetime.now(UTC)
    today = now.date()
    who = patient()
    invoice = await system.buy(who, "short", location_id=NORTHSIDE, issued_at=now)
    assert invoice.grace_days == 2 and invoice.balance.expires_on == today + timedelta(days=1)
    # One session booked in time (line 1, R11); two left unbooked.
    booked = booking(who, days_ahead(1, 9))
    await system.book(booked)
    await system.events.wait_for(
        LineLinked, lambda e: e.payload.appointment_id == booked.appointment_id
    )
    first, last = today.replace(day=1), today + timedelta(days=40)
    before = await report(client, first, last)
    assert (before["sold_cents"], before["expired_cents"], before["owed_cents"]) == (
        10000,
        0,
        10000,
    )

    # The last valid day and the grace: nothing is written off yet.
    for days in (1, 2, 3):
        assert await sweep_at(system, now + timedelta(days=days)).sweep_once() == (0, 0)
    # The day after the grace: the two unbooked sessions are written off, once.
    written_off_day = today + timedelta(days=4)
    assert await sweep_at(system, now + timedelta(days=4)).sweep_once() == (1, 0)
    expired = (await system.events.wait_for(SessionsExpired, about(invoice))).payload
    assert (expired.sessions, expired.expired_cents, expired.owed_cents) == (2, 6666, 3334)
    assert [line.line_number for line in expired.lines] == [2, 3]
    assert {line.status for line in expired.lines} == {LineStatus.EXPIRED}
    assert expired.expired_on == today + timedelta(days=1) and expired.grace_days == 2
    assert expired.accounted_at == datetime.combine(written_off_day, datetime.min.time(), UTC)
    balance = expired.balance
    assert (balance.total, balance.remaining, balance.expired) == (3, 0, 2)
    assert balance.booked + balance.used == 3
    assert await sweep_at(system, now + timedelta(days=5)).sweep_once() == (0, 0)
    assert await outbox_count(system, "SessionsExpired", invoice) == 1

    # The report moves the two shares from owed to expired, to the cent.
    after = await report(client, first, last)
    assert (after["sold_cents"], after["expired_cents"], after["owed_cents"]) == (10000, 6666, 3334)
    shown = (await client.get(f"/invoices/{invoice.invoice_id}")).json()
    assert [line["status"] for line in shown["lines"]] == ["linked", "expired", "expired"]
    assert shown["owed_cents"] == 3334
    assert shown["balance_text"].endswith(", 2 sessions written off")
    # The booked session keeps its appointment; the matcher never chooses the others again.
    await system.matcher_has(
        "SELECT count(*) = 2 FROM lines WHERE invoice_id = $1 AND status = 'expired'",
        invoice.invoice_id,
    )

    # The booked session cancelled after the write-off: its line is open again, and the next
    # sweep writes it off too.
    await system.producer.send(
        CancelAppointment(
            patient_id=who,
            appointment_id=booked.appointment_id,
            cancelled_by="patient",
            cancelled_at=datetime.now(UTC),
        )
    )
    await system.events.wait_for(
        LineUnlinked, lambda e: e.payload.appointment_id == booked.appointment_id
    )
    assert await sweep_at(system, now + timedelta(days=6)).sweep_once() == (1, 0)
    last_one = await system.events.wait_for(
        SessionsExpired, lambda e: about(invoice)(e) and e.payload.sessions == 1
    )
    assert [line.line_number for line in last_one.payload.lines] == [1]
    assert (last_one.payload.expired_cents, last_one.payload.owed_cents) == (3334, 0)
    assert (await report(client, first, last))["owed_cents"] == 0


async def test_a_reminder_is_published_once_per_threshold_and_again_for_a_new_expiry(
    system: System,
) -> None:
    now = datetime.now(UTC)
    today = now.date()
    who = patient()
    invoice = await system.buy(who, "reminded", location_id=NORTHSIDE, issued_at=now)
    expires_on = today + timedelta(days=59)
    assert await sweep_at(system, now + timedelta(days=10)).sweep_once() == (0, 0)
    assert await sweep_at(system, now + timedelta(days=30)).sweep_once() == (0, 1)
    soon = (await system.events.wait_for(PackageExpiringSoon, about(invoice))).payload
    assert (soon.threshold_days, soon.days_left, soon.expires_on) == (30, 29, expires_on)
    assert (soon.unbooked, soon.written_off_after) == (2, expires_on)
    # The same day again, and the days before the next threshold: nothing new.
    for days in (30, 31, 51):
        assert await sweep_at(system, now + timedelta(days=days)).sweep_once() == (0, 0)
    assert await sweep_at(system, now + timedelta(days=53)).sweep_once() == (0, 1)
    again = await system.events.wait_for(
        PackageExpiringSoon, lambda e: about(invoice)(e) and e.payload.threshold_days == 7
    )
    assert again.payload.days_left == 6
    assert await sweep_at(system, now + timedelta(days=54)).sweep_once() == (0, 0)
    assert await outbox_count(system, "PackageExpiringSoon", invoice) == 2

    # Extended through the commands topic: the new last day brings its own reminders.
    extension_id = uuid4()
    await system.producer.send(
        ExtendPackageInvoice(
            patient_id=who,
            invoice_id=invoice.invoice_id,
            extension_id=extension_id,
            valid_until=today + timedelta(days=100),
            reason="patient travelling",
            extended_by="billing:bo",
        )
    )
    extended = (await system.events.wait_for(PackageInvoiceExtended, about(invoice))).payload
    assert (extended.previous_valid_until, extended.valid_until) == (
        expires_on,
        today + timedelta(days=100),
    )
    assert extended.balance.expires_on == today + timedelta(days=100)
    assert await sweep_at(system, now + timedelta(days=75)).sweep_once() == (0, 1)
    renewed = await system.events.wait_for(
        PackageExpiringSoon,
        lambda e: about(invoice)(e) and e.payload.expires_on == today + timedelta(days=100),
    )
    assert (renewed.payload.threshold_days, renewed.payload.days_left) == (30, 25)


async def test_an_appointment_after_expiry_waits_and_links_once_staff_extend(
    system: System, client: httpx.AsyncClient
) -> None:
    now = datetime.now(UTC)
    today = now.date()
    who = patient()
    invoice = await system.buy(who, "brief", location_id=NORTHSIDE, issued_at=now)
    late = booking(who, days_ahead(5, 10))
    await system.book(late)
    waiting = await system.events.wait_for(
        AppointmentNotMatched, lambda e: e.payload.appointment_id == late.appointment_id
    )
    (candidate,) = waiting.payload.candidates
    assert candidate.code == NoMatchCode.EXPIRED
    assert "expired on" in waiting.payload.summary

    extension_id = uuid4()
    answer = await client.put(
        f"/invoices/{invoice.invoice_id}/validity",
        json={
            "valid_until": (today + timedelta(days=10)).isoformat(),
            "reason": "clinic closed for a week",
            "extended_by": "billing:bo",
            "extension_id": str(extension_id),
        },
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert {line["valid_until"] for line in body["lines"]} == {
        (today + timedelta(days=10)).isoformat()
    }
    extended = (await system.events.wait_for(PackageInvoiceExtended, about(invoice))).payload
    assert (extended.reason, extended.extended_by) == ("clinic closed for a week", "billing:bo")
    assert extended.previous_valid_until == today + timedelta(days=1)
    linked = await system.events.wait_for(
        LineLinked, lambda e: e.payload.appointment_id == late.appointment_id
    )
    assert linked.payload.line.valid_until == today + timedelta(days=10)
    audit = await system.invoicing.pool.fetchrow(
        "SELECT * FROM invoice_extensions WHERE extension_id = $1", extension_id
    )
    assert audit is not None and audit["extended_by"] == "billing:bo"

    # The same extension again (a retry) changes nothing and answers the same.
    again = await client.put(
        f"/invoices/{invoice.invoice_id}/validity",
        json={
            "valid_until": (today + timedelta(days=10)).isoformat(),
            "reason": "clinic closed for a week",
            "extension_id": str(extension_id),
        },
    )
    assert again.status_code == 200, again.text
    count = await system.invoicing.pool.fetchval(
        "SELECT count(*) FROM invoice_extensions WHERE invoice_id = $1", invoice.invoice_id
    )
    assert count == 1


async def test_extensions_are_refused_naming_the_field(
    system: System, client: httpx.AsyncClient
) -> None:
    now = datetime.now(UTC)
    today = now.date()
    who = patient()
    invoice = await system.buy(who, "reminded", location_id=NORTHSIDE, issued_at=now)
    expires_on = today + timedelta(days=59)

    async def put(invoice_id: UUID, valid_until: date) -> httpx.Response:
        return await client.put(
            f"/invoices/{invoice_id}/validity",
            json={"valid_until": valid_until.isoformat(), "reason": "asked"},
        )

    for earlier in (expires_on, expires_on - timedelta(days=3)):
        answer = await put(invoice.invoice_id, earlier)
        assert answer.status_code == 422, answer.text
        (problem,) = answer.json()["detail"]
        assert problem["loc"] == ["body", "valid_until"], problem
    assert (await put(uuid4(), expires_on + timedelta(days=3))).status_code == 404
    missing_reason = await client.put(
        f"/invoices/{invoice.invoice_id}/validity",
        json={"valid_until": (expires_on + timedelta(days=3)).isoformat()},
    )
    assert missing_reason.status_code == 422
    assert ["body", "reason"] in [p["loc"] for p in missing_reason.json()["detail"]]

    # Through the topic: an earlier day, then a void invoice, each refused naming the field.
    def extend(valid_until: date) -> ExtendPackageInvoice:
        return ExtendPackageInvoice(
            patient_id=who,
            invoice_id=invoice.invoice_id,
            extension_id=uuid4(),
            valid_until=valid_until,
            reason="asked",
            extended_by="billing:bo",
        )

    def refusal_of_extension(envelope: Envelope[InvoiceCommandRefused]) -> bool:
        return bool(
            about(invoice)(envelope) and envelope.payload.command_type == "ExtendPackageInvoice"
        )

    await system.producer.send(extend(expires_on - timedelta(days=1)))
    refused = await system.events.wait_for(InvoiceCommandRefused, refusal_of_extension)
    assert refused.payload.reason.startswith("valid_until: ")
    await system.producer.send(
        VoidPackageInvoice(
            patient_id=who, invoice_id=invoice.invoice_id, voided_by="billing:bo", reason="error"
        )
    )
    await system.events.wait_for(PackageInvoiceVoided, about(invoice))
    await system.producer.send(extend(expires_on + timedelta(days=30)))
    void = await system.events.wait_for(
        InvoiceCommandRefused,
        lambda e: refusal_of_extension(e) and e.payload.reason.startswith("invoice_id: "),
    )
    assert "void" in void.payload.reason
    answer = await put(invoice.invoice_id, expires_on + timedelta(days=30))
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["loc"] == ["path", "invoice_id"]
    assert await outbox_count(system, "PackageInvoiceExtended", invoice) == 0
