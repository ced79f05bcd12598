"""What the calendar's HTTP API answers (its OpenAPI document's response models). The routes
build these bodies as JSON-ready dicts; FastAPI checks each against its model."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal
from uuid import UUID

from packline_contracts.types import (
    Appointment,
    Balance,
    FeeId,
    LocationId,
    PackageId,
    PatientId,
    PractitionerId,
)
from packline_core.openapi import Answer
from pydantic import ConfigDict, Field

LocalTime = Annotated[
    str,
    Field(
        description="The same moment as the location's clocks show it, with their UTC offset (R15)."
    ),
]


class PackageNote(Answer):
    """The package an appointment redeems, as the appointment panel shows it (R4)."""

    state: Literal["linked", "used", "forfeited"]
    invoice_id: UUID
    line_id: UUID
    package_id: PackageId
    package_name: str
    session_number: int | None = Field(
        description="This is session N of balance.total; for a forfeited session, the number it "
        "was linked as, or null when the calendar never saw that link."
    )
    balance: Balance
    text: str = Field(description='e.g. "5 x 60-min massage: session 2 of 5, 3 left".')


class AppointmentShown(Appointment):
    """An appointment with its local start and end, its patient's name and its package note."""

    model_config = ConfigDict(extra="forbid")

    local_starts_at: LocalTime
    local_ends_at: LocalTime
    patient_name: str | None = Field(description="Null until the patient directory has it.")
    package: PackageNote | None = Field(description="Null when it redeems no package line.")


class FeeShown(Answer):
    fee_id: FeeId
    name: str
    duration_minutes: int


class PractitionerShown(Answer):
    practitioner_id: PractitionerId
    name: str


class LocationShown(Answer):
    location_id: LocationId
    name: str
    time_zone: str


class Directory(Answer):
    practitioners: list[PractitionerShown]
    locations: list[LocationShown]


class Clash(Answer):
    appointment_id: UUID
    starts_at: datetime
    ends_at: datetime
    local_starts_at: LocalTime | None = Field(
        default=None, description="Only when the question named a location."
    )


class Availability(Answer):
    """Check Availability's answer: free, or taken and by which appointment."""

    available: bool
    practitioner_id: PractitionerId
    starts_at: datetime
    ends_at: datetime
    local_starts_at: LocalTime | None = Field(
        default=None, description="Only when the question named a location."
    )
    local_ends_at: LocalTime | None = Field(
        default=None, description="Only when the question named a location."
    )
    clash: Clash | None = Field(default=None, description="Only when it is taken.")


class PatientFound(Answer):
    patient_id: PatientId
    name: str
    preferred_name: str | None
    date_of_birth: date | None


class PatientPage(Answer):
    patients: list[PatientFound]
    next_cursor: str | None = Field(description="The following page's cursor; null on the last.")
    next: str | None = Field(description="The following page's URL; null on the last.")


class Contact(Answer):
    email: str | None
    phone: str | None


class PatientEntry(Answer):
    patient_id: PatientId
    name: str
    preferred_name: str | None
    date_of_birth: date | None
    contact: Contact | None
    clinics: list[str] = Field(description="The locations the directory says see this patient.")
    recorded_at: datetime
