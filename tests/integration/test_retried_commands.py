"""A client that retries a command under a new message id — the same appointment, invoice,
payment or refund — gets the answer it missed: the very event, sent again under its own id (so
the services that applied it skip it), not silence and not a second effect (issue #18)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import pytest
from packline_contracts.appointments import AppointmentBooked
from packline_contracts.client import PacklineConsumer
from packline_contracts.envelope import Message
from packline_contracts.invoices import (
    IssuePackageInvoice,
    PackageInvoiceIssued,
    PackageInvoiceRefunded,
    PaymentRecorded,
    PurchaseChannel,
    RecordPayment,
    RefundPackageInvoice,
)

from tests.clinic import booking, days_ahead, patient
from tests.conftest import ReadEvents, StartService
from tests.helpers import eventually
from tests.system import System, start_system

pytestmark = pytest.mark.infra


@pytest.fixture
async def system(start_service: StartService, producer: Any, read_events: ReadEvents) -> System:
    return await start_system(start_service, producer, read_events)


async def copies(events: PacklineConsumer, message_type: type[Message], message_id: UUID) -> None:
    """Wait until the event with ``message_id`` has been read twice (sent, then sent again)."""

    async def twice() -> bool:
        try:
            await events.wait_for(message_type, lambda e: False, within=0.2)
        except TimeoutError:
            pass
        seen = [e for e in events.received if e.message_id == message_id]
        return len(seen) >= 2

    await eventually(twice, what=f"{message_type.MESSAGE_TYPE} {message_id} to be sent again")


async def test_a_retried_booking_is_answered_with_its_booking_again(system: System) -> None:
    who = patient()
    command = booking(who, days_ahead(3))
    await system.book(command)
    first = await system.events.wait_for(
        AppointmentBooked,
        lambda e: e.payload.appointment.appointment_id == command.appointment_id,
    )
    await system.producer.send(command)  # a new message id, the same appointment
    await copies(system.events, AppointmentBooked, first.message_id)
    rows = await system.calendar.pool.fetchval(
        "SELECT count(*) FROM appointments WHERE appointment_id = $1", command.appointment_id
    )
    assert rows == 1
    # The matcher applied the first copy only: one appointment, still version 1.
    assert (
        await system.matcher.pool.fetchval(
            "SELECT version FROM appointments WHERE appointment_id = $1", command.appointment_id
        )
        == 1
    )


async def test_a_retried_purchase_payment_and_refund_are_answered_again(system: System) -> None:
    who = patient()
    invoice = await system.buy(who, "massage-5x60")
    issued = await system.events.wait_for(
        PackageInvoiceIssued, lambda e: e.payload.invoice_id == invoice.invoice_id
    )
    await system.producer.send(
        IssuePackageInvoice(
            patient_id=who,
            invoice_id=invoice.invoice_id,
            package_id="massage-5x60",
            channel=PurchaseChannel.STAFF,
            issued_by="reception:maria",
            issued_at=datetime.now(UTC),
        )
    )
    await copies(system.events, PackageInvoiceIssued, issued.message_id)

    payment = RecordPayment(
        patient_id=who,
        invoice_id=invoice.invoice_id,
        payment_id=uuid4(),
        amount_cents=40000,
        paid_at=datetime.now(UTC),
        recorded_by="reception:maria",
    )
    await system.producer.send(payment)
    paid = await system.events.wait_for(
        PaymentRecorded, lambda e: e.payload.payment_id == payment.payment_id
    )
    await system.producer.send(payment)
    await copies(system.events, PaymentRecorded, paid.message_id)

    refund = RefundPackageInvoice(
        patient_id=who,
        invoice_id=invoice.invoice_id,
        refund_id=uuid4(),
        amount_cents=40000,
        reason="moved away",
        refunded_by="reception:maria",
    )
    await system.producer.send(refund)
    refunded = await system.events.wait_for(
        PackageInvoiceRefunded, lambda e: e.payload.refund_id == refund.refund_id
    )
    # Fully refunded: a new refund would be refused; the retry is answered with this one.
    await system.producer.send(refund)
    await copies(system.events, PackageInvoiceRefunded, refunded.message_id)
    amounts = await system.invoicing.pool.fetchrow(
        "SELECT paid_cents, refunded_cents FROM package_invoices WHERE invoice_id = $1",
        invoice.invoice_id,
    )
    assert amounts is not None
    assert (amounts["paid_cents"], amounts["refunded_cents"]) == (40000, 40000)
