"""Value types shared by many messages, in the clinic's words."""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Annotated, Self
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

# Ids of things Packline does not own (patients, practitioners, locations, fees, packages) are the
# clinic system's own strings. Ids of things Packline creates are UUIDs chosen by the caller, so a
# retried command names the same appointment or invoice.
ExternalId = Annotated[
    str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]*$")
]
PatientId = ExternalId
PractitionerId = ExternalId
LocationId = ExternalId
FeeId = ExternalId
PackageId = ExternalId
Actor = Annotated[str, Field(min_length=1, max_length=128, description="Who did it.")]
Minutes = Annotated[int, Field(gt=0, le=24 * 60)]
Cents = Annotated[int, Field(ge=0)]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
Reason = Annotated[str, Field(min_length=1, max_length=500)]


class Value(BaseModel):
    """Base of every value inside a message: immutable; unknown fields are ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class Restriction(Value):
    """Practitioners or locations a package can be redeemed with. ``None`` ids means any."""

    ids: list[ExternalId] | None = Field(
        default=None, description="The allowed ids; null means any.", min_length=1
    )

    def allows(self, candidate: str) -> bool:
        return self.ids is None or candidate in self.ids


class Validity(Value):
    """How long a package can be redeemed: days from purchase, or until a fixed date."""

    days: Annotated[int, Field(gt=0, le=3650)] | None = None
    until: date | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.days is None) == (self.until is None):
            raise ValueError("give exactly one of 'days' and 'until'")
        return self


class LateCancelPolicy(Value):
    """R9: a cancellation inside ``forfeit_within_hours`` (or a no-show) uses up the session."""

    forfeit_within_hours: Annotated[int, Field(gt=0, le=720)] | None = None
    no_show_forfeits: bool = False


class PackageItem(Value):
    fee_id: FeeId
    count: Annotated[int, Field(gt=0, le=1000)]


class AppointmentStatus(StrEnum):
    BOOKED = "booked"
    ARRIVED = "arrived"
    COMPLETED = "completed"
    NO_SHOW = "no_show"
    CANCELLED = "cancelled"
    DELETED = "deleted"


class BookingSource(StrEnum):
    STAFF = "staff"
    ONLINE = "online"
    INVOICE = "invoice"


class InvoiceLineRef(Value):
    """One line of one package invoice."""

    invoice_id: UUID
    line_id: UUID


class Appointment(Value):
    """An appointment as the calendar knows it after a change: enough to decide a link."""

    appointment_id: UUID
    version: Annotated[int, Field(ge=1, description="Increases with every change.")]
    patient_id: PatientId
    practitioner_id: PractitionerId
    location_id: LocationId
    starts_at: AwareDatetime
    duration_minutes: Minutes
    fee_ids: list[FeeId] = Field(min_length=1, max_length=20)
    status: AppointmentStatus
    source: BookingSource
    invoice_line: InvoiceLineRef | None = Field(
        default=None, description="The line it was booked from (source = invoice)."
    )


class Balance(Value):
    """R14: sessions of one package invoice. total = booked + used + remaining."""

    total: Annotated[int, Field(ge=0)]
    booked: Annotated[int, Field(ge=0, description="Linked to upcoming appointments.")]
    used: Annotated[int, Field(ge=0, description="Attended, past, or forfeited.")]
    remaining: Annotated[int, Field(ge=0, description="Open lines, free to book.")]
    expires_on: date | None = Field(default=None, description="Last day it can be redeemed.")

    @model_validator(mode="after")
    def _adds_up(self) -> Self:
        if self.booked + self.used + self.remaining != self.total:
            raise ValueError("booked + used + remaining must equal total")
        return self
