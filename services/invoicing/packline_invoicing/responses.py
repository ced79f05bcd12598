"""What invoicing's HTTP API answers (its OpenAPI document's response models). The routes build
these bodies as JSON-ready dicts; FastAPI checks each against its model."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal
from uuid import UUID

from packline_contracts.invoices import InvoiceLine, PackageInvoice
from packline_contracts.types import PractitionerId
from packline_core.openapi import Answer
from pydantic import ConfigDict, Field

LocalTime = Annotated[
    str,
    Field(
        description="The same moment as the location's clocks show it, with their UTC offset (R15)."
    ),
]


class LineShown(InvoiceLine):
    """A line as staff see it: its appointment's date or "Unassigned", and its note."""

    model_config = ConfigDict(extra="forbid")

    local_starts_at: LocalTime | None = Field(
        description="The appointment's start at its location; null without an appointment."
    )
    shows: str = Field(description='"Unassigned", or e.g. "linked: Mon 1 March 2027, 09:00".')
    note: str | None = Field(description="Why its last booking was refused or released, say.")


class InvoiceShown(PackageInvoice):
    """A package invoice as staff see it, with its balance in words (R14)."""

    model_config = ConfigDict(extra="forbid")

    lines: list[LineShown]  # type: ignore[assignment]  # each line with what staff see
    balance_text: str = Field(description='e.g. "3 of 5 left, expires 1 March 2027".')
    invoice_number: str = Field(
        description='The number people say, given once when it is issued: e.g. "INV-000123".'
    )


class LineHistoryEntry(Answer):
    """One change of a package line, as invoicing recorded it when it happened."""

    version: int = Field(description="The line's version after the change (the story's order).")
    at: datetime = Field(description="When: the time of the message that changed it.")
    local_at: LocalTime
    happened: str = Field(
        description="booking_requested, booked (the calendar booked the request), linked, moved"
        " (its appointment at a new time), relinked (the same appointment, changed otherwise),"
        " booking_released, unlinked, used, forfeited, expired, extended, transferred."
    )
    status: str = Field(description="The line's status afterwards.")
    appointment_id: UUID | None
    appointment_starts_at: datetime | None
    local_starts_at: LocalTime | None
    practitioner_id: str | None = Field(description="The appointment's practitioner, if known.")
    previous_starts_at: datetime | None = Field(description="A move: when it was before.")
    local_previous_starts_at: LocalTime | None
    valid_until: date | None = Field(description="An extension: the new last day.")
    reason: str | None = Field(
        description="Why: an unlink's reason (cancelled, deleted, no_show, no_longer_fits,"
        " unassigned_by_staff, invoice_voided), a forfeit's, a link's rule, an extension's."
    )
    note: str | None = Field(description="What the change left on the line (who released it).")
    by_staff: str | None = Field(description="Who, when the change says (a staff id).")
    message_id: UUID = Field(description="The message that changed it (or an id of the change).")


class Clash(Answer):
    appointment_id: UUID
    starts_at: datetime
    ends_at: datetime
    local_starts_at: LocalTime | None = Field(
        default=None, description="Only when the line has a location."
    )


class Availability(Answer):
    """Check Availability for the line, as the calendar answers it."""

    available: bool
    practitioner_id: PractitionerId
    starts_at: datetime
    ends_at: datetime
    local_starts_at: LocalTime | None = Field(
        default=None, description="Only when the line has a location."
    )
    local_ends_at: LocalTime | None = Field(
        default=None, description="Only when the line has a location."
    )
    clash: Clash | None = Field(default=None, description="Only when it is taken.")


class BookingRequested(Answer):
    """Save was accepted: the line shows "booking requested" until the calendar answers."""

    status: Literal["booking_requested"]
    appointment_id: UUID
    invoice_id: UUID
    line_id: UUID


class LineOpened(Answer):
    """The line is open ("Unassigned") again."""

    status: Literal["open"]
    invoice_id: UUID
    line_id: UUID


class RequestReleased(LineOpened):
    """The booking request is released: the line is open again, with the note on it."""

    released_appointment_id: UUID
    note: str
