"""The matcher's read model in SQL: one patient's lines and appointments at a time."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import asyncpg
from packline_contracts.types import AppointmentStatus, BookingSource, LateCancelPolicy
from packline_core.db import Connection

from packline_matcher.decision import Appointment, Line

LINE_QUERY = (
    "SELECT l.*, i.package_id, i.package_name, i.issued_at, i.redeemable, i.unpaid,"
    " i.late_cancel_policy FROM lines l JOIN invoices i USING (invoice_id)"
)


def to_line(row: asyncpg.Record) -> Line:
    policy = row["late_cancel_policy"]
    return Line(
        line_id=row["line_id"],
        invoice_id=row["invoice_id"],
        package_id=row["package_id"],
        package_name=row["package_name"],
        line_number=row["line_number"],
        fee_id=row["fee_id"],
        practitioner_ids=tuple(row["practitioner_ids"]) if row["practitioner_ids"] else None,
        location_ids=tuple(row["location_ids"]) if row["location_ids"] else None,
        valid_from=row["valid_from"],
        valid_until=row["valid_until"],
        invoice_issued_at=row["issued_at"],
        redeemable=row["redeemable"],
        unpaid=row["unpaid"],
        status=row["status"],
        appointment_id=row["appointment_id"],
        policy=LateCancelPolicy.model_validate_json(policy) if policy else None,
    )


async def lines_for(conn: Connection, appointment: Appointment) -> list[Line]:
    """The patient's lines that can matter to a decision about ``appointment``
    (decision.relevant): those for its fees and the one holding it, not every line the
    patient ever bought."""
    rows = await conn.fetch(
        f"{LINE_QUERY} WHERE l.patient_id = $1"
        " AND (l.fee_id = ANY($2::text[]) OR l.appointment_id = $3)",
        appointment.patient_id,
        list(appointment.fee_ids),
        appointment.appointment_id,
    )
    return [to_line(row) for row in rows]


def to_appointment(row: asyncpg.Record) -> Appointment:
    return Appointment(
        appointment_id=row["appointment_id"],
        version=row["version"],
        patient_id=row["patient_id"],
        practitioner_id=row["practitioner_id"],
        location_id=row["location_id"],
        starts_at=row["starts_at"],
        fee_ids=tuple(row["fee_ids"]),
        status=AppointmentStatus(row["status"]),
        source=BookingSource(row["source"]),
        hand_unlinked=row["hand_unlinked"],
        awaiting_invoice=row["awaiting_invoice"],
        refused_line_ids=frozenset(row["refused_line_ids"]),
        cancelled_at=row["cancelled_at"],
        time_zone=row["time_zone"],
    )


# Every appointment read for a decision, with whether it still waits for invoicing (0003).
APPOINTMENT_COLUMNS = (
    "a.*, (a.source = 'invoice' AND NOT EXISTS (SELECT 1 FROM invoice_booking_requests r"
    " WHERE r.appointment_id = a.appointment_id)) AS awaiting_invoice"
)
APPOINTMENT_QUERY = f"SELECT {APPOINTMENT_COLUMNS} FROM appointments a"


async def appointment(conn: Connection, appointment_id: UUID) -> Appointment | None:
    row = await conn.fetchrow(f"{APPOINTMENT_QUERY} WHERE a.appointment_id = $1", appointment_id)
    return to_appointment(row) if row else None


async def waiting(conn: Connection, patient_id: str, now: datetime) -> list[Appointment]:
    """R12: upcoming, active, not hand-unlinked appointments holding no line, earliest first."""
    rows = await conn.fetch(
        f"{APPOINTMENT_QUERY} WHERE a.patient_id = $1 AND a.starts_at > $2"
        " AND a.status IN ('booked', 'arrived') AND NOT a.hand_unlinked"
        " AND NOT EXISTS (SELECT 1 FROM lines l WHERE l.appointment_id = a.appointment_id)"
        " ORDER BY a.starts_at, a.appointment_id",
        patient_id,
        now,
    )
    return [to_appointment(row) for row in rows]


async def names(conn: Connection) -> dict[str, str]:
    return {row["id"]: row["name"] for row in await conn.fetch("SELECT id, name FROM names")}


async def set_line(
    conn: Connection, line_id: UUID, status: str, appointment_id: UUID | None
) -> None:
    await conn.execute(
        "UPDATE lines SET status = $2, appointment_id = $3 WHERE line_id = $1",
        line_id,
        status,
        appointment_id,
    )


# Why an appointment did not match is gone once it holds a line; forgotten in the statement that
# gives it the line (one round trip for both).
FORGET_EXPLANATION = "forgotten AS (DELETE FROM explanations WHERE appointment_id = $2)"


async def request_line(conn: Connection, line_id: UUID, appointment_id: UUID) -> None:
    """The matcher has asked invoicing to link the line to the appointment."""
    await conn.execute(
        f"WITH {FORGET_EXPLANATION}"
        " UPDATE lines SET status = 'requested', appointment_id = $2 WHERE line_id = $1",
        line_id,
        appointment_id,
    )


async def link_line(conn: Connection, line_id: UUID, appointment_id: UUID) -> Appointment | None:
    """Invoicing linked the line: record it, forget why the appointment did not match, and return
    the appointment as the matcher knows it (one round trip)."""
    row = await conn.fetchrow(
        "WITH linked AS (UPDATE lines SET status = 'linked', appointment_id = $2"
        f"  WHERE line_id = $1), {FORGET_EXPLANATION}"
        f" {APPOINTMENT_QUERY} WHERE a.appointment_id = $2",
        line_id,
        appointment_id,
    )
    return to_appointment(row) if row else None


async def remember_hand_unlink(conn: Connection, appointment_id: UUID) -> None:
    """R8: never link this appointment on our own again. Kept apart from the appointment row,
    which may not exist yet (0002_hand_unlinks.sql), and on the row when it does."""
    await conn.execute(
        "INSERT INTO hand_unlinks (appointment_id) VALUES ($1) ON CONFLICT DO NOTHING",
        appointment_id,
    )
    await conn.execute(
        "UPDATE appointments SET hand_unlinked = true WHERE appointment_id = $1", appointment_id
    )


async def seen_at(conn: Connection, patient_id: str) -> list[str]:
    """Where the matcher has seen a patient (clinic scope, packline_core.scope): the locations
    of their appointments (not deleted ones) and of their lines' location restrictions."""
    return list(
        await conn.fetchval(
            "SELECT coalesce(array_agg(DISTINCT place), '{}') FROM ("
            " SELECT location_id AS place FROM appointments"
            " WHERE patient_id = $1 AND status <> 'deleted'"
            " UNION ALL SELECT unnest(location_ids) FROM lines WHERE patient_id = $1) AS seen",
            patient_id,
        )
    )
