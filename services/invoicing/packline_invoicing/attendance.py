"""R14, sessions used when attended: the calendar's ``AttendanceRecorded`` (arrived or completed)
marks the line holding that appointment **used** and announces it with ``LineUsed``.

A used line is final: the session was spent, so a later cancellation, deletion, change or no-show
of the appointment never gives it back (invoicing refuses to unlink it; the matcher does not try).
A no-show is not handled here: the appointment is no longer active, so the matcher releases or
forfeits its line under the package's policy (R9).

Attendance and link travel different roads (the calendar's events come straight here, a link
comes through the matcher), so either may arrive first. Attendance is remembered on the
appointment's ``link_versions`` row, which every link locks too; whichever of the two commits
second sees the other, and the line is used either way."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from packline_contracts.appointments import AttendanceRecorded
from packline_contracts.envelope import Envelope
from packline_contracts.invoices import LineUsed
from packline_contracts.types import AppointmentStatus
from packline_core.consumer import MessageConsumer
from packline_core.outbox import Transaction

from packline_invoicing import invoices, revenue

ATTENDED = (AppointmentStatus.ARRIVED, AppointmentStatus.COMPLETED)
USED_STAYS = "the session was used (the patient attended): a used line is never released"


def register_attendance(consumer: MessageConsumer) -> None:
    consumer.handles(AttendanceRecorded)(attendance_recorded)


async def attendance_recorded(tx: Transaction, envelope: Envelope[AttendanceRecorded]) -> None:
    appointment = envelope.payload.appointment
    if appointment.status not in ATTENDED:
        return  # a no-show: the matcher releases or forfeits the line (R9)
    # Locks in a link's order (the line, then the link-version row): the two never deadlock.
    line = await held_line(tx, appointment.appointment_id)
    await tx.conn.execute(
        "INSERT INTO link_versions (appointment_id, link_version, attended) VALUES ($1, 0, true)"
        " ON CONFLICT (appointment_id) DO UPDATE SET attended = true",
        appointment.appointment_id,
    )
    if line is None:
        # A link that committed while this waited for the row is visible now; one that comes
        # later finds the row marked attended (commands.apply_link).
        line = await held_line(tx, appointment.appointment_id)
    if line is None or line["status"] != "linked":
        return  # no line (nothing to use), or used already: arrived, then completed
    await tx.conn.execute(
        "UPDATE invoice_lines SET status = 'used',"
        " appointment_version = greatest(appointment_version, $2), version = version + 1"
        " WHERE line_id = $1",
        line["line_id"],
        appointment.version,
    )
    await announce(tx, line, max(line["appointment_version"] or 1, appointment.version))


async def held_line(tx: Transaction, appointment_id: UUID) -> Any:
    """The line holding the appointment, locked (I1: at most one), or None."""
    return await tx.conn.fetchrow(
        "SELECT line_id, line_number, status, appointment_id, appointment_version"
        " FROM invoice_lines WHERE appointment_id = $1 FOR UPDATE",
        appointment_id,
    )


async def use_if_attended(tx: Transaction, line_id: UUID, appointment_id: UUID) -> None:
    """Called right after a link: if the patient already arrived, the session is used now. The
    link has locked the appointment's link-version row, so an attendance being applied at the
    same time has either committed (seen here) or waits and then finds the line linked."""
    line = await tx.conn.fetchrow(
        "UPDATE invoice_lines l SET status = 'used', version = l.version + 1 FROM link_versions v"
        " WHERE l.line_id = $1 AND l.status = 'linked' AND l.appointment_id = $2"
        " AND v.appointment_id = $2 AND v.attended"
        " RETURNING l.line_id, l.line_number, l.appointment_id, l.appointment_version",
        line_id,
        appointment_id,
    )
    if line is not None:
        await announce(tx, line, line["appointment_version"])


async def announce(tx: Transaction, line: Any, appointment_version: int) -> None:
    """LineUsed, with the session's share recognised (docs/revenue.md)."""
    now = invoices.moment(tx)
    recognised = await revenue.line_spent(tx, line["line_id"], "recognised", now)
    tx.publish(
        await invoices.line_event(
            tx.conn,
            LineUsed,
            line["line_id"],
            now=now,
            appointment_id=line["appointment_id"],
            appointment_version=appointment_version,
            link_version=await invoices.next_link_version(tx.conn, line["appointment_id"]),
            session_number=line["line_number"],
            **recognised,
        )
    )
