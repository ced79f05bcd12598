"""The lines the matcher reads for a batch (readmodel.load) are the ones decision.condensed
says decide it, each standing for as many lines as it should: checked on the real database for
patients with many alike lines, and for the lines held by the batch's appointments, read whole.
(tests/unit/test_fold.py shows that a fold over those lines says what it says over every line.)"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator
from datetime import timedelta
from uuid import UUID, uuid5

import asyncpg
from packline_contracts.appointments import AppointmentBooked
from packline_contracts.types import Appointment as Snapshot
from packline_contracts.types import AppointmentStatus, BookingSource
from packline_core import migrations
from packline_matcher import readmodel
from packline_matcher.decision import Line, condensed, in_order

from tests.conftest import CreateDatabase
from tests.decisions import START, line

PATIENT = "p-many"
SPACE = UUID("00000000-0000-0000-0000-0000000ca1d1")
BOOKED = [uuid5(SPACE, f"appointment-{n}") for n in range(2)]


def history(rng: random.Random) -> list[Line]:
    """A patient's lines: up to four invoices of up to 60 sessions, in runs of alike lines."""
    lines = []
    for invoice in range(rng.randint(1, 4)):
        paid = rng.random() < 0.8
        number = 0
        for _ in range(rng.randint(1, 6)):  # runs of alike lines
            fee = rng.choice(["massage", "physio"])
            restricted = rng.choice([None, ("dr-a",), ("dr-a", "dr-b")])
            until = START.date() + timedelta(days=rng.choice([10, 60]))
            status = rng.choice(["open", "open", "linked", "requested", "used", "expired"])
            for _ in range(rng.randint(1, 12)):
                number += 1
                held = None
                if status in ("linked", "requested"):
                    held = rng.choice([*BOOKED, uuid5(SPACE, f"elsewhere-{invoice}-{number}")])
                lines.append(
                    line(
                        number,
                        line_id=uuid5(SPACE, f"line-{invoice}-{number}"),
                        invoice_id=uuid5(SPACE, f"invoice-{invoice}"),
                        invoice_issued_at=START - timedelta(days=40 - invoice),
                        redeemable=paid,
                        unpaid=not paid,
                        fee_id=fee,
                        practitioner_ids=restricted,
                        valid_until=until,
                        status=status,
                        appointment_id=held,
                    )
                )
    return lines


@contextlib.asynccontextmanager
async def stored(conn: asyncpg.Connection, lines: list[Line]) -> AsyncIterator[None]:
    """``lines`` in the database for the block, rolled back after it: nothing is committed, so a
    case costs no fsync however busy the machine's disk is."""
    transaction = conn.transaction()
    await transaction.start()
    try:
        await store(conn, lines)
        yield
    finally:
        await transaction.rollback()


async def store(conn: asyncpg.Connection, lines: list[Line]) -> None:
    invoices = {x.invoice_id: x for x in lines}
    await conn.executemany(
        "INSERT INTO invoices (invoice_id, patient_id, package_id, package_name, issued_at,"
        " redeemable, unpaid) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        [
            (
                x.invoice_id,
                PATIENT,
                x.package_id,
                x.package_name,
                x.invoice_issued_at,
                x.redeemable,
                x.unpaid,
            )
            for x in invoices.values()
        ],
    )
    await conn.executemany(
        "INSERT INTO lines (line_id, invoice_id, patient_id, line_number, fee_id,"
        " practitioner_ids, location_ids, valid_from, valid_until, status, appointment_id)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        [
            (
                x.line_id,
                x.invoice_id,
                PATIENT,
                x.line_number,
                x.fee_id,
                x.practitioner_ids,
                x.location_ids,
                x.valid_from,
                x.valid_until,
                x.status,
                x.appointment_id,
            )
            for x in lines
        ],
    )


def booked(appointment_id: UUID, fees: list[str], patient: str = PATIENT) -> AppointmentBooked:
    return AppointmentBooked(
        patient_id=patient,
        appointment=Snapshot(
            appointment_id=appointment_id,
            version=1,
            patient_id=patient,
            practitioner_id="dr-a",
            location_id="north",
            starts_at=START,
            duration_minutes=60,
            fee_ids=fees,
            status=AppointmentStatus.BOOKED,
            source=BookingSource.STAFF,
        ),
    )


async def test_the_matcher_reads_what_decides_and_counts_the_rest(
    create_database: CreateDatabase,
) -> None:
    conn = await asyncpg.connect(await create_database("candidates"))
    try:
        await migrations.apply(
            conn,
            [
                *migrations.load("packline_core", "core"),
                *migrations.load("packline_matcher", "matcher"),
            ],
        )
        for case in range(40):
            rng = random.Random(case)
            lines = history(rng)
            batch = [booked(BOOKED[0], ["massage"]), booked(BOOKED[1], ["massage", "physio"])]
            async with stored(conn, lines):
                state = await readmodel.load(conn, batch)
            read = [(x.line_id, x.alike) for x in state.patient_lines(PATIENT)]
            apart = [x for x in lines if x.appointment_id in BOOKED]
            rest = [x for x in lines if x.appointment_id not in BOOKED]
            expected = sorted([*apart, *condensed(rest, len(batch) + 1)], key=in_order)
            assert read == [(x.line_id, x.alike) for x in expected], f"case {case}"
            assert sum(alike for _, alike in read) == len(lines), f"case {case}"
        # A patient of a thousand used sessions and two hundred to go: three rows.
        many = [
            line(n, line_id=uuid5(SPACE, f"many-{n}"), status="used" if n <= 1000 else "open")
            for n in range(1, 1201)
        ]
        await store(conn, many)  # kept: the household's part reads them too
        state = await readmodel.load(conn, [booked(BOOKED[0], ["massage"])])
        rows = [(x.line_number, x.status, x.alike) for x in state.patient_lines(PATIENT)]
        assert rows == [(1, "used", 1000), (1001, "open", 1), (1002, "open", 199)]

        # Shared with a child (R18 household): the child's appointment reads the same lines;
        # with the parent's in the same batch, one more open line for each appointment.
        await conn.execute(
            "INSERT INTO household_members (patient_id, invoice_id) SELECT 'p-child', invoice_id"
            " FROM invoices"
        )
        child = uuid5(SPACE, "child's appointment")
        state = await readmodel.load(conn, [booked(child, ["massage"], "p-child")])
        rows = [(x.line_number, x.status, x.alike) for x in state.patient_lines("p-child")]
        assert rows == [(1, "used", 1000), (1001, "open", 1), (1002, "open", 199)]
        assert state.patient_lines(PATIENT) == []
        both = [booked(child, ["massage"], "p-child"), booked(BOOKED[0], ["massage"])]
        state = await readmodel.load(conn, both)
        rows = [(x.line_number, x.status, x.alike) for x in state.patient_lines("p-child")]
        assert rows == [
            (1, "used", 1000),
            (1001, "open", 1),
            (1002, "open", 1),
            (1003, "open", 198),
        ]
        assert state.patient_lines(PATIENT) == state.patient_lines("p-child")
    finally:
        await conn.close()
