"""What the matcher's HTTP API answers (its OpenAPI document's response models). The routes
build these bodies as JSON-ready dicts; FastAPI checks each against its model."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from packline_contracts.matching import CandidatePackage
from packline_contracts.types import AppointmentStatus, PatientId
from packline_core.openapi import Answer
from pydantic import Field


class Explanation(Answer):
    """Why an appointment was not linked (R7): each package that covers its fee, and why not."""

    appointment_id: UUID
    appointment_version: int
    summary: str
    candidates: list[CandidatePackage]
    explained_at: datetime


class AppointmentSeen(Answer):
    """An appointment as the matcher's read model knows it."""

    appointment_id: UUID
    version: int
    starts_at: datetime
    status: AppointmentStatus
    hand_unlinked: bool = Field(description="Unassigned by staff: never linked on its own (R8).")


class LineHeld(Answer):
    line_id: UUID
    invoice_id: UUID
    status: Literal[
        "open", "requested", "linked", "used", "forfeited", "expired", "transferred"
    ] = Field(
        description="requested: a link or a booking from the line awaits its answer; expired: "
        "written off unbooked (R18); transferred: moved unbooked to another patient's invoice."
    )
    appointment_id: UUID | None


class PatientLines(Answer):
    """The read model's view of which line holds which appointment."""

    patient_id: PatientId
    lines: list[LineHeld]
