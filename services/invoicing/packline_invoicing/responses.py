"""What invoicing's HTTP API answers (its OpenAPI document's response models). The routes build
these bodies as JSON-ready dicts; FastAPI checks each against its model."""

from __future__ import annotations

from datetime import datetime
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
