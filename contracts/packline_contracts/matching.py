"""The matcher's explanations (R7): why an appointment with a fee that a package of the patient
covers was not linked to any of its lines."""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar
from uuid import UUID

from pydantic import Field

from packline_contracts.envelope import Kind, PatientMessage
from packline_contracts.topics import MATCHER_EVENTS
from packline_contracts.types import FeeId, Name, PackageId, Reason, Value, Version


class NoMatchCode(StrEnum):
    PRACTITIONER_NOT_ALLOWED = "practitioner_not_allowed"
    LOCATION_NOT_ALLOWED = "location_not_allowed"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    ALL_SESSIONS_BOOKED = "all_sessions_booked"
    UNPAID = "unpaid"
    VOID = "void"
    UNASSIGNED_BY_STAFF = "unassigned_by_staff"
    LINE_REQUESTED_ELSEWHERE = "line_requested_elsewhere"


class CandidatePackage(Value):
    """One package invoice of the patient that covers the fee, and why it could not take it."""

    invoice_id: UUID
    package_id: PackageId
    package_name: Name
    code: NoMatchCode
    reason: Reason = Field(description='In words, e.g. "covers this fee only with Dr A".')


class AppointmentNotMatched(PatientMessage):
    """R7: no line could take this appointment; one explanation per candidate package."""

    TOPIC = MATCHER_EVENTS
    KIND: ClassVar[Kind] = "event"

    appointment_id: UUID
    appointment_version: Version
    fee_ids: list[FeeId] = Field(max_length=20)
    candidates: list[CandidatePackage] = Field(min_length=1)
    summary: Reason
