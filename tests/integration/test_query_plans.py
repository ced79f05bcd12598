"""Every query the handlers run stays index-shaped as the clinic's history grows (issue #20).

Each service's own database is filled with about a million package lines and the invoices,
appointments, package notes, known appointments, patients and inbox / outbox rows that go with
them (``INSERT ... SELECT generate_series``, indexes built after the rows, then ``ANALYZE``).
A scenario then drives the real services over Kafka and HTTP through every handler path on the
booking path and the other message kinds, while every SQL statement the services send is
recorded (asyncpg's query logger on each connection they open). Each distinct statement is then
planned, with ``EXPLAIN``, on the same database:

- with the parameters it was run with: the custom plan PostgreSQL makes for those values;
- as a generic plan (``PREPARE`` and ``plan_cache_mode = force_generic_plan``; PostgreSQL 15 has
  no ``EXPLAIN (GENERIC_PLAN)``). asyncpg keeps prepared statements, and after five runs the
  server reuses the generic plan when it costs no more than the custom ones (plancache.c:
  ``choose_custom_plan``), so a generic plan counts when its cost is within that margin.

The test fails naming each statement whose plan reads a table that grows with the clinic's
history by a sequential scan (parallel or not), or, with no LIMIT that can stop it, by a scan of
an index with no condition on its leading column (read from end to end; PostgreSQL 15 has no
skip scan). Small reference tables (fees, packages, locations, practitioners, names) may be
scanned.

The databases are disposable: their tables are unlogged while they are filled and used (no WAL
to write; plans do not depend on it), which keeps the filling to seconds.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import httpx
import pytest
from packline_contracts.appointments import (
    AppointmentBooked,
    AppointmentDeleted,
    Attendance,
    CancelAppointment,
    ChangeAppointment,
    DeleteAppointment,
    RecordAttendance,
    RescheduleAppointment,
)
from packline_contracts.client import PacklineConsumer, PacklineProducer
from packline_contracts.invoices import (
    IssuePackageInvoice,
    LineBookingRefused,
    LineForfeited,
    LineLinked,
    LineUnlinked,
    LineUsed,
    PackageInvoice,
    PackageInvoiceIssued,
    PackageInvoiceRefunded,
    PackageInvoiceVoided,
    PaymentRecorded,
    PurchaseChannel,
    RecordPayment,
    RefundPackageInvoice,
    UnlinkReason,
    VoidPackageInvoice,
)
from packline_contracts.patients import RegisterPatient
from packline_contracts.topics import CALENDAR_EVENTS, INVOICING_EVENTS, MATCHER_EVENTS
from packline_contracts.types import LateCancelPolicy
from packline_core import migrations
from packline_core.service import Service

from tests.clinic import DR_A, DR_B, NORTHSIDE, SETUP, booking, days_ahead, fee_commands, package
from tests.conftest import CreateDatabase, ReadEvents, StartService
from tests.helpers import about, eventually, get_until, shown

pytestmark = pytest.mark.infra

# The test's own connections (filling, waiting, planning) are opened with asyncpg's connect as
# it was before the recorder wrapped it: what they run is not the services'.
OPEN = asyncpg.connect

# --- the filled history -----------------------------------------------------------------------

PATIENTS = 50_000
INVOICES = 100_000
LINES_PER_INVOICE = 10
LINES = INVOICES * LINES_PER_INVOICE  # a million package lines
APPOINTMENTS = LINES // 2  # every other line holds (or held) an appointment
INBOX = 300_000
OUTBOX = 100_000

# Tables that do not grow with the clinic's history: a scan of one is a scan of a few rows.
SMALL_TABLES = frozenset(
    {"fees", "packages", "locations", "practitioners", "names", "schema_migrations"}
)

# Names of the generated rows, each a function of its number (so rows refer to each other):
# line g is line (g - 1) % 10 + 1 of invoice (g - 1) / 10 + 1; appointment a is held by line 2a.
PATIENT_OF_INVOICE = "'filler-' || ((({i}) - 1) % {patients})"


def uid(kind: int, n: str) -> str:
    """A uuid for row ``n`` of a kind: unique by its number, in no order (a hash leads), as
    cheap as SQL can make one (md5 costs seconds per million rows here)."""
    return (
        f"(lpad(to_hex(hashint8(({n})::bigint)), 8, '0') || '-{kind:04x}-4000-8000-'"
        f" || lpad(to_hex(({n})::bigint), 12, '0'))::uuid"
    )


INVOICE_ID = uid(1, "{i}")
LINE_ID = uid(2, "{g}")
APPOINTMENT_ID = uid(3, "{a}")
HISTORY_START = "(date_trunc('day', now()) - interval '1440 days')"


def patient_of_invoice(i: str) -> str:
    return PATIENT_OF_INVOICE.format(i=i, patients=PATIENTS)


def invoice_of_line(g: str) -> str:
    return f"((({g}) - 1) / {LINES_PER_INVOICE} + 1)"


def appointment_start(a: str) -> str:
    """Spread over four years up to two months ahead; one practitioner's appointments (a modulo
    1000) are days apart, so the calendar's no-double-booking constraint holds."""
    return (
        f"({HISTORY_START} + ((({a}) / 1000) * 3 + ({a}) % 3) * interval '1 day'"
        f" + (8 + ({a}) % 8) * interval '1 hour')"
    )


def timed(a: str) -> str:
    """Appointment ``a``'s start, computed once per row, as ``starts``."""
    return f"CROSS JOIN LATERAL (SELECT {appointment_start(a)} AS starts) AS timing"


def appointment_status(a: str) -> str:
    return (
        f"CASE WHEN ({a}) % 10 = 0 THEN 'cancelled'"
        " WHEN starts < now() THEN 'completed' ELSE 'booked' END"
    )


def calendar_status(a: str) -> str:
    """The calendar's appointments: nine in ten cancelled, so that its no-double-booking GiST
    index (which holds only active ones, and takes about 10 s per 100,000 rows to build here)
    stays quick to build. No calendar query singles out cancelled appointments but the clash
    check, which reads that index either way."""
    return (
        f"CASE WHEN ({a}) % 10 <> 0 THEN 'cancelled'"
        " WHEN starts < now() THEN 'completed' ELSE 'booked' END"
    )


def line_status(g: str) -> str:
    """Every other line open; of the others, half used, half linked."""
    return f"CASE WHEN ({g}) % 2 = 1 THEN 'open' WHEN ({g}) % 4 = 0 THEN 'used' ELSE 'linked' END"


CORE_FILL = [
    "INSERT INTO inbox (consumer, message_id, message_type, topic, kafka_partition, kafka_offset,"
    " applied_by, applied_at)"
    f" SELECT 'filler/consumer-' || (n % 3), {uid(4, 'n')}, 'Filler', 'filler', n % 3,"
    f" n, 'filler', now() - (n % 864000) * interval '1 second' FROM generate_series(1, {INBOX}) n",
    "INSERT INTO outbox (message_id, topic, kafka_key, value, headers, created_at, sent_at)"
    f" SELECT {uid(5, 'n')}, 'filler', convert_to('filler-' || (n % 5000), 'UTF8'),"
    " convert_to('{}', 'UTF8'), '[]', now() - (n % 3000) * interval '1 second',"
    f" now() - (n % 3000) * interval '1 second' FROM generate_series(1, {OUTBOX}) n",
    "INSERT INTO dead_letter_store (id, consumer, topic, kafka_partition, kafka_offset, kafka_key,"
    " value, header_names, header_values, reason, error, attempts, stored_at, published_at)"
    f" SELECT {uid(6, 'n')}, 'filler/consumer', 'filler', 0, n, NULL, NULL, '{{}}', '{{}}',"
    " 'filler', 'filler', 1, now() - n * interval '1 minute', now() - n * interval '1 minute'"
    " FROM generate_series(1, 2000) n",
    "INSERT INTO ops_probe_received (probe_id, sent_by, sent_at)"
    f" SELECT {uid(7, 'n')}, 'filler', now() - n * interval '1 minute'"
    " FROM generate_series(1, 20000) n",
]

MATCHER_FILL = [
    "INSERT INTO invoices (invoice_id, patient_id, package_id, package_name, issued_at,"
    " redeemable, unpaid, late_cancel_policy)"
    f" SELECT {INVOICE_ID.format(i='i')}, {patient_of_invoice('i')}, 'filler-10', '10 x filler',"
    f" {HISTORY_START} + i * interval '20 minutes', i % 50 <> 0, false, NULL"
    f" FROM generate_series(1, {INVOICES}) i",
    "INSERT INTO lines (line_id, invoice_id, patient_id, line_number, fee_id, practitioner_ids,"
    " location_ids, valid_from, valid_until, status, appointment_id)"
    f" SELECT {LINE_ID.format(g='g')}, {INVOICE_ID.format(i=invoice_of_line('g'))},"
    f" {patient_of_invoice(invoice_of_line('g'))}, (g - 1) % {LINES_PER_INVOICE} + 1,"
    " CASE WHEN g % 7 = 0 THEN 'massage-30' ELSE 'massage-60' END, NULL,"
    " CASE WHEN g % 3 = 0 THEN ARRAY['northside'] END,"
    f" ({HISTORY_START} + g * interval '2 minutes')::date,"
    f" ({HISTORY_START} + g * interval '2 minutes')::date + 365, {line_status('g')},"
    f" CASE WHEN g % 2 = 0 THEN {APPOINTMENT_ID.format(a='g / 2')} END"
    f" FROM generate_series(1, {LINES}) g",
    "INSERT INTO appointments (appointment_id, patient_id, version, practitioner_id,"
    " location_id, starts_at, duration_minutes, fee_ids, status, source, cancelled_at,"
    " hand_unlinked, snapshot, time_zone)"
    f" SELECT {APPOINTMENT_ID.format(a='a')}, {patient_of_invoice(invoice_of_line('2 * a'))}, 1,"
    " 'filler-dr-' || (a % 1000), CASE WHEN a % 2 = 0 THEN 'northside' ELSE 'southside' END,"
    f" starts, 60, ARRAY['massage-60'], {appointment_status('a')}, 'staff', NULL, a % 100 = 3,"
    f" '{{}}', 'UTC' FROM generate_series(1, {APPOINTMENTS}) a {timed('a')}",
    "INSERT INTO explanations (appointment_id, appointment_version, summary, candidates)"
    f" SELECT {APPOINTMENT_ID.format(a='a')}, 1, 'filler', '[]'"
    f" FROM generate_series(1, {APPOINTMENTS}) a WHERE a % 25 = 1",
    "INSERT INTO hand_unlinks (appointment_id)"
    f" SELECT {APPOINTMENT_ID.format(a='a')} FROM generate_series(1, {APPOINTMENTS}) a"
    " WHERE a % 100 = 3",
    "INSERT INTO invoice_booking_requests (appointment_id)"
    f" SELECT {APPOINTMENT_ID.format(a='a')} FROM generate_series(1, {APPOINTMENTS}) a"
    " WHERE a % 100 = 7",
    # One invoice in ten shared with the next patient's household (R18).
    "INSERT INTO household_members (patient_id, invoice_id)"
    f" SELECT {patient_of_invoice('i + 1')}, {INVOICE_ID.format(i='i')}"
    f" FROM generate_series(1, {INVOICES}) i WHERE i % 10 = 0"
    f" AND {patient_of_invoice('i + 1')} <> {patient_of_invoice('i')}",
    "INSERT INTO patient_names (patient_id, name)"
    f" SELECT DISTINCT {patient_of_invoice('i')}, 'Filler Patient'"
    f" FROM generate_series(1, {INVOICES}) i",
]

INVOICING_FILL = [
    "INSERT INTO packages (package_id, terms) VALUES ('filler-10', '{}')",
    "INSERT INTO package_invoices (invoice_id, patient_id, package_id, package_name, channel,"
    " issued_at, issued_by, status, price_cents, paid_cents, refunded_cents, currency,"
    " pay_before_use, late_cancel_policy, location_id, time_zone, owed_cents)"
    f" SELECT {INVOICE_ID.format(i='i')}, {patient_of_invoice('i')}, 'filler-10', '10 x filler',"
    f" 'staff', {HISTORY_START} + i * interval '20 minutes', 'filler',"
    " CASE WHEN i % 50 = 0 THEN 'void' ELSE 'paid' END, 40000, 40000, 0, 'EUR', false, NULL,"
    " CASE WHEN i % 2 = 0 THEN 'northside' ELSE 'southside' END, 'UTC',"
    " CASE WHEN i % 50 = 0 THEN 0 ELSE 30000 END"
    f" FROM generate_series(1, {INVOICES}) i",
    "INSERT INTO invoice_lines (line_id, invoice_id, line_number, patient_id, fee_id,"
    " practitioner_ids, location_ids, valid_from, valid_until, status, appointment_id,"
    " appointment_starts_at, appointment_version, appointment_time_zone, note, version,"
    " booking_requested_at, share_cents)"
    f" SELECT {LINE_ID.format(g='g')}, {INVOICE_ID.format(i=invoice_of_line('g'))},"
    f" (g - 1) % {LINES_PER_INVOICE} + 1, {patient_of_invoice(invoice_of_line('g'))},"
    " CASE WHEN g % 7 = 0 THEN 'massage-30' ELSE 'massage-60' END, NULL,"
    " CASE WHEN g % 3 = 0 THEN ARRAY['northside'] END,"
    f" ({HISTORY_START} + g * interval '2 minutes')::date,"
    f" ({HISTORY_START} + g * interval '2 minutes')::date + 365, {line_status('g')},"
    f" CASE WHEN g % 2 = 0 THEN {APPOINTMENT_ID.format(a='g / 2')} END,"
    f" CASE WHEN g % 2 = 0 THEN {appointment_start('g / 2')} END,"
    " CASE WHEN g % 2 = 0 THEN 1 END, CASE WHEN g % 2 = 0 THEN 'UTC' END, NULL,"
    f" 1 + g % 2, NULL, 4000 FROM generate_series(1, {LINES}) g",
    # What each invoice sold and had used, as the revenue migration enters it (issue #22).
    "INSERT INTO revenue_entries (entry_id, invoice_id, kind, amount_cents, accounted_at)"
    f" SELECT {uid(11, 'i')}, {INVOICE_ID.format(i='i')}, 'sold', 40000,"
    f" {HISTORY_START} + i * interval '20 minutes' FROM generate_series(1, {INVOICES}) i",
    "INSERT INTO revenue_entries (entry_id, invoice_id, kind, amount_cents, accounted_at)"
    f" SELECT {uid(12, 'i')}, {INVOICE_ID.format(i='i')}, 'recognised', 10000,"
    f" {HISTORY_START} + i * interval '20 minutes' + interval '30 days'"
    f" FROM generate_series(1, {INVOICES}) i",
    "INSERT INTO known_appointments (appointment_id, patient_id, version, practitioner_id,"
    " location_id, starts_at, fee_ids, status, time_zone)"
    f" SELECT {APPOINTMENT_ID.format(a='a')}, {patient_of_invoice(invoice_of_line('2 * a'))}, 1,"
    " 'filler-dr-' || (a % 1000), CASE WHEN a % 2 = 0 THEN 'northside' ELSE 'southside' END,"
    f" starts, ARRAY['massage-60'], {appointment_status('a')}, 'UTC'"
    f" FROM generate_series(1, {APPOINTMENTS}) a {timed('a')}",
    "INSERT INTO link_versions (appointment_id, link_version, attended)"
    f" SELECT {APPOINTMENT_ID.format(a='a')}, 1, a % 2 = 0"
    f" FROM generate_series(1, {APPOINTMENTS}) a",
    "INSERT INTO waiting_links (line_id, appointment_id, appointment_version, command)"
    f" SELECT {LINE_ID.format(g='g')}, {uid(9, 'g')}, 1, '{{}}'"
    " FROM generate_series(1, 2000) g",
    "INSERT INTO refunds (refund_id, invoice_id, amount_cents, reason, refunded_by)"
    f" SELECT {uid(10, 'i')}, {INVOICE_ID.format(i='i')}, 40000, 'filler', 'filler'"
    f" FROM generate_series(1, {INVOICES}) i WHERE i % 50 = 25",
    "INSERT INTO payments (payment_id, invoice_id, amount_cents, paid_at, recorded_by)"
    f" SELECT {uid(8, 'i')}, {INVOICE_ID.format(i='i')}, 40000,"
    f" {HISTORY_START} + i * interval '20 minutes', 'filler' FROM generate_series(1, {INVOICES}) i",
]

FIRST_NAMES = (
    "ARRAY['anna', 'ben', 'carla', 'dmitri', 'eva', 'farid', 'greta', 'hugo', 'ines', 'jonas',"
    " 'kira', 'lars', 'mia', 'nils', 'olga', 'paul', 'rosa', 'sven', 'tara', 'udo']"
)

CALENDAR_FILL = [
    "INSERT INTO practitioners (practitioner_id, name)"
    " SELECT 'filler-dr-' || n, 'Dr Filler ' || n FROM generate_series(0, 999) n",
    "INSERT INTO locations (location_id, name) VALUES ('northside', 'Northside clinic'),"
    " ('southside', 'Southside clinic')",
    "INSERT INTO appointments (appointment_id, patient_id, practitioner_id, location_id,"
    " starts_at, ends_at, duration_minutes, fee_ids, status, source, invoice_id, line_id, version,"
    " booked_by, time_zone)"
    f" SELECT {APPOINTMENT_ID.format(a='a')}, {patient_of_invoice(invoice_of_line('2 * a'))},"
    " 'filler-dr-' || (a % 1000), CASE WHEN a % 2 = 0 THEN 'northside' ELSE 'southside' END,"
    " starts, starts + interval '60 minutes', 60,"
    f" ARRAY['massage-60'], {calendar_status('a')}, 'staff', NULL, NULL, 1, 'filler', 'UTC'"
    f" FROM generate_series(1, {APPOINTMENTS}) a {timed('a')}",
    "INSERT INTO package_notes (appointment_id, link_version, state, invoice_id, line_id,"
    " package_id, package_name, session_number, balance)"
    f" SELECT {APPOINTMENT_ID.format(a='a')}, 1, {line_status('2 * a')},"
    f" {INVOICE_ID.format(i=invoice_of_line('2 * a'))}, {LINE_ID.format(g='2 * a')}, 'filler-10',"
    f" '10 x filler', (2 * a - 1) % {LINES_PER_INVOICE} + 1,"
    """ '{"total": 10, "booked": 5, "used": 0, "remaining": 5}'"""
    f" FROM generate_series(1, {APPOINTMENTS}) a",
    "INSERT INTO patients (patient_id, name, date_of_birth, recorded_at, search_words, sort_name)"
    " SELECT 'filler-' || p, initcap(first) || ' ' || initcap(last),"
    " date '1940-01-01' + p % 25000, now(), ARRAY[first, last], first || ' ' || last"
    f" FROM generate_series(0, {PATIENTS - 1}) p,"
    f" LATERAL (SELECT ({FIRST_NAMES})[p % 20 + 1] AS first,"
    " 'q' || substr(md5('surname' || p), 1, 6) AS last) AS named",
    "INSERT INTO patient_search_words (word, patient_id)"
    " SELECT DISTINCT unnest(search_words), patient_id FROM patients",
]

FILL = {"calendar": CALENDAR_FILL, "invoicing": INVOICING_FILL, "matcher": MATCHER_FILL}
MIGRATIONS = {
    "calendar": "packline_calendar",
    "invoicing": "packline_invoicing",
    "matcher": "packline_matcher",
}

# Constraints and indexes of the public schema, to drop before the rows go in and build after
# (a sorted build is many times faster than a million index insertions).
CONSTRAINTS = (
    "SELECT conrelid::regclass::text AS tbl, conname, contype::text,"
    " pg_get_constraintdef(oid) AS def"
    " FROM pg_constraint WHERE contype IN ('p', 'u', 'x', 'f')"
    " AND connamespace = 'public'::regnamespace"
)
PLAIN_INDEXES = (
    "SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS def"
    " FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid"
    " WHERE t.relnamespace = 'public'::regnamespace AND NOT EXISTS (SELECT FROM pg_constraint c"
    " WHERE c.conindid = i.indexrelid AND c.contype IN ('p', 'u', 'x'))"
)


async def fill(conn: asyncpg.Connection, service: str) -> None:
    """Migrate an empty database, then fill it with a clinic's history. The history is written
    for the schema as its migrations leave it: a migration that adds a column the rows must
    have, or a table that grows, adds it here too."""
    await migrations.apply(
        conn,
        [*migrations.load("packline_core", "core"), *migrations.load(MIGRATIONS[service], service)],
    )
    await conn.execute("SET synchronous_commit = off; SET maintenance_work_mem = '256MB'")
    constraints = await conn.fetch(CONSTRAINTS)
    indexes = await conn.fetch(PLAIN_INDEXES)
    tables = await conn.fetch(
        "SELECT oid::regclass::text AS name FROM pg_class"
        " WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'"
    )
    async with conn.transaction():
        for row in sorted(constraints, key=lambda r: r["contype"] != "f"):  # foreign keys first
            await conn.execute(f'ALTER TABLE {row["tbl"]} DROP CONSTRAINT "{row["conname"]}"')
        # A disposable database: no WAL for the history (plans do not depend on it).
        for row in tables:
            await conn.execute(f"ALTER TABLE {row['name']} SET UNLOGGED")
        for row in indexes:
            await conn.execute(f"DROP INDEX {row['name']}")
        for statement in [*CORE_FILL, *FILL[service]]:
            await conn.execute(statement)
        for row in sorted(constraints, key=lambda r: r["contype"] == "f"):  # foreign keys last
            await conn.execute(
                f'ALTER TABLE {row["tbl"]} ADD CONSTRAINT "{row["conname"]}" {row["def"]}'
            )
        for row in indexes:
            await conn.execute(row["def"])
    await conn.execute("ANALYZE")


# --- recording what the services run ---------------------------------------------------------

SERVICES = ("calendar", "invoicing", "matcher")
# Statements that can have a plan; the rest (BEGIN, SET, LISTEN, DDL of migrations) have none.
PLANNABLE = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|WITH|VALUES)\b", re.IGNORECASE)
# asyncpg's own look-ups of types in the catalogue, when a statement first uses one.
CATALOGUE = re.compile(r"\bpg_catalog\.|\bpg_type\b", re.IGNORECASE)
KEPT_ARGUMENTS = 4  # distinct argument lists kept per statement


@dataclass
class Recorded:
    """Distinct statements each service's database ran, with some of the arguments they ran
    with (an executemany counts each row of arguments)."""

    databases: dict[str, str]  # database name -> service
    statements: dict[tuple[str, str], list[tuple[Any, ...]]] = field(default_factory=dict)

    def log(self, query: asyncpg.connection.LoggedQuery) -> None:
        service = self.databases.get(query.conn_params.database or "")
        if service is None or not PLANNABLE.match(query.query) or CATALOGUE.search(query.query):
            return
        runs = list(query.args or ())
        many = bool(runs) and all(isinstance(arguments, tuple) for arguments in runs)
        for arguments in runs if many else [tuple(runs)]:
            kept = self.statements.setdefault((service, query.query), [])
            if len(kept) < KEPT_ARGUMENTS and repr(arguments) not in map(repr, kept):
                kept.append(tuple(arguments))


@pytest.fixture
def record(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorded]:
    """Record every statement of every connection opened from now on (the services' pools,
    relays and migrations): asyncpg's query logger, added as each connection opens."""
    recorded = Recorded({})
    opened = asyncpg.connection.connect

    async def connect(*args: Any, **kwargs: Any) -> Any:
        conn = await opened(*args, **kwargs)
        conn.add_query_logger(recorded.log)
        return conn

    monkeypatch.setattr(asyncpg.connection, "connect", connect)  # the pools' way in
    monkeypatch.setattr(asyncpg, "connect", connect)  # the relay's and the migrations'
    yield recorded


# --- planning them --------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    service: str
    statement: str
    which: str  # "custom plan for (...)" or "generic plan"
    scans: list[str]
    plan: str


@dataclass(frozen=True)
class Index:
    table: str
    leading: str  # its first key column (or expression)
    partial: bool


INDEXES = (
    "SELECT c.relname AS name, t.relname AS tbl, pg_get_indexdef(i.indexrelid, 1, false)"
    " AS leading, i.indpred IS NOT NULL AS partial FROM pg_index i"
    " JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid"
    " WHERE t.relnamespace = 'public'::regnamespace"
)

# Nodes that read all their input before giving a row: a LIMIT above one stops nothing below.
BLOCKING = frozenset({"Sort", "Aggregate", "Hash", "Materialize", "SetOp", "WindowAgg"})


def full_scans(
    plan: dict[str, Any], indexes: dict[str, Index], limited: bool = False
) -> Iterator[str]:
    """The nodes of a plan that read a growing table whole: a sequential scan; or, with no LIMIT
    that can stop it, a scan of an index with no condition on its leading column (a B-tree
    without it is read from end to end), unless the index is partial with no condition at all
    (its predicate is then the condition)."""
    node = plan["Node Type"]
    limited = (limited or node == "Limit") and node not in BLOCKING
    index = indexes.get(plan.get("Index Name", ""))
    table = index.table if index is not None else plan.get("Relation Name")
    if table is not None and table not in SMALL_TABLES:
        parallel = "Parallel " if plan.get("Parallel Aware") else ""
        condition = plan.get("Index Cond", "")
        if node == "Seq Scan":
            yield f"{parallel}Seq Scan on {table}"
        elif index is not None and not limited:
            if not condition and not index.partial:
                yield f"{node} on {table} using {plan['Index Name']} with no condition"
            elif condition and not re.search(rf"\b{re.escape(index.leading)}\b", condition):
                yield (
                    f"{node} on {table} using {plan['Index Name']} with no condition on its"
                    f" leading column {index.leading}: {condition}"
                )
    for child in plan.get("Plans", ()):
        yield from full_scans(child, indexes, limited)


def relations(plan: dict[str, Any]) -> int:
    return int("Relation Name" in plan) + sum(relations(c) for c in plan.get("Plans", ()))


def parameters(statement: str) -> int:
    return max((int(n) for n in re.findall(r"\$(\d+)", statement)), default=0)


async def explain(conn: asyncpg.Connection, statement: str, *args: Any) -> dict[str, Any]:
    text = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {statement}", *args)
    return dict(json.loads(text)[0]["Plan"])


async def explain_text(conn: asyncpg.Connection, statement: str, *args: Any) -> str:
    rows = await conn.fetch(f"EXPLAIN {statement}", *args)
    return "\n".join(row[0] for row in rows)


async def generic(conn: asyncpg.Connection, statement: str) -> tuple[dict[str, Any], str]:
    """The generic plan of a statement with parameters (PostgreSQL 15: no GENERIC_PLAN)."""
    nulls = ", ".join(["NULL"] * parameters(statement))
    await conn.execute(f"PREPARE plan_check AS {statement}")
    try:
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        execute = f"EXECUTE plan_check({nulls})"
        return await explain(conn, execute), await explain_text(conn, execute)
    finally:
        await conn.execute("RESET plan_cache_mode; DEALLOCATE plan_check")


async def check_plans(
    conn: asyncpg.Connection, service: str, statement: str, runs: list[tuple[Any, ...]]
) -> list[Finding]:
    findings: list[Finding] = []
    indexes = {
        row["name"]: Index(row["tbl"], row["leading"], row["partial"])
        for row in await conn.fetch(INDEXES)
    }
    cheapest_custom = float("inf")
    for arguments in runs:
        plan = await explain(conn, statement, *arguments)
        cheapest_custom = min(cheapest_custom, float(plan["Total Cost"]))
        scans = list(full_scans(plan, indexes))
        if scans:
            text = await explain_text(conn, statement, *arguments)
            findings.append(
                Finding(service, statement, f"custom plan for {arguments!r}", scans, text)
            )
    if parameters(statement) and not findings:
        plan, text = await generic(conn, statement)
        # plancache.c: the generic plan replaces the custom ones when it costs no more than
        # they do with their planning (1000 * cpu_operator_cost per relation, plus one).
        margin = 1000 * 0.0025 * (relations(plan) + 1)
        scans = list(full_scans(plan, indexes))
        if scans and float(plan["Total Cost"]) <= cheapest_custom + margin:
            findings.append(Finding(service, statement, "generic plan", scans, text))
        elif scans:
            print(
                f"[{service}] a generic plan with {'; '.join(scans)} costs"
                f" {plan['Total Cost']}, the custom ones {cheapest_custom}: never chosen:"
                f" {statement}"
            )
    if findings:  # a table the fill left empty is scanned because it is empty: say so
        empty = set(await conn.fetchval(EMPTY_TABLES))
        for finding in findings:
            tables = sorted(t for t in empty if any(f" on {t}" in scan for scan in finding.scans))
            if tables:
                finding.scans.append(
                    f"the filled history has no rows in {', '.join(tables)}: give it rows in"
                    " the fill, in proportion, so its plans are judged at size"
                )
    return findings


EMPTY_TABLES = (
    "SELECT coalesce(array_agg(relname::text), '{}') FROM pg_class"
    " WHERE relnamespace = 'public'::regnamespace AND relkind = 'r' AND reltuples <= 0"
)


def report(findings: list[Finding]) -> str:
    return "\n\n".join(
        f"[{f.service}] {f.statement}\n  {f.which}: {'; '.join(f.scans)}\n"
        + "\n".join(f"    {line}" for line in f.plan.splitlines())
        for f in findings
    )


# --- the scenario -----------------------------------------------------------------------------

TEN = package("ten", count=10)
PREPAID = package("prepaid", count=2, pay_before_use=True, price_cents=9000)
STRICT = package("strict", count=4, practitioners=[DR_A]).model_copy(
    update={"late_cancel_policy": LateCancelPolicy(forfeit_within_hours=24, no_show_forfeits=True)}
)


@dataclass
class Clinic:
    """The three services on their filled databases, with the test's own connections to them."""

    services: dict[str, Service]
    databases: dict[str, asyncpg.Connection]
    producer: PacklineProducer
    events: PacklineConsumer
    http: dict[str, httpx.AsyncClient]

    async def has(self, service: str, query: str, *args: Any) -> None:
        async def known() -> bool:
            return bool(await self.databases[service].fetchval(query, *args))

        await eventually(known, what=f"the {service} to know: {query} {args}")

    async def buy(self, patient_id: str, package_id: str) -> PackageInvoice:
        invoice_id = uuid4()
        await self.producer.send(
            IssuePackageInvoice(
                patient_id=patient_id,
                invoice_id=invoice_id,
                package_id=package_id,
                channel=PurchaseChannel.STAFF,
                issued_by="reception:maria",
                issued_at=datetime.now(UTC),
            )
        )
        issued = await self.events.wait_for(
            PackageInvoiceIssued, lambda e: e.payload.invoice_id == invoice_id
        )
        await self.has("matcher", "SELECT 1 FROM invoices WHERE invoice_id = $1", invoice_id)
        return issued.payload.invoice

    async def book(self, patient_id: str, starts_at: datetime) -> UUID:
        command = booking(patient_id, starts_at)
        await self.producer.send(command)
        await self.events.wait_for(
            AppointmentBooked,
            lambda e: e.payload.appointment.appointment_id == command.appointment_id,
        )
        await self.has(
            "matcher",
            "SELECT 1 FROM appointments WHERE appointment_id = $1",
            command.appointment_id,
        )
        return command.appointment_id

    async def linked(self, appointment_id: UUID, link_version: int = 1) -> LineLinked:
        linked = await self.events.wait_for(
            LineLinked,
            lambda e: (
                e.payload.appointment_id == appointment_id
                and e.payload.link_version == link_version
            ),
        )
        return linked.payload

    async def unlinked(self, appointment_id: UUID, reason: UnlinkReason) -> None:
        await self.events.wait_for(
            LineUnlinked,
            lambda e: e.payload.appointment_id == appointment_id and e.payload.reason == reason,
        )

    async def get(self, service: str, url: str, **params: Any) -> Any:
        answer = await self.http[service].get(url, params=params)
        assert answer.status_code == 200, shown(answer)
        return answer.json()


async def run_the_clinic(clinic: Clinic) -> None:
    """Every handler path on the booking path and the other message kinds, and the main reads."""
    send = clinic.producer.send
    who = f"patient-{uuid4().hex[:8]}"
    await send(RegisterPatient(patient_id=who, name="Zephyrine Quillfeather"))
    # A booking no package covers yet; the purchase then links it (R12: waiting appointments).
    first = await clinic.book(who, days_ahead(3))
    invoice = await clinic.buy(who, "ten")
    await clinic.linked(first)
    # A booking in the calendar, linked by the matcher; then moved (R10), keeping its line.
    second = await clinic.book(who, days_ahead(4))
    await clinic.linked(second)
    await send(
        RescheduleAppointment(
            patient_id=who,
            appointment_id=second,
            starts_at=days_ahead(5, hour=15),
            requested_by="reception:maria",
        )
    )
    moved = await clinic.linked(second, link_version=2)
    # A cancel releases the first one's line (R9).
    await send(
        CancelAppointment(
            patient_id=who,
            appointment_id=first,
            cancelled_by="patient",
            cancelled_at=datetime.now(UTC),
        )
    )
    await clinic.unlinked(first, UnlinkReason.CANCELLED)
    # A booking from the invoice line over HTTP (R3), then attended (R14).
    line = invoice.lines[LINES_PER_INVOICE - 1]
    saved = await clinic.http["invoicing"].put(
        f"/invoices/{invoice.invoice_id}/lines/{line.line_id}/appointment",
        json={
            "starts_at": days_ahead(6, hour=9).isoformat(),
            "practitioner_id": DR_A,
            "location_id": NORTHSIDE,
        },
    )
    assert saved.status_code == 202, shown(saved)
    from_line = UUID(saved.json()["appointment_id"])
    await clinic.linked(from_line)
    await send(
        RecordAttendance(
            patient_id=who,
            appointment_id=from_line,
            attendance=Attendance.ARRIVED,
            recorded_by="reception:maria",
        )
    )
    await clinic.events.wait_for(LineUsed, lambda e: e.payload.appointment_id == from_line)
    # Staff unlink the moved one from the invoice over HTTP (R8).
    unassigned = await clinic.http["invoicing"].delete(
        f"/invoices/{invoice.invoice_id}/lines/{moved.line.line_id}/appointment",
        params={"unassigned_by": "maria"},
    )
    assert unassigned.status_code == 200, shown(unassigned)
    await clinic.unlinked(second, UnlinkReason.UNASSIGNED_BY_STAFF)
    # Pay before use: booked, bought, paid (the payment links it), then the invoice voided.
    payer = f"patient-{uuid4().hex[:8]}"
    waiting = await clinic.book(payer, days_ahead(7))
    prepaid = await clinic.buy(payer, "prepaid")
    await send(
        RecordPayment(
            patient_id=payer,
            invoice_id=prepaid.invoice_id,
            payment_id=uuid4(),
            amount_cents=PREPAID.price_cents,
            paid_at=datetime.now(UTC),
            recorded_by="till",
        )
    )
    await clinic.events.wait_for(
        PaymentRecorded, lambda e: e.payload.invoice_id == prepaid.invoice_id
    )
    await clinic.linked(waiting)
    await send(
        VoidPackageInvoice(
            patient_id=payer,
            invoice_id=prepaid.invoice_id,
            voided_by="manager",
            reason="sold in error",
        )
    )
    await clinic.events.wait_for(
        PackageInvoiceVoided, lambda e: e.payload.invoice_id == prepaid.invoice_id
    )
    await clinic.unlinked(waiting, UnlinkReason.INVOICE_VOIDED)
    await other_outcomes(clinic)
    # The calendar has applied the last line event once its panel drops the package.
    await get_until(
        clinic.http["calendar"],
        f"/appointments/{waiting}",
        lambda panel: panel["package"] is None,
        what="the calendar to drop the voided invoice's package note",
    )
    # The main reads.
    await clinic.get("invoicing", f"/invoices/{invoice.invoice_id}")
    await clinic.get("invoicing", f"/patients/{who}/invoices")
    await clinic.get("invoicing", "/links")
    await clinic.get("calendar", f"/patients/{who}/appointments")
    await clinic.get("calendar", f"/appointments/{second}")
    await clinic.get(
        "calendar", "/appointments", date=days_ahead(4).date().isoformat(), location_id=NORTHSIDE
    )
    await clinic.get("calendar", "/links")
    await clinic.get(
        "calendar",
        "/availability",
        practitioner_id=DR_A,
        duration_minutes=60,
        starts_at=days_ahead(8).isoformat(),
    )
    await get_until(
        clinic.http["calendar"],
        "/patients",
        lambda found: [p["patient_id"] for p in found["patients"]] == [who],
        params={"name": "zephyrine quill"},
        what="the directory to find the patient by name",
    )
    await clinic.get("calendar", f"/patients/{who}")
    await clinic.get("matcher", "/links")
    await clinic.get("matcher", f"/patients/{who}/appointments")
    await clinic.get("matcher", f"/patients/{who}/links")
    await clinic.get("matcher", f"/appointments/{second}/explanation")


async def other_outcomes(clinic: Clinic) -> None:
    """A late cancel and a no-show (forfeited, R9), a change that no longer fits (R10), a
    delete, a booking from the line the calendar refuses (R3), a refund."""
    send = clinic.producer.send
    other = f"patient-{uuid4().hex[:8]}"
    strict = await clinic.buy(other, "strict")
    late, missed, changed = [
        await clinic.book(other, days_ahead(days, hour=12)) for days in (2, 3, 4)
    ]
    for appointment in (late, missed, changed):
        await clinic.linked(appointment)
    await send(
        CancelAppointment(
            patient_id=other,
            appointment_id=late,
            cancelled_by="patient",
            cancelled_at=days_ahead(2, hour=9),
        )
    )
    await send(
        RecordAttendance(
            patient_id=other,
            appointment_id=missed,
            attendance=Attendance.NO_SHOW,
            recorded_by="reception:maria",
        )
    )
    for appointment in (late, missed):
        await clinic.events.wait_for(LineForfeited, about(appointment))
    await send(
        ChangeAppointment(
            patient_id=other, appointment_id=changed, practitioner_id=DR_B, requested_by="m"
        )
    )
    await clinic.unlinked(changed, UnlinkReason.NO_LONGER_FITS)
    await send(DeleteAppointment(patient_id=other, appointment_id=changed, deleted_by="m"))
    await clinic.events.wait_for(
        AppointmentDeleted, lambda e: e.payload.appointment.appointment_id == changed
    )
    line = strict.lines[-1]
    taken = await clinic.http["invoicing"].put(
        f"/invoices/{strict.invoice_id}/lines/{line.line_id}/appointment",
        json={"starts_at": days_ahead(3, hour=12).isoformat(), "location_id": NORTHSIDE},
    )
    assert taken.status_code == 202, shown(taken)
    await clinic.events.wait_for(
        LineBookingRefused, lambda e: e.payload.line.line_id == line.line_id
    )
    await send(
        RecordPayment(
            patient_id=other,
            invoice_id=strict.invoice_id,
            payment_id=uuid4(),
            amount_cents=STRICT.price_cents,
            paid_at=datetime.now(UTC),
            recorded_by="till",
        )
    )
    await send(
        RefundPackageInvoice(
            patient_id=other,
            invoice_id=strict.invoice_id,
            refund_id=uuid4(),
            amount_cents=STRICT.price_cents,
            refunded_by="manager",
            reason="moved away",
        )
    )
    await clinic.events.wait_for(
        PackageInvoiceRefunded, lambda e: e.payload.invoice_id == strict.invoice_id
    )


# What the scenario must have made each service run (else it no longer covers its path).
COVERED = {
    "matcher": [
        "NOT EXISTS (SELECT 1 FROM lines l WHERE l.appointment_id",  # a purchase's search
        "UPDATE invoices SET redeemable = $2",  # a payment
        "FROM unnest($1::uuid[]) AS ids(id) LEFT JOIN appointments",  # a batch's appointments
        "JOIN lines o ON o.patient_id = w.patient_id",  # and their patients' lines
        "JOIN household_members m ON m.patient_id = w.patient_id",  # and those shared with them
        "moved AS (UPDATE lines l SET status = x.status",  # a batch's changes, e.g. a link
        "INSERT INTO hand_unlinks",  # a booking from the line refused
    ],
    "invoicing": [
        # Every transition of a line (booking requested, linked, released, used, forfeited) is
        # this one statement (packline_invoicing.lines); the scenario makes each of them.
        "UPDATE invoice_lines SET status = $2",
        "UPDATE package_invoices SET status = 'void'",  # a void
        "INSERT INTO payments",  # a payment
        "INSERT INTO refunds",  # a refund
    ],
    "calendar": [
        "INSERT INTO package_notes",  # a line event
        "INSERT INTO patients",  # the directory
        "FROM patient_search_words",  # a search by name
    ],
}


@pytest.fixture
async def clients() -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    opened: dict[str, httpx.AsyncClient] = {}
    yield opened
    for client in opened.values():
        await client.aclose()


async def test_every_statement_the_services_run_reads_a_million_lines_by_index(
    create_database: CreateDatabase,
    record: Recorded,
    start_service: StartService,
    producer: PacklineProducer,
    read_events: ReadEvents,
    clients: dict[str, httpx.AsyncClient],
) -> None:
    began = time.monotonic()
    urls = {name: await create_database(name) for name in SERVICES}
    databases = {name: await OPEN(url) for name, url in urls.items()}
    try:
        await asyncio.gather(*(fill(databases[name], name) for name in SERVICES))
        filled = time.monotonic()
        record.databases.update({url.rpartition("/")[2]: name for name, url in urls.items()})
        services = {name: await start_service(name, database_url=urls[name]) for name in SERVICES}
        for message in [*SETUP[:4], *fee_commands(), TEN, PREPAID, STRICT]:
            await producer.send(message)

        async def loaded() -> bool:
            return bool(
                await databases["calendar"].fetchval(
                    "SELECT count(*) = 2 FROM fees WHERE fee_id LIKE 'massage-%'"
                )
                and await databases["calendar"].fetchval(
                    "SELECT count(*) = 2 FROM practitioners WHERE practitioner_id LIKE 'dr-%'"
                )
                and await databases["matcher"].fetchval("SELECT count(*) = 4 FROM names")
                and await databases["invoicing"].fetchval(
                    "SELECT count(*) = 3 FROM packages"
                    " WHERE package_id IN ('ten', 'prepaid', 'strict')"
                )
                and await databases["invoicing"].fetchval("SELECT count(*) = 2 FROM locations")
            )

        await eventually(loaded, what="the clinic's directory and catalogue")
        clients.update(
            {
                name: httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=service.http), base_url="http://x"
                )
                for name, service in services.items()
            }
        )
        events = await read_events(CALENDAR_EVENTS, INVOICING_EVENTS, MATCHER_EVENTS)
        await run_the_clinic(Clinic(services, databases, producer, events, clients))
        ran = time.monotonic()

        for service, fragments in COVERED.items():
            statements = [s for (owner, s) in record.statements if owner == service]
            missing = [f for f in fragments if not any(f in s for s in statements)]
            assert not missing, f"the scenario no longer makes the {service} run {missing}"
        findings: list[Finding] = []
        for (service, statement), runs in sorted(record.statements.items()):
            findings += await check_plans(databases[service], service, statement, runs)
        counts = {name: sum(owner == name for owner, _ in record.statements) for name in SERVICES}
        print(
            f"filled in {filled - began:.1f} s, scenario {ran - filled:.1f} s, planned"
            f" {sum(counts.values())} statements {counts} in {time.monotonic() - ran:.1f} s"
        )
        assert not findings, (
            f"{len(findings)} statements read a growing table whole on a database of"
            f" {LINES:,} lines:\n\n{report(findings)}"
        )
    finally:
        for conn in databases.values():
            await conn.close()
