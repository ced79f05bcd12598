"""The calendar's SQL for appointments, its directory and its fees."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
from packline_contracts import clinic_time
from packline_contracts.types import Appointment, AppointmentStatus, BookingSource, InvoiceLineRef
from packline_core.db import Connection

from packline_calendar.rules import HOLDS_TIME

COLUMNS = (
    "appointment_id, patient_id, practitioner_id, location_id, starts_at, duration_minutes,"
    " fee_ids, status, source, invoice_id, line_id, version, time_zone"
)


def to_appointment(row: asyncpg.Record) -> Appointment:
    line = (
        InvoiceLineRef(invoice_id=row["invoice_id"], line_id=row["line_id"])
        if row["invoice_id"]
        else None
    )
    return Appointment(
        appointment_id=row["appointment_id"],
        version=row["version"],
        patient_id=row["patient_id"],
        practitioner_id=row["practitioner_id"],
        location_id=row["location_id"],
        starts_at=row["starts_at"],
        duration_minutes=row["duration_minutes"],
        fee_ids=list(row["fee_ids"]),
        status=AppointmentStatus(row["status"]),
        source=BookingSource(row["source"]),
        invoice_line=line,
        time_zone=row["time_zone"],
    )


async def get(
    conn: Connection, appointment_id: UUID, *, for_update: bool = False
) -> Appointment | None:
    row = await conn.fetchrow(
        f"SELECT {COLUMNS} FROM appointments WHERE appointment_id = $1"
        + (" FOR UPDATE" if for_update else ""),
        appointment_id,
    )
    return to_appointment(row) if row else None


async def update(conn: Connection, appointment: Appointment) -> None:
    await conn.execute(
        "UPDATE appointments SET practitioner_id = $2, location_id = $3, starts_at = $4,"
        " ends_at = $5, duration_minutes = $6, fee_ids = $7, status = $8, version = $9,"
        " time_zone = $10, updated_at = now() WHERE appointment_id = $1",
        appointment.appointment_id,
        appointment.practitioner_id,
        appointment.location_id,
        appointment.starts_at,
        ends(appointment),
        appointment.duration_minutes,
        appointment.fee_ids,
        appointment.status.value,
        appointment.version,
        appointment.time_zone,
    )


def ends(appointment: Appointment) -> datetime:
    return appointment.starts_at + timedelta(minutes=appointment.duration_minutes)


async def clashing(
    conn: Connection,
    practitioner_id: str,
    starts_at: datetime,
    ends_at: datetime,
    ignoring: UUID | None = None,
) -> asyncpg.Record | None:
    """The appointment holding the practitioner's time in that range, if any."""
    return await conn.fetchrow(
        "SELECT appointment_id, starts_at, ends_at FROM appointments"
        " WHERE practitioner_id = $1 AND tstzrange(starts_at, ends_at) && tstzrange($2, $3)"
        " AND status = ANY($4::text[]) AND appointment_id IS DISTINCT FROM $5"
        " ORDER BY starts_at LIMIT 1",
        practitioner_id,
        starts_at,
        ends_at,
        [status.value for status in HOLDS_TIME],
        ignoring,
    )


@dataclass(frozen=True)
class BookingContext:
    """What a booking is checked against, read in one round trip."""

    existing_patient_id: str | None
    existing_starts_at: datetime | None
    practitioner_known: bool
    location_zone: str | None  # None: an unknown location
    fee_durations: dict[str, int]


async def booking_context(
    conn: Connection, appointment_id: UUID, practitioner_id: str, location_id: str, fees: list[str]
) -> BookingContext:
    row = await conn.fetchrow(
        "SELECT a.patient_id, a.starts_at,"
        " EXISTS (SELECT 1 FROM practitioners WHERE practitioner_id = $2) AS practitioner_known,"
        " (SELECT time_zone FROM locations WHERE location_id = $3) AS location_zone,"
        " (SELECT coalesce(array_agg(fee_id), '{}') FROM fees WHERE fee_id = ANY($4::text[]))"
        "   AS fee_ids,"
        " (SELECT coalesce(array_agg(duration_minutes), '{}') FROM fees"
        "   WHERE fee_id = ANY($4::text[])) AS durations"
        " FROM (SELECT 1) AS one LEFT JOIN appointments a ON a.appointment_id = $1",
        appointment_id,
        practitioner_id,
        location_id,
        fees,
    )
    assert row is not None
    return BookingContext(
        row["patient_id"],
        row["starts_at"],
        row["practitioner_known"],
        row["location_zone"],
        dict(zip(row["fee_ids"], row["durations"], strict=True)),
    )


async def insert_unless_taken(conn: Connection, appointment: Appointment, booked_by: str) -> bool:
    """Insert; False when the exclusion constraint says the practitioner's time is taken. No
    savepoint needed: ON CONFLICT DO NOTHING covers exclusion constraints too."""
    line = appointment.invoice_line
    inserted = await conn.fetchval(
        "INSERT INTO appointments (appointment_id, patient_id, practitioner_id, location_id,"
        " starts_at, ends_at, duration_minutes, fee_ids, status, source, invoice_id, line_id,"
        " version, booked_by, time_zone)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
        " ON CONFLICT DO NOTHING RETURNING true",
        appointment.appointment_id,
        appointment.patient_id,
        appointment.practitioner_id,
        appointment.location_id,
        appointment.starts_at,
        ends(appointment),
        appointment.duration_minutes,
        appointment.fee_ids,
        appointment.status.value,
        appointment.source.value,
        line.invoice_id if line else None,
        line.line_id if line else None,
        appointment.version,
        booked_by,
        appointment.time_zone,
    )
    return bool(inserted)


async def fee_durations(conn: Connection, fee_ids: list[str]) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT fee_id, duration_minutes FROM fees WHERE fee_id = ANY($1::text[])", fee_ids
    )
    return {row["fee_id"]: row["duration_minutes"] for row in rows}


async def known(conn: Connection, table: str, column: str, value: str) -> bool:
    assert (table, column) in {("practitioners", "practitioner_id"), ("locations", "location_id")}
    return bool(await conn.fetchval(f"SELECT 1 FROM {table} WHERE {column} = $1", value))


async def location_zone(conn: Connection, location_id: str) -> str | None:
    """The location's time zone; None when the calendar does not know the location."""
    zone: str | None = await conn.fetchval(
        "SELECT time_zone FROM locations WHERE location_id = $1", location_id
    )
    return zone


def as_json(appointment: Appointment) -> dict[str, Any]:
    """The appointment, with its start and end as the location's clocks show them (R15)."""
    # Python's aware arithmetic adds wall-clock time: convert the end, never add to the start.
    zone = appointment.time_zone
    return {
        **appointment.model_dump(mode="json"),
        "local_starts_at": clinic_time.local(appointment.starts_at, zone).isoformat(),
        "local_ends_at": clinic_time.local(ends(appointment), zone).isoformat(),
    }
