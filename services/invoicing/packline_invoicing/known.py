"""The appointments invoicing knows, from the calendar's events, and the check of a matcher's
``LinkAppointment`` against them (issue #19 point 4): a link is applied only to an appointment the
calendar announced, with the patient, practitioner, location, start, fees, status and time zone
the calendar gave it, never on the word of the command alone.

The calendar's events and the matcher's links travel on different topics, read in no set order:
a link may arrive before invoicing has read the event of the appointment version it names. It then
**waits** (``waiting_links``; nothing is published, the line is untouched) and is checked when that
version is read. Refusing it instead would send the matcher to the next line for no reason (a
``LinkRefused`` marks the line refused for that appointment version), breaking I2/I8's "exactly
one gets it". A link for an appointment the calendar never announced waits for ever and never
takes a session. The matcher's unlink of a waiting link withdraws it (answered ``LinkRefused``).

The link path and the event path take the same per-appointment lock (a transaction-scoped
advisory lock) before the line's, so a link is never left waiting for an event already read.
"""

from __future__ import annotations

from typing import Any

from packline_contracts.appointments import (
    AppointmentBooked,
    AppointmentCancelled,
    AppointmentChanged,
    AppointmentDeleted,
    AppointmentEvent,
    AppointmentRescheduled,
    AttendanceRecorded,
)
from packline_contracts.envelope import Envelope
from packline_contracts.invoices import LinkAppointment, LinkRefusalCode, LinkRefused
from packline_contracts.types import Appointment
from packline_core.consumer import Handler, MessageConsumer
from packline_core.outbox import Transaction

# What a link's snapshot must agree on with the appointment invoicing knows at that version.
CHECKED = (
    "patient_id",
    "practitioner_id",
    "location_id",
    "starts_at",
    "fee_ids",
    "status",
    "time_zone",
)

EVENTS: tuple[type[AppointmentEvent], ...] = (
    AppointmentBooked,
    AppointmentRescheduled,
    AppointmentChanged,
    AppointmentCancelled,
    AppointmentDeleted,
    AttendanceRecorded,
)


async def lock(tx: Transaction, appointment: Appointment) -> None:
    await tx.conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('known-appointment:' || $1::text, 0))",
        str(appointment.appointment_id),
    )


async def remember(tx: Transaction, appointment: Appointment) -> None:
    """Keep the latest version of an appointment the calendar announced."""
    await tx.conn.execute(
        "INSERT INTO known_appointments (appointment_id, patient_id, version, practitioner_id,"
        " location_id, starts_at, fee_ids, status, time_zone)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        " ON CONFLICT (appointment_id) DO UPDATE SET patient_id = $2, version = $3,"
        " practitioner_id = $4, location_id = $5, starts_at = $6, fee_ids = $7, status = $8,"
        " time_zone = $9, updated_at = now() WHERE known_appointments.version < $3",
        appointment.appointment_id,
        appointment.patient_id,
        appointment.version,
        appointment.practitioner_id,
        appointment.location_id,
        appointment.starts_at,
        list(appointment.fee_ids),
        appointment.status.value,
        appointment.time_zone,
    )


def disagreement(snapshot: Appointment, known: Any) -> str | None:
    """The first checked field on which the link's snapshot and the known appointment differ."""
    for field in CHECKED:
        said = getattr(snapshot, field)
        said = getattr(said, "value", said)
        held = known[field]
        if field == "fee_ids":
            said, held = list(said), list(held)
        if said != held:
            return f"appointment.{field}: the link says {said}, the calendar says {held}"
    return None


def refuse(tx: Transaction, command: LinkAppointment, code: LinkRefusalCode, reason: str) -> None:
    tx.publish(
        LinkRefused(
            patient_id=command.appointment.patient_id,
            invoice_id=command.invoice_id,
            line_id=command.line_id,
            appointment_id=command.appointment.appointment_id,
            appointment_version=command.appointment.version,
            code=code,
            reason=reason[:500],
        )
    )


async def check_link(tx: Transaction, command: LinkAppointment) -> bool:
    """Whether ``command`` may go on to the line checks now. False: it waits (invoicing has not
    read that appointment version yet) or was refused (LinkRefused published)."""
    snapshot = command.appointment
    await lock(tx, snapshot)
    known = await tx.conn.fetchrow(
        "SELECT * FROM known_appointments WHERE appointment_id = $1", snapshot.appointment_id
    )
    if known is None or known["version"] < snapshot.version:
        await tx.conn.execute(
            "INSERT INTO waiting_links (line_id, appointment_id, appointment_version, command)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            command.line_id,
            snapshot.appointment_id,
            snapshot.version,
            command.model_dump_json(),
        )
        return False
    if known["patient_id"] != snapshot.patient_id:
        refuse(
            tx,
            command,
            LinkRefusalCode.WRONG_PATIENT,
            f"appointment.patient_id: appointment {snapshot.appointment_id} is another patient's",
        )
        return False
    if known["version"] == snapshot.version:
        problem = disagreement(snapshot, known)
        if problem:
            refuse(tx, command, LinkRefusalCode.STALE, problem)
            return False
    # A newer version is known: the matcher decided on an older one and hears of the newer one
    # itself (a move keeps the link, R10; a change or cancellation is unlinked by it).
    return True


async def withdraw(tx: Transaction, line_id: Any, appointment_id: Any) -> bool:
    """The matcher unlinks a link still waiting: it is dropped and answered LinkRefused."""
    rows = await tx.conn.fetch(
        "DELETE FROM waiting_links WHERE line_id = $1 AND appointment_id = $2 RETURNING command",
        line_id,
        appointment_id,
    )
    for row in rows:
        command = LinkAppointment.model_validate_json(row["command"])
        refuse(tx, command, LinkRefusalCode.STALE, "withdrawn by the matcher before it was applied")
    return bool(rows)


def register_known_appointments(consumer: MessageConsumer) -> None:
    """Every appointment event read by ``consumer`` (the booking-results consumer) is remembered
    first, then handled as before, then the links waiting for it are checked."""
    from packline_invoicing import commands

    for event_type in EVENTS:
        inner: Handler | None = consumer.handlers.get(event_type)

        def wrapped(inner: Handler | None) -> Handler:
            async def handle(tx: Transaction, envelope: Envelope[Any]) -> None:
                appointment: Appointment = envelope.payload.appointment
                await lock(tx, appointment)
                await remember(tx, appointment)
                if inner is not None:
                    await inner(tx, envelope)
                rows = await tx.conn.fetch(
                    "DELETE FROM waiting_links WHERE appointment_id = $1"
                    " AND appointment_version <= $2 RETURNING command",
                    appointment.appointment_id,
                    appointment.version,
                )
                for row in rows:
                    await commands.apply_checked_link(
                        tx, LinkAppointment.model_validate_json(row["command"])
                    )

            return handle

        consumer.handles(event_type)(wrapped(inner))
