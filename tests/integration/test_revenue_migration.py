"""Invoicing's revenue migration on invoices sold before it (issue #22): each line gets its share
of the price (adding up to it, as rules.session_shares gives it), and what each invoice had already
used, forfeited, refunded or voided becomes entries, so what it still owes is right."""

from __future__ import annotations

from datetime import UTC, date, datetime
from uuid import uuid4

import asyncpg
import pytest
from packline_core import migrations
from packline_invoicing import rules

from tests.conftest import CreateDatabase

pytestmark = pytest.mark.infra

REVENUE = 7


async def sold(
    conn: asyncpg.Connection, price: int, statuses: list[str], *, status: str, refunded: int
) -> object:
    invoice_id = uuid4()
    await conn.execute(
        "INSERT INTO packages (package_id, terms) VALUES ('p', '{}') ON CONFLICT DO NOTHING"
    )
    await conn.execute(
        "INSERT INTO package_invoices (invoice_id, patient_id, package_id, package_name, channel,"
        " issued_at, issued_by, status, price_cents, paid_cents, refunded_cents, currency,"
        " pay_before_use) VALUES ($1, 'p-1', 'p', 'P', 'staff', $2, 'bo', $3, $4, $4, $5, 'EUR',"
        " false)",
        invoice_id,
        datetime(2026, 1, 5, tzinfo=UTC),
        status,
        price,
        refunded,
    )
    for number, line_status in enumerate(statuses, start=1):
        taken = line_status in ("used", "forfeited")
        await conn.execute(
            "INSERT INTO invoice_lines (line_id, invoice_id, line_number, patient_id, fee_id,"
            " valid_from, valid_until, status, appointment_id, version)"
            " VALUES ($1, $2, $3, 'p-1', 'f', $4, $4, $5, $6, 1)",
            uuid4(),
            invoice_id,
            number,
            date(2026, 1, 5),
            line_status,
            uuid4() if taken else None,
        )
    return invoice_id


async def test_invoices_sold_before_get_their_shares_and_what_they_owe(
    create_database: CreateDatabase,
) -> None:
    shipped = migrations.load("packline_invoicing", "packline_invoicing")
    assert shipped[REVENUE - 1].name.endswith("revenue")
    conn = await asyncpg.connect(await create_database("revenue"))
    try:
        await migrations.apply(conn, shipped[: REVENUE - 1])
        trio = await sold(conn, 10000, ["used", "forfeited", "open"], status="paid", refunded=5000)
        voided = await sold(conn, 40000, ["used", *["open"] * 4], status="void", refunded=0)
        fresh = await sold(conn, 999, ["open"] * 4, status="issued", refunded=0)
        await migrations.apply(conn, shipped[REVENUE - 1 : REVENUE])
        for invoice_id, price, lines in ((trio, 10000, 3), (voided, 40000, 5), (fresh, 999, 4)):
            shares = await conn.fetch(
                "SELECT share_cents FROM invoice_lines WHERE invoice_id = $1 ORDER BY line_number",
                invoice_id,
            )
            assert [row["share_cents"] for row in shares] == rules.session_shares(price, lines)
        owed = {
            row["invoice_id"]: row["owed_cents"]
            for row in await conn.fetch("SELECT invoice_id, owed_cents FROM package_invoices")
        }
        # trio: 100.00 - 33.34 used - 33.33 forfeited - 33.33 of the 50.00 refunded
        assert owed == {trio: 0, voided: 0, fresh: 999}
        entries = await conn.fetch(
            "SELECT kind, sum(amount_cents) AS cents FROM revenue_entries WHERE invoice_id = $1"
            " GROUP BY kind",
            trio,
        )
        assert {row["kind"]: row["cents"] for row in entries} == {
            "sold": 10000,
            "recognised": 3334,
            "forfeited": 3333,
            "refunded": 3333,
            "refunded_recognised": 1667,
        }
        void_entries = await conn.fetch(
            "SELECT kind, amount_cents FROM revenue_entries WHERE invoice_id = $1 ORDER BY kind",
            voided,
        )
        assert [(row["kind"], row["amount_cents"]) for row in void_entries] == [
            ("recognised", 8000),
            ("sold", 40000),
            ("voided", 32000),
        ]
    finally:
        await conn.close()
