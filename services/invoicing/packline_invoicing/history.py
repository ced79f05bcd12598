"""The whole story of a package line (issue #21 point 2): one ``line_history`` row per change,
written by :func:`packline_invoicing.invoices.save_line` in the transaction that saves the line.

A handler builds the entry with :func:`entry` from the line as it read it and the transition's
outcome (packline_invoicing.lines): what happened is told from the two — a link of the
appointment the line already held, at another time, is a move; of the appointment its booking
request named, the calendar's booking — and when and by which message from the transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
from packline_contracts.ids import derived_id
from packline_contracts.invoices import LineStatus
from packline_core.db import Connection
from packline_core.outbox import Transaction

from packline_invoicing import lines


@dataclass(frozen=True)
class Entry:
    """What a change of a line says about it, besides the line itself."""

    happened: str
    at: datetime
    message_id: UUID | None  # None: derived from the line and its new version
    # The appointment the change is about: the line's afterwards, or the one it let go of.
    appointment_id: UUID | None
    appointment_starts_at: datetime | None
    appointment_time_zone: str | None
    previous_starts_at: datetime | None = None
    reason: str | None = None
    note: str | None = None
    by_staff: str | None = None
    practitioner_id: str | None = None  # None: as invoicing knows the appointment


def happened(before: lines.Line, changed: lines.Changed[Any]) -> tuple[str, datetime | None]:
    """What the change was, in history's words, and for a move where the appointment was."""
    event = changed.event
    if isinstance(event, lines.BookingRequested):
        return "booking_requested", None
    if isinstance(event, lines.Linked):
        if before.appointment_id != event.appointment_id:
            return "linked", None
        if before.status == LineStatus.BOOKING_REQUESTED:
            return "booked", None
        if before.appointment_starts_at != changed.line.appointment_starts_at:
            return "moved", before.appointment_starts_at
        return "relinked", None
    if isinstance(event, lines.Released):
        was_request = event.was == LineStatus.BOOKING_REQUESTED
        return ("booking_released" if was_request else "unlinked"), None
    if isinstance(event, lines.Used):
        return "used", None
    if isinstance(event, lines.Forfeited):
        return "forfeited", None
    if isinstance(event, lines.Expired):
        return "expired", None
    if isinstance(event, lines.Extended):
        return "extended", None
    return type(event).__name__.lower(), None


def entry(
    tx: Transaction,
    before: lines.Line,
    changed: lines.Changed[Any],
    *,
    reason: str | None = None,
    by: str | None = None,
    at: datetime | None = None,
    practitioner_id: str | None = None,
) -> Entry:
    """The history entry of ``changed`` (from ``before``), applied in ``tx``: at the applied
    message's time and under its id; without a message (a staff request, a sweep) at ``at`` or
    the clock's time, under an id derived from the line's new version."""
    what, previous = happened(before, changed)
    event = changed.event
    if reason is None and isinstance(event, lines.Forfeited):
        reason = event.reason
    about = changed.line if changed.line.appointment_id is not None else before
    causation = tx.causation
    if at is None:
        at = causation.occurred_at if causation is not None else datetime.now(UTC)
    return Entry(
        happened=what,
        at=at,
        message_id=causation.message_id if causation is not None else None,
        appointment_id=about.appointment_id,
        appointment_starts_at=about.appointment_starts_at,
        appointment_time_zone=about.appointment_time_zone,
        previous_starts_at=previous,
        reason=reason,
        note=event.note if isinstance(event, lines.Released) else None,
        by_staff=by,
        practitioner_id=practitioner_id,
    )


WRITE = (
    "INSERT INTO line_history (line_id, version, invoice_id, line_number, at, happened, status,"
    " appointment_id, appointment_starts_at, appointment_time_zone, previous_starts_at,"
    " valid_until, reason, note, by_staff, message_id, practitioner_id)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,"
    " coalesce($17, (SELECT practitioner_id FROM known_appointments WHERE appointment_id = $8)))"
    " ON CONFLICT DO NOTHING"
)


async def write(conn: Connection, line: lines.Line, entry: Entry) -> None:
    """The row of ``line`` as saved, told by ``entry``; nothing when its message wrote it."""
    await conn.execute(
        WRITE,
        line.line_id,
        line.version,
        line.invoice_id,
        line.line_number,
        entry.at,
        entry.happened,
        line.status.value,
        entry.appointment_id,
        entry.appointment_starts_at,
        entry.appointment_time_zone,
        entry.previous_starts_at,
        line.valid_until if entry.happened == "extended" else None,
        entry.reason,
        entry.note,
        entry.by_staff,
        entry.message_id or derived_id("line history", line.line_id, line.version),
        entry.practitioner_id,
    )


HISTORY_COLUMNS = (
    "version, at, happened, status, appointment_id, appointment_starts_at,"
    " appointment_time_zone, practitioner_id, previous_starts_at, valid_until, reason, note,"
    " by_staff, message_id"
)


async def page_of(
    conn: Connection, line_id: UUID, after_version: int | None, limit: int
) -> list[asyncpg.Record]:
    """The line's story in the order it happened, after ``after_version``: ``limit`` + 1 rows."""
    return list(
        await conn.fetch(
            f"SELECT {HISTORY_COLUMNS} FROM line_history WHERE line_id = $1"
            " AND ($2::integer IS NULL OR version > $2) ORDER BY version LIMIT $3",
            line_id,
            after_version,
            limit + 1,
        )
    )
