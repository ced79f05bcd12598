"""Revenue per session and what invoices still owe (issue #22, docs/revenue.md): each change
that moves money in or out of deferred revenue writes one entry in ``revenue_entries`` and
carries the same amount on its event, so the report (packline_invoicing.report) adds up exactly
what the events say."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from uuid import UUID

from packline_contracts.ids import derived_id
from packline_core.db import Connection
from packline_core.outbox import Transaction
from packline_core.scope import Scope

from packline_invoicing import report, rules


async def enter(
    tx: Transaction,
    invoice_id: UUID,
    kind: str,
    amount_cents: int,
    at: datetime,
    *,
    cause: UUID,
    line_id: UUID | None = None,
) -> None:
    """One entry (its id named by what caused it, so a change counts once)."""
    await tx.conn.execute(
        "INSERT INTO revenue_entries (entry_id, invoice_id, kind, amount_cents, accounted_at,"
        " line_id) VALUES ($1, $2, $3, $4, $5, $6)",
        derived_id("revenue", kind, cause),
        invoice_id,
        kind,
        amount_cents,
        at,
        line_id,
    )


async def take(
    tx: Transaction,
    invoice_id: UUID,
    kind: str,
    amount_cents: int,
    at: datetime,
    *,
    cause: UUID,
    line_id: UUID | None = None,
) -> tuple[int, int]:
    """Take ``amount_cents`` off what the invoice still owes (at most all of it,
    rules.taken_from_owed), as an entry of ``kind``; returns (taken, owed afterwards). Locks
    the invoice's row, so changes of one invoice take from what is owed one at a time."""
    owed: int = await tx.conn.fetchval(
        "SELECT owed_cents FROM package_invoices WHERE invoice_id = $1 FOR UPDATE", invoice_id
    )
    taken = rules.taken_from_owed(owed, amount_cents)
    await tx.conn.execute(
        "UPDATE package_invoices SET owed_cents = $2 WHERE invoice_id = $1",
        invoice_id,
        owed - taken,
    )
    await enter(tx, invoice_id, kind, taken, at, cause=cause, line_id=line_id)
    return taken, owed - taken


async def line_spent(tx: Transaction, line_id: UUID, kind: str, at: datetime) -> dict[str, Any]:
    """A session used (``recognised``) or forfeited (``forfeited``): its share comes off what
    is owed. Returns the fields its event carries."""
    assert kind in ("recognised", "forfeited")
    line = await tx.conn.fetchrow(
        "SELECT invoice_id, share_cents FROM invoice_lines WHERE line_id = $1", line_id
    )
    assert line is not None, f"no line {line_id}"
    taken, owed = await take(
        tx, line["invoice_id"], kind, line["share_cents"], at, cause=line_id, line_id=line_id
    )
    return {f"{kind}_cents": taken, "owed_cents": owed, "accounted_at": at}


async def expired(
    tx: Transaction, invoice_id: UUID, shares: list[tuple[UUID, int]], at: datetime
) -> tuple[int, int]:
    """Sessions written off at expiry (line id, share): each share comes off what is owed as an
    ``expired`` entry of its line. Returns (taken in all, owed afterwards)."""
    total, owed = 0, None
    for line_id, share_cents in shares:
        taken, owed = await take(
            tx, invoice_id, "expired", share_cents, at, cause=line_id, line_id=line_id
        )
        total += taken
    assert owed is not None, "no session to write off"
    return total, owed


async def refunded(
    tx: Transaction, invoice_id: UUID, refund_id: UUID, amount_cents: int, at: datetime
) -> dict[str, Any]:
    """A refund takes from what is owed; the rest of it gives back recognised revenue."""
    taken, owed = await take(tx, invoice_id, "refunded", amount_cents, at, cause=refund_id)
    rest = amount_cents - taken
    await enter(tx, invoice_id, "refunded_recognised", rest, at, cause=refund_id)
    return {
        "refunded_owed_cents": taken,
        "refunded_recognised_cents": rest,
        "owed_cents": owed,
        "accounted_at": at,
    }


async def voided(tx: Transaction, invoice_id: UUID, at: datetime) -> dict[str, Any]:
    """A void ends what the invoice owed: all of it is taken off."""
    owed: int = await tx.conn.fetchval(
        "SELECT owed_cents FROM package_invoices WHERE invoice_id = $1", invoice_id
    )
    taken, left = await take(tx, invoice_id, "voided", owed, at, cause=invoice_id)
    return {"voided_cents": taken, "owed_cents": left, "accounted_at": at}


async def movements(
    conn: Connection, first: date, last: date, location_id: str | None, scope: Scope
) -> list[report.Movement]:
    """Every entry up to ``last`` of invoices sold at ``location_id`` (any, without one) and at
    the caller's clinics, summed by package, currency, kind and local month (None: before
    ``first``). An entry's day is its instant's day at the selling location (R15)."""
    rows = await conn.fetch(
        "SELECT i.package_id, i.currency, e.kind,"
        " CASE WHEN d.day < $1 THEN NULL ELSE to_char(d.day, 'YYYY-MM') END AS month,"
        " sum(e.amount_cents) AS amount_cents"
        " FROM revenue_entries e JOIN package_invoices i USING (invoice_id),"
        " LATERAL (SELECT (e.accounted_at AT TIME ZONE i.time_zone)::date AS day) AS d"
        " WHERE d.day <= $2"
        " AND ($3::text IS NULL OR i.location_id = $3)"
        " AND ($4::text[] IS NULL OR i.location_id = ANY($4::text[]))"
        " GROUP BY 1, 2, 3, 4",
        first,
        last,
        location_id,
        scope.location_list(),
    )
    return [
        report.Movement(
            package_id=row["package_id"],
            currency=row["currency"].strip(),
            kind=row["kind"],
            month=row["month"],
            amount_cents=int(row["amount_cents"]),
        )
        for row in rows
    ]
