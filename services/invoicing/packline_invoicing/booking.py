"""R3, book from the invoice: staff edit a line (date, time, optional duration, "Add appointment:
Yes"), Check Availability asks the calendar, Save asks the calendar to book it with the line's
practitioner and location. The line shows "booking requested" until the calendar answers; then
the appointment date (the line is linked) or the refusal's reason (the line stays open)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import httpx
from fastapi import HTTPException
from packline_contracts.appointments import AppointmentBooked, BookAppointment, BookingRefused
from packline_contracts.envelope import Envelope
from packline_contracts.ids import derived_id
from packline_contracts.invoices import (
    LineBookingRefused,
    LineBookingRequested,
    UnassignInvoiceLine,
)
from packline_contracts.types import (
    Actor,
    BookingSource,
    Instant,
    InvoiceLineRef,
    LocationId,
    Minutes,
    PractitionerId,
)
from packline_core.consumer import MessageConsumer
from packline_core.outbox import Transaction
from packline_core.service import Service
from pydantic import BaseModel, Field, SecretStr

from packline_invoicing import commands, invoices


class LineBooking(BaseModel):
    """The Edit Invoice Line pop-up with "Add appointment: Yes"."""

    starts_at: Instant = Field(description="Date and time of the appointment.")
    duration_minutes: Minutes | None = None
    practitioner_id: PractitionerId | None = Field(
        default=None, description="Needed when the line allows several."
    )
    location_id: LocationId | None = Field(
        default=None, description="Needed when the line allows several."
    )
    booked_by: Actor


def only(allowed: list[str] | None, chosen: str | None, what: str) -> str:
    if chosen is not None:
        if allowed is not None and chosen not in allowed:
            raise HTTPException(422, f"this line is only for {what} {', '.join(allowed)}")
        return chosen
    if allowed is not None and len(allowed) == 1:
        return allowed[0]
    raise HTTPException(
        422, f"choose a {what}: the line allows {'any' if allowed is None else ', '.join(allowed)}"
    )


def register_booking(service: Service, calendar_url: str, calendar_token: SecretStr | None) -> None:
    headers = (
        {"Authorization": f"Bearer {calendar_token.get_secret_value()}"} if calendar_token else {}
    )

    http = service.http

    async def open_line(conn: Any, invoice_id: UUID, line_id: UUID, *, lock: bool = False) -> Any:
        line = await invoices.get_line(conn, line_id, for_update=lock)
        if line is None or line["invoice_id"] != invoice_id:
            raise HTTPException(404, f"no line {line_id} on invoice {invoice_id}")
        return line

    @http.get("/invoices/{invoice_id}/lines/{line_id}/availability", tags=["book from the invoice"])
    async def check_availability(
        invoice_id: UUID,
        line_id: UUID,
        starts_at: Instant,
        duration_minutes: Minutes | None = None,
        practitioner_id: PractitionerId | None = None,
    ) -> dict[str, Any]:
        """Check Availability for this line's practitioner (answered by the calendar)."""
        async with service.pool.acquire() as conn:
            line = await open_line(conn, invoice_id, line_id)
            duration = duration_minutes or await fee_duration(conn, line["fee_id"])
        practitioner = only(line["practitioner_ids"], practitioner_id, "practitioner")
        async with httpx.AsyncClient(base_url=calendar_url, headers=headers, timeout=5) as client:
            answer = await client.get(
                "/availability",
                params={
                    "practitioner_id": practitioner,
                    "starts_at": starts_at.isoformat(),
                    "duration_minutes": duration,
                },
            )
        if answer.status_code != 200:
            raise HTTPException(
                502 if answer.status_code >= 500 else answer.status_code, f"calendar: {answer.text}"
            )
        return dict(answer.json())

    @http.put(
        "/invoices/{invoice_id}/lines/{line_id}/appointment",
        status_code=202,
        tags=["book from the invoice"],
    )
    async def book_from_line(
        invoice_id: UUID, line_id: UUID, booking: LineBooking
    ) -> dict[str, Any]:
        """Save with "Add appointment: Yes": asks the calendar to book; answers at once."""
        async with service.transaction() as tx:
            line = await open_line(tx.conn, invoice_id, line_id, lock=True)
            if line["status"] != "open":
                raise HTTPException(409, f"the line is {line['status']}")
            invoice = await invoices.get_invoice(tx.conn, invoice_id)
            assert invoice is not None
            if not invoices.is_redeemable(invoice):
                raise HTTPException(409, "the invoice is void, refunded or not paid yet")
            day = booking.starts_at.date()
            if not line["valid_from"] <= day <= line["valid_until"]:
                raise HTTPException(
                    422,
                    f"outside validity: {line['valid_from']:%d %b %Y}"
                    f" to {line['valid_until']:%d %b %Y}",
                )
            practitioner = only(line["practitioner_ids"], booking.practitioner_id, "practitioner")
            location = only(line["location_ids"], booking.location_id, "location")
            # Named by the line and its version: saving twice books one appointment.
            appointment_id = derived_id("booking", line_id, line["version"])
            await tx.conn.execute(
                "UPDATE invoice_lines SET status = 'booking_requested', appointment_id = $2,"
                " appointment_starts_at = $3, note = NULL, version = version + 1"
                " WHERE line_id = $1",
                line_id,
                appointment_id,
                booking.starts_at,
            )
            tx.publish(
                BookAppointment(
                    patient_id=line["patient_id"],
                    appointment_id=appointment_id,
                    practitioner_id=practitioner,
                    location_id=location,
                    starts_at=booking.starts_at,
                    duration_minutes=booking.duration_minutes,
                    fee_ids=[line["fee_id"]],
                    source=BookingSource.INVOICE,
                    invoice_line=InvoiceLineRef(invoice_id=invoice_id, line_id=line_id),
                    booked_by=booking.booked_by,
                )
            )
            tx.publish(
                await invoices.line_event(
                    tx.conn,
                    LineBookingRequested,
                    line_id,
                    appointment_id=appointment_id,
                    starts_at=booking.starts_at,
                )
            )
        return {
            "status": "booking_requested",
            "appointment_id": appointment_id,
            "invoice_id": invoice_id,
            "line_id": line_id,
        }

    @http.delete(
        "/invoices/{invoice_id}/lines/{line_id}/appointment", tags=["book from the invoice"]
    )
    async def unassign_line(
        invoice_id: UUID, line_id: UUID, unassigned_by: Actor
    ) -> dict[str, Any]:
        """R8: the X, then "Unassigned", in one action. The appointment stays in the calendar."""
        async with service.transaction() as tx:
            line = await open_line(tx.conn, invoice_id, line_id)
            command = UnassignInvoiceLine(
                patient_id=line["patient_id"],
                invoice_id=invoice_id,
                line_id=line_id,
                unassigned_by=unassigned_by,
            )
            if line["status"] != "linked":
                raise HTTPException(409, f"the line is {line['status']}, not linked")
            await commands.unassign(tx, command)
        return {"status": "open", "invoice_id": invoice_id, "line_id": line_id}


async def fee_duration(conn: Any, fee_id: str) -> int:
    minutes = await conn.fetchval("SELECT duration_minutes FROM fees WHERE fee_id = $1", fee_id)
    if minutes is None:
        raise HTTPException(409, f"fee {fee_id} is not in the catalogue")
    return int(minutes)


def register_booking_results(consumer: MessageConsumer) -> None:
    @consumer.handles(AppointmentBooked)
    async def booked(tx: Transaction, envelope: Envelope[AppointmentBooked]) -> None:
        appointment = envelope.payload.appointment
        ref = appointment.invoice_line
        if ref is None:
            return  # booked in the calendar or online: the matcher decides
        line = await invoices.get_line(tx.conn, ref.line_id, for_update=True)
        if line is None or line["appointment_id"] != appointment.appointment_id:
            return  # the line was released meanwhile; the matcher will look for another
        await commands.apply_link(
            tx, ref.invoice_id, ref.line_id, appointment, "booked from this invoice line"
        )

    @consumer.handles(BookingRefused)
    async def refused(tx: Transaction, envelope: Envelope[BookingRefused]) -> None:
        event = envelope.payload
        ref = event.invoice_line
        if ref is None:
            return
        line = await invoices.get_line(tx.conn, ref.line_id, for_update=True)
        if line is None or line["appointment_id"] != event.appointment_id:
            return
        await tx.conn.execute(
            "UPDATE invoice_lines SET status = 'open', appointment_id = NULL,"
            " appointment_starts_at = NULL, note = $2, version = version + 1 WHERE line_id = $1",
            ref.line_id,
            event.reason,
        )
        tx.publish(
            await invoices.line_event(
                tx.conn,
                LineBookingRefused,
                ref.line_id,
                appointment_id=event.appointment_id,
                reason=event.reason,
            )
        )
