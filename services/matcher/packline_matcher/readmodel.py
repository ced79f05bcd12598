"""The matcher's read model in SQL: one patient's lines and appointments at a time."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

import asyncpg
from packline_contracts.appointments import AppointmentEvent
from packline_contracts.invoices import LineLinked
from packline_contracts.types import Appointment as AppointmentSnapshot
from packline_contracts.types import AppointmentStatus, BookingSource, LateCancelPolicy
from packline_core.db import Connection

from packline_matcher import fold
from packline_matcher.decision import Appointment, Line


@functools.lru_cache(maxsize=1024)
def late_cancel_policy(stored: str) -> LateCancelPolicy:
    """A package's policy, parsed once: a patient's thousand lines share a few packages'."""
    return LateCancelPolicy.model_validate_json(stored)


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
        policy=late_cancel_policy(policy) if policy else None,
        alike=row["alike"],
        patient_id=row["patient_id"],
        patient_name=row["patient_name"],
    )


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
        ended_by=row["ended_by"],
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


async def household(conn: Connection, invoice_id: UUID) -> list[str]:
    """Who may use the invoice's sessions besides its patient (R18)."""
    rows = await conn.fetch(
        "SELECT patient_id FROM household_members WHERE invoice_id = $1 ORDER BY patient_id",
        invoice_id,
    )
    return [row["patient_id"] for row in rows]


async def set_household(conn: Connection, invoice_id: UUID, members: Sequence[str]) -> None:
    await conn.execute(
        "WITH gone AS (DELETE FROM household_members"
        "  WHERE invoice_id = $1 AND patient_id <> ALL($2::text[]))"
        " INSERT INTO household_members (patient_id, invoice_id)"
        " SELECT unnest($2::text[]), $1 WHERE EXISTS (SELECT 1 FROM invoices WHERE invoice_id = $1)"
        " ON CONFLICT DO NOTHING",
        invoice_id,
        list(members),
    )


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


# --- a batch's state, for packline_matcher.fold ------------------------------------------------

# The lines that decide a batch (decision.condensed says which, and why that is enough): read
# whole, those holding the batch's appointments, being linked, or refused to one of them; of the
# rest of the lines the batch's patients may use for the fees (their own, and those shared with
# them: R18 household), each group of alike lines gives its first few open ones (one more than
# the appointments of every patient who may use them in the batch) or its first one of another
# status, the last standing for the others. A patient's thousand used sessions are one row.
CANDIDATES = (
    "WITH apart AS (SELECT h.line_id FROM lines h WHERE h.appointment_id = ANY($4::uuid[])"
    "  UNION SELECT unnest($5::uuid[])),"
    " wanted AS (SELECT * FROM unnest($1::text[], $2::text[], $3::integer[])"
    "  AS w(patient_id, fee_id, open_kept)),"
    " reach AS (SELECT w.patient_id AS holder, w.open_kept, o.line_id FROM wanted w"
    "  JOIN lines o ON o.patient_id = w.patient_id AND o.fee_id = w.fee_id"
    "  UNION ALL SELECT w.patient_id, w.open_kept, s.line_id FROM wanted w"
    "  JOIN household_members m ON m.patient_id = w.patient_id"
    "  JOIN lines s ON s.invoice_id = m.invoice_id AND s.fee_id = w.fee_id),"
    " reached AS (SELECT line_id, sum(open_kept)::integer - count(*)::integer + 1 AS open_kept,"
    "  array_agg(holder) AS holders FROM reach GROUP BY line_id),"
    " ranked AS (SELECT f.line_id, f.status, r.open_kept, r.holders,"
    "  row_number() OVER in_line AS rank, count(*) OVER alike AS size"
    "  FROM reached r JOIN lines f USING (line_id)"
    "  WHERE f.line_id NOT IN (SELECT line_id FROM apart)"
    # Compared byte by byte: only equality matters, and a collation's order costs 10 times more.
    '  WINDOW alike AS (PARTITION BY f.invoice_id, f.fee_id, f.status COLLATE "C",'
    '  f.practitioner_ids COLLATE "C", f.location_ids COLLATE "C", f.valid_from,'
    "  f.valid_until), in_line AS (alike ORDER BY f.line_number)),"
    " kept AS (SELECT line_id, holders,"
    "  CASE WHEN rank = k THEN size - k + 1 ELSE 1 END AS alike"
    "  FROM (SELECT *, CASE WHEN status = 'open' THEN open_kept ELSE 1 END AS k FROM ranked) r"
    "  WHERE rank <= k"
    "  UNION ALL SELECT line_id, '{}', 1 FROM apart)"
    " SELECT l.*, i.package_id, i.package_name, i.issued_at, i.redeemable, i.unpaid,"
    " i.late_cancel_policy, kept.alike, kept.holders, p.name AS patient_name"
    " FROM kept JOIN lines l USING (line_id) JOIN invoices i USING (invoice_id)"
    " LEFT JOIN patient_names p ON p.patient_id = l.patient_id"
    " ORDER BY i.issued_at, l.invoice_id, l.line_number"
)


async def load(conn: Connection, inputs: Sequence[fold.Input]) -> fold.State:
    """What decides for ``inputs`` (two queries): the appointments they name, whether those not
    stored yet were unassigned by hand or announced by invoicing, and their patients' lines for
    the fees those appointments have or get (see ``CANDIDATES``)."""
    ids = sorted({appointment_named(message) for message in inputs})
    rows = await conn.fetch(
        f"SELECT ids.id, {APPOINTMENT_COLUMNS},"
        " EXISTS (SELECT 1 FROM hand_unlinks h WHERE h.appointment_id = ids.id) AS by_hand,"
        " EXISTS (SELECT 1 FROM invoice_booking_requests r WHERE r.appointment_id = ids.id)"
        "  AS requested"
        " FROM unnest($1::uuid[]) AS ids(id) LEFT JOIN appointments a ON a.appointment_id = ids.id",
        ids,
    )
    state = fold.State(
        appointments={
            row["id"]: fold.Stored(to_appointment(row), row["snapshot"])
            for row in rows
            if row["appointment_id"] is not None
        },
        hand_unlinked=frozenset(row["id"] for row in rows if row["by_hand"]),
        invoice_requested=frozenset(row["id"] for row in rows if row["requested"]),
    )
    wanted, decided = deciding(inputs, state)
    patients = sorted(wanted)
    pairs = [(patient, fee) for patient in patients for fee in sorted(wanted[patient])]
    linking = [m.line.line_id for m in inputs if isinstance(m, LineLinked)]
    refused = sorted(
        {i for s in state.appointments.values() for i in s.appointment.refused_line_ids}
    )
    lines = await conn.fetch(
        CANDIDATES,
        [patient for patient, _ in pairs],
        [fee for _, fee in pairs],
        [decided[patient] + 1 for patient, _ in pairs],
        ids,
        [*linking, *refused],
    )
    patient_of = {
        **{i: stored.appointment.patient_id for i, stored in state.appointments.items()},
        **{
            m.appointment.appointment_id: m.appointment.patient_id
            for m in inputs
            if isinstance(m, AppointmentEvent)
        },
    }
    for row in lines:
        line = to_line(row)
        # A line read apart is its patient's, and the appointment's it holds (a household's).
        holders = row["holders"] or [row["patient_id"], patient_of.get(row["appointment_id"])]
        for holder in holders:
            if holder is not None:
                state.hold(holder, line)
    return state


def deciding(
    inputs: Sequence[fold.Input], state: fold.State
) -> tuple[dict[str, set[str]], dict[str, int]]:
    """The fees each patient's appointments may be decided for, and at most how many of them
    the batch decides: an event's appointment's, an appointment decided again's; a link
    answer's only if its appointment has moved on since (else the fold only records the link,
    and reading a patient's thousand lines for it would be waste)."""
    wanted: dict[str, set[str]] = {}
    decided: dict[str, int] = {}
    for message in inputs:
        if isinstance(message, AppointmentEvent):
            appointment: AppointmentSnapshot | Appointment = message.appointment
        else:
            stored = state.appointments.get(message.appointment_id)
            if stored is None:
                continue
            if isinstance(message, LineLinked):
                if stored.appointment.version == message.appointment_version:
                    continue
            appointment = stored.appointment
        wanted.setdefault(appointment.patient_id, set()).update(appointment.fee_ids)
        decided[appointment.patient_id] = decided.get(appointment.patient_id, 0) + 1
    return wanted, decided


def appointment_named(message: fold.Input) -> UUID:
    if isinstance(message, AppointmentEvent):
        return message.appointment.appointment_id
    return message.appointment_id


async def save(conn: Connection, state: fold.State) -> None:
    """Write what the fold changed, in one statement: the appointments (newer versions only),
    the lines' status and appointment, and the explanations given or forgotten."""
    appointments = [state.appointments[i] for i in sorted(state.changed_appointments)]
    lines = [state.changed_lines[i] for i in sorted(state.changed_lines)]
    given = {i: e for i, e in state.explanations.items() if e is not None}
    forgotten = sorted(i for i, e in state.explanations.items() if e is None)
    if not (appointments or lines or given or forgotten):
        return
    await conn.execute(
        "WITH saved AS (INSERT INTO appointments AS a (appointment_id, patient_id, version,"
        "  practitioner_id, location_id, starts_at, fee_ids, status, source, cancelled_at,"
        "  duration_minutes, snapshot, time_zone, hand_unlinked, ended_by)"
        "  SELECT appointment_id, patient_id, version, practitioner_id, location_id, starts_at,"
        "  fee_ids, status, source, cancelled_at, duration_minutes, snapshot, time_zone,"
        "  hand_unlinked, ended_by FROM jsonb_to_recordset($1::jsonb) AS x(appointment_id uuid,"
        "  patient_id text, version integer, practitioner_id text, location_id text,"
        "  starts_at timestamptz, fee_ids text[], status text, source text,"
        "  cancelled_at timestamptz, duration_minutes integer, snapshot jsonb, time_zone text,"
        "  hand_unlinked boolean, ended_by text)"
        "  ON CONFLICT (appointment_id) DO UPDATE SET version = EXCLUDED.version,"
        "  practitioner_id = EXCLUDED.practitioner_id, location_id = EXCLUDED.location_id,"
        "  starts_at = EXCLUDED.starts_at, fee_ids = EXCLUDED.fee_ids, status = EXCLUDED.status,"
        "  cancelled_at = EXCLUDED.cancelled_at, duration_minutes = EXCLUDED.duration_minutes,"
        "  ended_by = EXCLUDED.ended_by,"
        "  snapshot = EXCLUDED.snapshot, time_zone = EXCLUDED.time_zone,"
        "  refused_line_ids = '{}' WHERE a.version < EXCLUDED.version),"
        " moved AS (UPDATE lines l SET status = x.status, appointment_id = x.appointment_id"
        "  FROM unnest($2::uuid[], $3::text[], $4::uuid[]) AS x(line_id, status, appointment_id)"
        "  WHERE l.line_id = x.line_id),"
        " forgotten AS (DELETE FROM explanations WHERE appointment_id = ANY($5::uuid[])),"
        " explained AS (INSERT INTO explanations (appointment_id, appointment_version, summary,"
        "  candidates) SELECT * FROM unnest($6::uuid[], $7::integer[], $8::text[], $9::jsonb[])"
        "  ON CONFLICT (appointment_id) DO UPDATE SET"
        "  appointment_version = EXCLUDED.appointment_version, summary = EXCLUDED.summary,"
        "  candidates = EXCLUDED.candidates, explained_at = now())"
        " SELECT 1",
        json.dumps([appointment_row(stored) for stored in appointments]),
        [line.line_id for line in lines],
        [line.status for line in lines],
        [line.appointment_id for line in lines],
        forgotten,
        list(given),
        [e.appointment_version for e in given.values()],
        [e.summary for e in given.values()],
        [e.candidates_json() for e in given.values()],
    )


def appointment_row(stored: fold.Stored) -> dict[str, object]:
    a = stored.appointment
    snapshot = json.loads(stored.snapshot)
    return {
        "appointment_id": str(a.appointment_id),
        "patient_id": a.patient_id,
        "version": a.version,
        "practitioner_id": a.practitioner_id,
        "location_id": a.location_id,
        "starts_at": a.starts_at.isoformat(),
        "fee_ids": list(a.fee_ids),
        "status": a.status.value,
        "source": a.source.value,
        "cancelled_at": a.cancelled_at.isoformat() if a.cancelled_at else None,
        "duration_minutes": snapshot["duration_minutes"],
        "snapshot": snapshot,
        "time_zone": a.time_zone,
        "hand_unlinked": a.hand_unlinked,
        "ended_by": a.ended_by,
    }
