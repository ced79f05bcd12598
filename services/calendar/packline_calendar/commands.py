"""The calendar's command handlers: every command is answered by an event, its change's or a
refusal with the reason, so whoever sent it can finish either way."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any
from uuid import UUID

import asyncpg
from packline_contracts.appointments import (
    AppointmentBooked,
    AppointmentCancelled,
    AppointmentChanged,
    AppointmentChangeRefused,
    AppointmentCommand,
    AppointmentDeleted,
    AppointmentRescheduled,
    Attendance,
    AttendanceRecorded,
    BookAppointment,
    BookingRefused,
    CancelAppointment,
    ChangeAppointment,
    DeleteAppointment,
    RecordAttendance,
    RefusalCode,
    RescheduleAppointment,
)
from packline_contracts.catalogue import (
    DefineLocation,
    DefinePractitioner,
    LocationDefined,
    PractitionerDefined,
)
from packline_contracts.envelope import Envelope
from packline_contracts.ids import derived_id
from packline_contracts.types import Appointment, AppointmentStatus, PatientId
from packline_core.consumer import MessageConsumer
from packline_core.outbox import Transaction
from pydantic import TypeAdapter, ValidationError

from packline_calendar import appointments
from packline_calendar.rules import (
    Refusal,
    check_booking,
    check_changeable,
    clash_reason,
    default_duration,
    request_time,
)

# The calendar's clock; tests may replace it. Rules are given its reading, never read it.
clock: Callable[[], datetime] = partial(datetime.now, UTC)


def register_commands(consumer: MessageConsumer) -> None:
    consumer.handles(DefinePractitioner)(define_practitioner)
    consumer.handles(DefineLocation)(define_location)
    consumer.handles(BookAppointment)(book)
    consumer.handles(RescheduleAppointment)(reschedule)
    consumer.handles(ChangeAppointment)(change)
    consumer.handles(CancelAppointment)(cancel)
    consumer.handles(DeleteAppointment)(delete)
    consumer.handles(RecordAttendance)(record_attendance)
    consumer.answer_refused = answer_refused_command


async def define_practitioner(tx: Transaction, envelope: Envelope[DefinePractitioner]) -> None:
    command = envelope.payload
    await tx.conn.execute(
        "INSERT INTO practitioners (practitioner_id, name) VALUES ($1, $2)"
        " ON CONFLICT (practitioner_id) DO UPDATE SET name = $2, updated_at = now()",
        command.practitioner_id,
        command.name,
    )
    tx.publish(PractitionerDefined(practitioner_id=command.practitioner_id, name=command.name))


async def define_location(tx: Transaction, envelope: Envelope[DefineLocation]) -> None:
    command = envelope.payload
    await tx.conn.execute(
        "INSERT INTO locations (location_id, name, time_zone) VALUES ($1, $2, $3)"
        " ON CONFLICT (location_id) DO UPDATE SET name = $2, time_zone = $3, updated_at = now()",
        command.location_id,
        command.name,
        command.time_zone,
    )
    tx.publish(
        LocationDefined(
            location_id=command.location_id, name=command.name, time_zone=command.time_zone
        )
    )


# --- booking ----------------------------------------------------------------------------------


async def book(tx: Transaction, envelope: Envelope[BookAppointment]) -> None:
    command = envelope.payload
    # One round trip for every check, one for the insert: this is the calendar's hot path.
    context = await appointments.booking_context(
        tx.conn,
        command.appointment_id,
        command.practitioner_id,
        command.location_id,
        command.fee_ids,
    )
    if context.existing_patient_id is not None:
        # The same booking sent again under a new message id: its answer again, the very event
        # (whoever applied it skips it by id; the sender sees it).
        same = (context.existing_patient_id, context.existing_starts_at) == (
            command.patient_id,
            command.starts_at,
        )
        if not same:
            refuse_booking(tx, command, Refusal(RefusalCode.INVALID, "appointment id in use"))
        else:
            await tx.resend(booked_id(command.appointment_id))
        return
    refusal = directory_refusal(command, context)
    if refusal or context.location_zone is None:
        return refuse_booking(tx, command, refusal or unknown_location(command.location_id))
    fees = context.fee_durations
    refusal = check_booking(
        time_zone=context.location_zone,
        starts_at=command.starts_at,
        requested_at=request_time(envelope.occurred_at, clock()),
        fee_ids=command.fee_ids,
        known_fees=fees,
        source=command.source,
        invoice_line=command.invoice_line,
    )
    if refusal:
        return refuse_booking(tx, command, refusal)
    appointment = Appointment(
        appointment_id=command.appointment_id,
        version=1,
        patient_id=command.patient_id,
        practitioner_id=command.practitioner_id,
        location_id=command.location_id,
        starts_at=command.starts_at,
        duration_minutes=command.duration_minutes or default_duration(command.fee_ids, fees),
        fee_ids=command.fee_ids,
        status=AppointmentStatus.BOOKED,
        source=command.source,
        invoice_line=command.invoice_line,
        time_zone=context.location_zone,
    )
    if not await appointments.insert_unless_taken(tx.conn, appointment, command.booked_by):
        refusal, clashing = await describe_clash(tx, appointment)
        return refuse_booking(tx, command, refusal, clashing)
    tx.publish(
        AppointmentBooked(patient_id=command.patient_id, appointment=appointment),
        message_id=booked_id(command.appointment_id),
    )


def booked_id(appointment_id: UUID) -> UUID:
    """AppointmentBooked's message id: one per appointment, so a retried booking can be
    answered with it again."""
    return derived_id("answer", "booked", appointment_id)


def directory_refusal(
    command: BookAppointment, context: appointments.BookingContext
) -> Refusal | None:
    if not context.practitioner_known:
        practitioner = command.practitioner_id
        return Refusal(RefusalCode.UNKNOWN_PRACTITIONER, f"unknown practitioner {practitioner}")
    if context.location_zone is None:
        return unknown_location(command.location_id)
    return None


def unknown_location(location_id: str) -> Refusal:
    return Refusal(RefusalCode.UNKNOWN_LOCATION, f"unknown location {location_id}")


def refuse_booking(
    tx: Transaction, command: BookAppointment, refusal: Refusal, clashing: object = None
) -> None:
    tx.publish(
        BookingRefused(
            patient_id=command.patient_id,
            appointment_id=command.appointment_id,
            code=refusal.code,
            reason=refusal.reason,
            clashing_appointment_id=clashing,
            invoice_line=command.invoice_line,
        )
    )


async def unknown_directory_entry(
    tx: Transaction, practitioner_id: str | None, location_id: str | None
) -> Refusal | None:
    if practitioner_id and not await appointments.known(
        tx.conn, "practitioners", "practitioner_id", practitioner_id
    ):
        return Refusal(RefusalCode.UNKNOWN_PRACTITIONER, f"unknown practitioner {practitioner_id}")
    if location_id and not await appointments.known(
        tx.conn, "locations", "location_id", location_id
    ):
        return Refusal(RefusalCode.UNKNOWN_LOCATION, f"unknown location {location_id}")
    return None


async def write_unless_clash(
    tx: Transaction, appointment: Appointment, write: Callable[[], Awaitable[None]]
) -> tuple[Refusal, object] | None:
    """Write; if the practitioner's time is taken (the database's exclusion constraint), say by
    which appointment. The savepoint keeps the rest of the batch's transaction usable."""
    try:
        async with tx.conn.transaction():
            await write()
    except asyncpg.ExclusionViolationError:
        return await describe_clash(tx, appointment)
    return None


async def describe_clash(tx: Transaction, appointment: Appointment) -> tuple[Refusal, object]:
    """SLOT_TAKEN, naming the appointment that holds the practitioner's time."""
    ends = appointment.starts_at + timedelta(minutes=appointment.duration_minutes)
    other = await appointments.clashing(
        tx.conn,
        appointment.practitioner_id,
        appointment.starts_at,
        ends,
        ignoring=appointment.appointment_id,
    )
    starts_at, ends_at = (
        (other["starts_at"], other["ends_at"]) if other else (appointment.starts_at, ends)
    )
    name = await tx.conn.fetchval(
        "SELECT name FROM practitioners WHERE practitioner_id = $1", appointment.practitioner_id
    )
    reason = clash_reason(
        name or appointment.practitioner_id, starts_at, ends_at, appointment.time_zone
    )
    return Refusal(RefusalCode.SLOT_TAKEN, reason), other["appointment_id"] if other else None


# --- changes ----------------------------------------------------------------------------------


async def changeable(
    tx: Transaction, command: AppointmentCommand, action: str
) -> Appointment | None:
    """The appointment, locked, if ``action`` may be applied to it; otherwise answers the
    refusal and returns None."""
    appointment = await appointments.get(tx.conn, command.appointment_id, for_update=True)
    if appointment is None or appointment.patient_id != command.patient_id:
        refuse_change(
            tx,
            command,
            Refusal(
                RefusalCode.UNKNOWN_APPOINTMENT,
                f"no appointment {command.appointment_id} of this patient",
            ),
        )
        return None
    refusal = check_changeable(appointment.status, action)
    if refusal:
        refuse_change(tx, command, refusal)
        return None
    return appointment


def refuse_change(
    tx: Transaction, command: AppointmentCommand, refusal: Refusal, clashing: object = None
) -> None:
    tx.publish(
        AppointmentChangeRefused(
            patient_id=command.patient_id,
            appointment_id=command.appointment_id,
            command_type=command.MESSAGE_TYPE,
            code=refusal.code,
            reason=refusal.reason,
            clashing_appointment_id=clashing,
        )
    )


async def reschedule(tx: Transaction, envelope: Envelope[RescheduleAppointment]) -> None:
    command = envelope.payload
    current = await changeable(tx, command, "reschedule")
    if current is None:
        return
    if command.starts_at <= request_time(envelope.occurred_at, clock()):
        return refuse_change(
            tx,
            command,
            Refusal(RefusalCode.IN_THE_PAST, "cannot move an appointment into the past"),
        )
    moved = current.model_copy(
        update={
            "starts_at": command.starts_at,
            "duration_minutes": command.duration_minutes or current.duration_minutes,
            "version": current.version + 1,
        }
    )
    clash = await write_unless_clash(tx, moved, lambda: appointments.update(tx.conn, moved))
    if clash:
        return refuse_change(tx, command, clash[0], clash[1])
    tx.publish(
        AppointmentRescheduled(
            patient_id=command.patient_id, appointment=moved, previous_starts_at=current.starts_at
        )
    )


async def change(tx: Transaction, envelope: Envelope[ChangeAppointment]) -> None:
    command = envelope.payload
    current = await changeable(tx, command, "change")
    if current is None:
        return
    wanted = {
        "practitioner_id": command.practitioner_id,
        "location_id": command.location_id,
        "fee_ids": command.fee_ids,
    }
    changed = {k: v for k, v in wanted.items() if v is not None and v != getattr(current, k)}
    if not changed:
        return refuse_change(tx, command, Refusal(RefusalCode.INVALID, "nothing to change"))
    refusal = await unknown_directory_entry(
        tx,
        command.practitioner_id if "practitioner_id" in changed else None,
        command.location_id if "location_id" in changed else None,
    )
    moved_to: dict[str, Any] = {}
    if refusal is None and command.location_id and "location_id" in changed:
        # Its days are judged where it now is (R15).
        zone = await appointments.location_zone(tx.conn, command.location_id)
        moved_to = {"time_zone": zone}
    if refusal is None and "fee_ids" in changed:
        fees = await appointments.fee_durations(tx.conn, command.fee_ids or [])
        unknown = [fee for fee in command.fee_ids or [] if fee not in fees]
        if unknown:
            refusal = Refusal(RefusalCode.UNKNOWN_FEE, f"unknown fee(s): {', '.join(unknown)}")
    if refusal:
        return refuse_change(tx, command, refusal)
    updated = current.model_copy(update={**changed, **moved_to, "version": current.version + 1})
    clash = await write_unless_clash(tx, updated, lambda: appointments.update(tx.conn, updated))
    if clash:
        return refuse_change(tx, command, clash[0], clash[1])
    tx.publish(
        AppointmentChanged(
            patient_id=command.patient_id,
            appointment=updated,
            changed=sorted(changed),
        )
    )


async def cancel(tx: Transaction, envelope: Envelope[CancelAppointment]) -> None:
    command = envelope.payload
    current = await changeable(tx, command, "cancel")
    if current is None:
        return
    cancelled = current.model_copy(
        update={"status": AppointmentStatus.CANCELLED, "version": current.version + 1}
    )
    await appointments.update(tx.conn, cancelled)
    tx.publish(
        AppointmentCancelled(
            patient_id=command.patient_id,
            appointment=cancelled,
            cancelled_by=command.cancelled_by,
            cancelled_at=command.cancelled_at,
            reason=command.reason,
        )
    )


async def delete(tx: Transaction, envelope: Envelope[DeleteAppointment]) -> None:
    command = envelope.payload
    current = await appointments.get(tx.conn, command.appointment_id, for_update=True)
    if current is None or current.patient_id != command.patient_id:
        return refuse_change(
            tx,
            command,
            Refusal(
                RefusalCode.UNKNOWN_APPOINTMENT,
                f"no appointment {command.appointment_id} of this patient",
            ),
        )
    if current.status == AppointmentStatus.DELETED:
        return refuse_change(
            tx, command, Refusal(RefusalCode.NOT_CHANGEABLE, "the appointment is already deleted")
        )
    deleted = current.model_copy(
        update={"status": AppointmentStatus.DELETED, "version": current.version + 1}
    )
    await appointments.update(tx.conn, deleted)
    tx.publish(
        AppointmentDeleted(
            patient_id=command.patient_id, appointment=deleted, deleted_by=command.deleted_by
        )
    )


ATTENDANCE_STATUS = {
    Attendance.ARRIVED: AppointmentStatus.ARRIVED,
    Attendance.COMPLETED: AppointmentStatus.COMPLETED,
    Attendance.NO_SHOW: AppointmentStatus.NO_SHOW,
}


async def record_attendance(tx: Transaction, envelope: Envelope[RecordAttendance]) -> None:
    command = envelope.payload
    current = await changeable(tx, command, "record attendance for")
    if current is None:
        return
    updated = current.model_copy(
        update={"status": ATTENDANCE_STATUS[command.attendance], "version": current.version + 1}
    )
    await appointments.update(tx.conn, updated)
    tx.publish(AttendanceRecorded(patient_id=command.patient_id, appointment=updated))


async def answer_refused_command(tx: Transaction, outline: dict[str, Any], why: str) -> None:
    """A command that cannot be applied (malformed, or holding a value the database cannot
    store) still gets an answer when it says which patient and appointment it is about: its
    sender is waiting for one. (It is also dead-lettered.)"""
    payload = outline.get("payload")
    if not isinstance(payload, dict):
        return
    try:
        patient_id = TypeAdapter(PatientId).validate_python(payload.get("patient_id"))
        appointment_id = UUID(str(payload.get("appointment_id")))
    except (ValidationError, ValueError):
        return
    reason = f"{outline.get('message_type')} {why}"[:500]
    if outline.get("message_type") == BookAppointment.MESSAGE_TYPE:
        tx.publish(
            BookingRefused(
                patient_id=patient_id,
                appointment_id=appointment_id,
                code=RefusalCode.INVALID,
                reason=reason,
            )
        )
    elif outline.get("message_type") in CHANGE_COMMANDS:
        tx.publish(
            AppointmentChangeRefused(
                patient_id=patient_id,
                appointment_id=appointment_id,
                command_type=str(outline["message_type"]),
                code=RefusalCode.INVALID,
                reason=reason,
            )
        )


CHANGE_COMMANDS = {
    cls.MESSAGE_TYPE
    for cls in (
        RescheduleAppointment,
        ChangeAppointment,
        CancelAppointment,
        DeleteAppointment,
        RecordAttendance,
    )
}
