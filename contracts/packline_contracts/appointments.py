"""Appointments: the commands the calendar takes (from staff front ends, online bookings and
invoicing) and the events it publishes. Every one is about a patient and keyed by the patient id.

Each command answers with an event: the change's event (``AppointmentBooked``, ...) or a refusal
(``BookingRefused``, ``AppointmentChangeRefused``) with a reason, so a flow waiting on it can finish
either way. The caller chooses ``appointment_id`` when booking, so a retried booking is the same
appointment."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar, Literal
from uuid import UUID

from pydantic import Field

from packline_contracts.envelope import Kind, PatientMessage
from packline_contracts.topics import CALENDAR_COMMANDS, CALENDAR_EVENTS
from packline_contracts.types import (
    Actor,
    Appointment,
    BookingSource,
    FeeId,
    Instant,
    InvoiceLineRef,
    LocationId,
    Minutes,
    OneLine,
    PractitionerId,
    Reason,
)

# --- commands ---------------------------------------------------------------------------------


class AppointmentCommand(PatientMessage):
    ABSTRACT = True
    TOPIC = CALENDAR_COMMANDS
    KIND: ClassVar[Kind] = "command"

    appointment_id: UUID


class BookAppointment(AppointmentCommand):
    """Book an appointment (R3 from an invoice line, R4 by staff, R5 online)."""

    practitioner_id: PractitionerId
    location_id: LocationId
    starts_at: Instant
    duration_minutes: Minutes | None = Field(
        default=None, description="Defaults to the first fee's duration."
    )
    fee_ids: list[FeeId] = Field(min_length=1, max_length=20)
    source: BookingSource
    invoice_line: InvoiceLineRef | None = Field(
        default=None, description="Required when source = invoice: the line it redeems."
    )
    booked_by: Actor


class RescheduleAppointment(AppointmentCommand):
    """Move an appointment (R10: it keeps its package link)."""

    starts_at: Instant
    duration_minutes: Minutes | None = None
    requested_by: Actor


class ChangeAppointment(AppointmentCommand):
    """Change practitioner, location or fees (R10: the link is checked again). Unset: unchanged."""

    practitioner_id: PractitionerId | None = None
    location_id: LocationId | None = None
    fee_ids: list[FeeId] | None = Field(default=None, min_length=1, max_length=20)
    requested_by: Actor


class CancelAppointment(AppointmentCommand):
    """Cancel (R9). ``cancelled_at`` is when the patient cancelled, for the late-cancel policy."""

    cancelled_by: Actor
    cancelled_at: Instant
    reason: Reason | None = None


class DeleteAppointment(AppointmentCommand):
    """Delete an appointment made in error (R9: its line is released)."""

    deleted_by: Actor


class Attendance(StrEnum):
    ARRIVED = "arrived"
    COMPLETED = "completed"
    NO_SHOW = "no_show"


class RecordAttendance(AppointmentCommand):
    """Mark an appointment arrived, completed or no-show (R9: a no-show may forfeit)."""

    attendance: Attendance
    recorded_by: Actor


# --- events -----------------------------------------------------------------------------------


class AppointmentEvent(PatientMessage):
    """An appointment after a change, with its new version: the matcher decides from this alone."""

    ABSTRACT = True

    TOPIC = CALENDAR_EVENTS
    KIND: ClassVar[Kind] = "event"

    appointment: Appointment


class AppointmentBooked(AppointmentEvent):
    """A booking succeeded (the answer to BookAppointment)."""


class AppointmentRescheduled(AppointmentEvent):
    previous_starts_at: Instant


class AppointmentChanged(AppointmentEvent):
    changed: list[Literal["practitioner_id", "location_id", "fee_ids"]] = Field(min_length=1)


class AppointmentCancelled(AppointmentEvent):
    cancelled_by: Actor
    cancelled_at: Instant
    reason: Reason | None = None


class AppointmentDeleted(AppointmentEvent):
    deleted_by: Actor


class AttendanceRecorded(AppointmentEvent):
    """Arrived, completed or no-show (the appointment's status says which)."""


class RefusalCode(StrEnum):
    SLOT_TAKEN = "slot_taken"
    IN_THE_PAST = "in_the_past"
    UNKNOWN_FEE = "unknown_fee"
    UNKNOWN_PRACTITIONER = "unknown_practitioner"
    UNKNOWN_LOCATION = "unknown_location"
    UNKNOWN_APPOINTMENT = "unknown_appointment"
    NOT_CHANGEABLE = "not_changeable"
    INVALID = "invalid"


class BookingRefused(PatientMessage):
    """A booking could not be made (the answer to BookAppointment). Nothing was booked."""

    TOPIC = CALENDAR_EVENTS
    KIND: ClassVar[Kind] = "event"

    appointment_id: UUID
    code: RefusalCode
    reason: Reason
    clashing_appointment_id: UUID | None = None
    invoice_line: InvoiceLineRef | None = None


class AppointmentChangeRefused(PatientMessage):
    """A reschedule, change, cancel, delete or attendance could not be applied."""

    TOPIC = CALENDAR_EVENTS
    KIND: ClassVar[Kind] = "event"

    appointment_id: UUID
    command_type: Annotated[OneLine, Field(min_length=1, max_length=100)]
    code: RefusalCode
    reason: Reason
    clashing_appointment_id: UUID | None = None
