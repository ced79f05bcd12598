"""The patient directory (R16): who a patient id is, so staff can find patients by name.

The practice's patient-records service publishes ``PatientRegistered`` / ``PatientUpdated`` on
the compacted directory topic itself; a clinic without one sends ``RegisterPatient`` /
``UpdatePatient`` to the calendar, which publishes the same events. Every record carries the
whole entry (an update replaces it; a field left out is cleared), so the topic's latest record
of a patient is all there is to know, and reading it from the start rebuilds the directory.

Everything is keyed by the patient id, so one patient's records stay in order. A booking never
waits for the directory: an appointment of a patient not (yet) in it is booked as before."""

from __future__ import annotations

import re
from typing import Annotated, ClassVar

from pydantic import AfterValidator, Field

from packline_contracts.envelope import Kind, PatientMessage
from packline_contracts.topics import CALENDAR_COMMANDS, PATIENT_DIRECTORY
from packline_contracts.types import Day, LocationId, Name, Value

# One line, no spaces, something@domain.tld: enough to reach someone, not RFC 5322. Control
# characters and lone surrogates are refused as in every other text (see types.py).
_EMAIL_PART = r"[^@\s\x00-\x1F\x7F\uD800-\uDFFF]+"
_EMAIL_PATTERN = rf"^{_EMAIL_PART}@{_EMAIL_PART}\.{_EMAIL_PART}$"
_EMAIL = re.compile(_EMAIL_PATTERN)


def _email(value: str) -> str:
    if not _EMAIL.match(value):
        raise ValueError("must be one e-mail address: name@domain, no spaces")
    return value


Email = Annotated[
    str,
    Field(min_length=5, max_length=254, json_schema_extra={"pattern": _EMAIL_PATTERN}),
    AfterValidator(_email),
]
Phone = Annotated[
    str,
    Field(
        pattern=r"^\+?[0-9][0-9 ()./-]{2,31}$",
        description="Digits, optionally a leading + and spaces, brackets, dots, dashes or "
        "slashes between them; at most 32 characters.",
    ),
]


class PatientContact(Value):
    email: Email | None = None
    phone: Phone | None = None


class Patient(PatientMessage):
    """A patient's directory entry, whole."""

    name: Annotated[Name, Field(description="The full name, as the patient's records hold it.")]
    preferred_name: Name | None = Field(
        default=None, description="What the patient likes to be called; searchable too."
    )
    date_of_birth: Day | None = Field(
        default=None, description="Tells apart patients with the same name."
    )
    contact: PatientContact | None = None
    clinics: list[LocationId] | None = Field(
        default=None,
        max_length=100,
        description="The locations whose staff see this patient (clinic scope, besides where "
        "the patient has appointments or package invoices). Absent or empty: only those.",
    )


class RegisterPatient(Patient):
    """Add a patient to the directory (for clinics without a patient-records service)."""

    TOPIC = CALENDAR_COMMANDS
    KIND: ClassVar[Kind] = "command"


class UpdatePatient(Patient):
    """Replace a patient's directory entry: send every field, one left out is cleared."""

    TOPIC = CALENDAR_COMMANDS
    KIND: ClassVar[Kind] = "command"


class PatientRegistered(Patient):
    """A patient entered the directory (whole entry)."""

    TOPIC = PATIENT_DIRECTORY
    KIND: ClassVar[Kind] = "event"


class PatientUpdated(Patient):
    """A patient's directory entry changed (whole entry; it replaces the earlier one)."""

    TOPIC = PATIENT_DIRECTORY
    KIND: ClassVar[Kind] = "event"
