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

from uuid import UUID

from packline_contracts.appointments import AttendanceRecorded
from packline_contracts.envelope import Envelope
from packline_contracts.invoices import LineUsed
from packline_contracts.types import AppointmentStatus
from packline_core.consumer import MessageConsumer
from packline_core.outbox import Transaction

from packline_invoicing import history, invoices, lines, revenue

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
    if line is None:
        return  # no line: nothing to use
    used = lines.use(line, appointment.appointment_id, appointment.version)
    if isinstance(used, lines.Refused):
        return  # used already (arrived, then completed), or the booking is still requested
    await invoices.save_line(tx.conn, used.line, story=history.entry(tx, line, used))
    await announce(tx, used)


async def held_line(tx: Transaction, appointment_id: UUID) -> lines.Line | None:
    """The line holding the appointment, locked (I1: at most one), or None."""
    row = await tx.conn.fetchrow(
        f"SELECT {invoices.LINE_COLUMNS} FROM invoice_lines WHERE appointment_id = $1 FOR UPDATE",
        appointment_id,
    )
    return None if row is None else invoices.line_of(row)


async def use_attended(tx: Transaction, line: lines.Line, appointment_id: UUID) -> None:
    """Called right after a link whose appointment's link-version row says the patient already
    arrived: the session is used now. The link holds that row locked, so an attendance being
    applied at the same time has either committed (seen by the link) or waits and then finds
    the line linked."""
    used = lines.applied(lines.use(line, appointment_id))
    await invoices.save_line(tx.conn, used.line, story=history.entry(tx, line, used))
    await announce(tx, used)


async def announce(tx: Transaction, used: lines.Changed[lines.Used]) -> None:
    """LineUsed, with the session's share recognised (docs/revenue.md)."""
    line_id = used.line.line_id
    now = invoices.moment(tx)
    recognised = await revenue.line_spent(tx, line_id, "recognised", now)
    tx.publish(
        await invoices.line_event(
            tx.conn,
            LineUsed,
            line_id,
            now=now,
            appointment_id=used.event.appointment_id,
            appointment_version=used.event.appointment_version,
            link_version=await invoices.next_link_version(tx.conn, used.event.appointment_id),
            session_number=used.line.line_number,
            **recognised,
        )
    )
