"""Invoicing's SQL: package invoices and their lines, as rows and as the contracts' snapshots."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
from packline_contracts.invoices import (
    InvoiceLine,
    InvoiceStatus,
    LineEvent,
    LineStatus,
    PackageInvoice,
    PurchaseChannel,
)
from packline_contracts.types import Balance, LateCancelPolicy, Restriction
from packline_core.db import Connection
from packline_core.outbox import Transaction

from packline_invoicing import history, lines, rules

LINE_COLUMNS = (
    "line_id, invoice_id, line_number, patient_id, fee_id, practitioner_ids, location_ids,"
    " valid_from, valid_until, status, appointment_id, appointment_starts_at,"
    " appointment_version, appointment_time_zone, booking_requested_at, note, version, share_cents"
)
# The same, for queries that join the invoice (both tables have a patient_id).
LINE_COLUMNS_OF_L = ", ".join(f"l.{column.strip()}" for column in LINE_COLUMNS.split(","))


def line_of(row: asyncpg.Record) -> lines.Line:
    """The line model of a row read with LINE_COLUMNS."""
    practitioners, locations = row["practitioner_ids"], row["location_ids"]
    return lines.Line(
        line_id=row["line_id"],
        invoice_id=row["invoice_id"],
        line_number=row["line_number"],
        patient_id=row["patient_id"],
        fee_id=row["fee_id"],
        practitioner_ids=None if practitioners is None else tuple(practitioners),
        location_ids=None if locations is None else tuple(locations),
        valid_from=row["valid_from"],
        valid_until=row["valid_until"],
        status=LineStatus(row["status"]),
        appointment_id=row["appointment_id"],
        appointment_starts_at=row["appointment_starts_at"],
        appointment_version=row["appointment_version"],
        appointment_time_zone=row["appointment_time_zone"],
        booking_requested_at=row["booking_requested_at"],
        note=row["note"],
        version=row["version"],
        # Only a row read with its invoice's household has it (line_and_invoice).
        shared_with=frozenset(row.get("shared_with") or ()),
    )


class LineChanged(Exception):
    """A line was written over by another transaction between its read and its save. Every
    writer locks the line it reads, so this is a bug, never a race to retry."""


# A line's new state, written whole: keyed by its id and the version it was read at (one below
# the new one). The NOT EXISTS keeps a line from taking an appointment another line holds (I1):
# the unique index enforces it; this answers the usual case without an error (and without a
# savepoint's two round trips). Two links of one appointment racing past it (replicas
# overlapping in a rebalance) fail the batch on the index; retried, the loser finds the other
# line here.
SAVE_LINE = (
    "UPDATE invoice_lines SET status = $2, appointment_id = $3, appointment_starts_at = $4,"
    " appointment_version = $5, appointment_time_zone = $6, booking_requested_at = $7,"
    " note = $8, version = $9, valid_until = $10 WHERE line_id = $1 AND version = $9 - 1"
    " AND NOT EXISTS (SELECT 1 FROM invoice_lines other"
    " WHERE other.appointment_id = $3 AND other.line_id <> $1) RETURNING 1"
)


async def save_line(
    conn: Connection,
    line: lines.Line,
    *,
    taking_appointment: bool = False,
    story: history.Entry | None = None,
) -> bool:
    """Write ``line`` as a transition (packline_invoicing.lines) left it, in one UPDATE, and its
    ``story`` (packline_invoicing.history.entry) in its history. A link
    (``taking_appointment``) may find its appointment held by another line (I1): False, and
    nothing is written. Any other save holds no appointment, or its own, or a new one named by
    the line, so finding nothing to write means the line changed since it was read: LineChanged."""
    saved = await conn.fetchval(
        SAVE_LINE,
        line.line_id,
        line.status.value,
        line.appointment_id,
        line.appointment_starts_at,
        line.appointment_version,
        line.appointment_time_zone,
        line.booking_requested_at,
        line.note,
        line.version,
        line.valid_until,
    )
    if not saved and not taking_appointment:
        raise LineChanged(f"line {line.line_id} is no longer at version {line.version - 1}")
    if saved and story is not None:
        await history.write(conn, line, story)
    return bool(saved)


def to_line(row: asyncpg.Record) -> InvoiceLine:
    return InvoiceLine(
        line_id=row["line_id"],
        line_number=row["line_number"],
        fee_id=row["fee_id"],
        practitioners=Restriction(ids=row["practitioner_ids"]),
        locations=Restriction(ids=row["location_ids"]),
        valid_from=row["valid_from"],
        valid_until=row["valid_until"],
        status=LineStatus(row["status"]),
        appointment_id=row["appointment_id"],
        appointment_starts_at=row["appointment_starts_at"],
        appointment_time_zone=row["appointment_time_zone"],
        version=row["version"],
        share_cents=row["share_cents"],
    )


async def get_invoice(
    conn: Connection, invoice_id: UUID, *, for_update: bool = False
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM package_invoices WHERE invoice_id = $1"
        + (" FOR UPDATE" if for_update else ""),
        invoice_id,
    )


async def get_line(
    conn: Connection, line_id: UUID, *, for_update: bool = False
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {LINE_COLUMNS} FROM invoice_lines WHERE line_id = $1"
        + (" FOR UPDATE" if for_update else ""),
        line_id,
    )


async def line_and_invoice(conn: Connection, line_id: UUID) -> asyncpg.Record | None:
    """The line, locked, with what :func:`is_redeemable` needs of its invoice (the invoice's
    status as ``invoice_status``) and its household (who else may redeem it, R18), in one
    round trip."""
    return await conn.fetchrow(
        f"SELECT {LINE_COLUMNS_OF_L},"
        " i.status AS invoice_status, i.pay_before_use, i.paid_cents, i.price_cents,"
        " i.shared_with"
        " FROM invoice_lines l JOIN package_invoices i USING (invoice_id)"
        " WHERE l.line_id = $1 FOR UPDATE OF l",
        line_id,
    )


async def lines_of(
    conn: Connection, invoice_id: UUID, *, for_update: bool = False
) -> list[asyncpg.Record]:
    """The invoice's lines in order; locked with ``for_update`` (in line order, as every
    other writer of several lines takes them), so their status cannot change under the
    caller until it commits."""
    return list(
        await conn.fetch(
            f"SELECT {LINE_COLUMNS} FROM invoice_lines WHERE invoice_id = $1 ORDER BY line_number"
            + (" FOR UPDATE" if for_update else ""),
            invoice_id,
        )
    )


def is_redeemable(invoice: asyncpg.Record, status_column: str = "status") -> bool:
    return rules.redeemable(
        InvoiceStatus(invoice[status_column]),
        invoice["pay_before_use"],
        invoice["paid_cents"],
        invoice["price_cents"],
    )


def moment(tx: Transaction) -> datetime:
    """The instant a change happens, for the balance its events carry (I10): the applied
    message's ``occurred_at``, so a replay counts the same. A change asked over HTTP has no
    message: it happens at the request's own time."""
    if tx.causation is not None:
        return tx.causation.occurred_at
    return request_clock()


def request_clock() -> datetime:
    """The clock of a staff request over HTTP."""
    return datetime.now(UTC)


def balance_of(lines: list[asyncpg.Record], now: datetime) -> Balance:
    """R14 at ``now``, which the caller gives (a message's occurred_at, a request's clock)."""
    expires = max((row["valid_until"] for row in lines), default=None)
    return rules.balance(
        [(LineStatus(row["status"]), row["appointment_starts_at"]) for row in lines],
        now,
        expires,
    )


async def balance(conn: Connection, invoice_id: UUID, now: datetime) -> Balance:
    return balance_of(await lines_of(conn, invoice_id), now)


async def snapshot(conn: Connection, invoice_id: UUID, now: datetime) -> PackageInvoice:
    invoice = await get_invoice(conn, invoice_id)
    assert invoice is not None
    lines = await lines_of(conn, invoice_id)
    policy = invoice["late_cancel_policy"]
    return PackageInvoice(
        invoice_id=invoice["invoice_id"],
        patient_id=invoice["patient_id"],
        package_id=invoice["package_id"],
        package_name=invoice["package_name"],
        channel=PurchaseChannel(invoice["channel"]),
        issued_at=invoice["issued_at"],
        status=InvoiceStatus(invoice["status"]),
        price_cents=invoice["price_cents"],
        paid_cents=invoice["paid_cents"],
        currency=invoice["currency"],
        pay_before_use=invoice["pay_before_use"],
        redeemable=is_redeemable(invoice),
        late_cancel_policy=LateCancelPolicy.model_validate_json(policy) if policy else None,
        time_zone=invoice["time_zone"],
        lines=[to_line(row) for row in lines],
        balance=balance_of(lines, now),
        location_id=invoice["location_id"],
        owed_cents=invoice["owed_cents"],
        grace_days=invoice["grace_days"],
        shared_with=list(invoice["shared_with"]),
    )


# Line $1 with its invoice's package and, in one pass over the invoice's lines, what its balance
# is counted from (rules.tallied_balance): how many lines are in each status, when the linked
# ones' appointments start, and the last day of validity. One row, however many lines.
_TALLY = ", ".join(
    f"count(*) FILTER (WHERE status = '{status.value}') AS n_{status.value}"
    for status in LineStatus
)
LINE_WITH_TALLY = (
    f"SELECT {LINE_COLUMNS_OF_L}, i.package_id, i.package_name, t.*"
    " FROM invoice_lines l JOIN package_invoices i USING (invoice_id),"
    f" LATERAL (SELECT {_TALLY},"
    "  coalesce(array_agg(appointment_starts_at) FILTER (WHERE status = 'linked'), '{}')"
    "  AS linked_starts, max(valid_until) AS expires_on"
    "  FROM invoice_lines WHERE invoice_id = l.invoice_id) AS t"
    " WHERE l.line_id = $1"
)


async def line_event(
    conn: Connection, event_type: type[LineEvent], line_id: UUID, *, now: datetime, **fields: Any
) -> LineEvent:
    """A line event carrying the line as it is now and its invoice's balance at ``now``."""
    line = await conn.fetchrow(LINE_WITH_TALLY, line_id)
    assert line is not None, f"no line {line_id}"
    counts = {status: line[f"n_{status.value}"] for status in LineStatus}
    return event_type(
        patient_id=line["patient_id"],
        invoice_id=line["invoice_id"],
        package_id=line["package_id"],
        package_name=line["package_name"],
        line=to_line(line),
        balance=rules.tallied_balance(counts, list(line["linked_starts"]), now, line["expires_on"]),
        **fields,
    )


async def next_link_version(conn: Connection, appointment_id: UUID) -> int:
    version, _ = await next_link_version_and_attendance(conn, appointment_id)
    return version


async def next_link_version_and_attendance(
    conn: Connection, appointment_id: UUID
) -> tuple[int, bool]:
    """The appointment's next link version, and whether its patient already attended
    (packline_invoicing.attendance). The row stays locked until the transaction ends, so an
    attendance being recorded at the same time has either committed (and shows here) or waits."""
    row = await conn.fetchrow(
        "INSERT INTO link_versions (appointment_id, link_version) VALUES ($1, 1)"
        " ON CONFLICT (appointment_id) DO UPDATE SET link_version = link_versions.link_version + 1"
        " RETURNING link_version, attended",
        appointment_id,
    )
    assert row is not None
    return row["link_version"], row["attended"]


async def seen_at(conn: Connection, patient_id: str) -> list[str]:
    """Where invoicing has seen a patient (clinic scope, packline_core.scope): the locations of
    their appointments it knows, of the sales of their package invoices, and of their lines'
    location restrictions."""
    return list(
        await conn.fetchval(
            "SELECT coalesce(array_agg(DISTINCT place), '{}') FROM ("
            " SELECT location_id AS place FROM known_appointments"
            " WHERE patient_id = $1 AND status <> 'deleted'"
            " UNION ALL SELECT location_id FROM package_invoices"
            " WHERE patient_id = $1 AND location_id IS NOT NULL"
            " UNION ALL SELECT unnest(location_ids) FROM invoice_lines WHERE patient_id = $1"
            ") AS seen",
            patient_id,
        )
    )
