"""Revenue per session and the deferred-revenue report (issue #22 points 2 and 3), with the three
real services on the real broker: packages are sold, paid, booked, attended, forfeited (a late
cancel under the package's policy), refunded and voided; then the report is recomputed from the
invoicing events read off the topic, independently of the service, and must equal the HTTP
report to the cent, as JSON and as CSV."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

import httpx
import pytest
from packline_contracts.appointments import Attendance, CancelAppointment, RecordAttendance
from packline_contracts.envelope import Envelope
from packline_contracts.invoices import (
    IssuePackageInvoice,
    LineForfeited,
    LineLinked,
    LineUsed,
    PackageInvoice,
    PackageInvoiceIssued,
    PackageInvoiceRefunded,
    PackageInvoiceToppedUp,
    PackageInvoiceVoided,
    PaymentRecorded,
    PurchaseChannel,
    RecordPayment,
    RefundPackageInvoice,
    SessionsExpired,
    SessionsTransferred,
    VoidPackageInvoice,
)
from packline_contracts.topics import INVOICING_EVENTS
from packline_contracts.types import LateCancelPolicy
from packline_core import issuer

from tests.clinic import (
    NORTHSIDE,
    SETUP,
    SOUTHSIDE,
    booking,
    days_ahead,
    fee_commands,
    package,
    patient,
)
from tests.conftest import ReadEvents, StartService
from tests.helpers import eventually
from tests.integration.test_identity import AUDIENCE, local_issuer
from tests.integration.test_identity import client as staff_client
from tests.integration.test_invoicing import _has_package
from tests.system import System, http, start_system

pytestmark = pytest.mark.infra

TRIO = package("trio", count=3, price_cents=10000).model_copy(
    update={"late_cancel_policy": LateCancelPolicy(forfeit_within_hours=24)}
)
FIVE = package("five", count=5, price_cents=40000)
KINDS = (
    "sold",
    "recognised",
    "forfeited",
    "expired",
    "transferred_in",
    "transferred_out",
    "refunded",
    "voided",
)
ADDS_TO_OWED = {"sold", "transferred_in"}


@pytest.fixture
async def system(start_service: StartService, producer: Any, read_events: ReadEvents) -> System:
    return await start_system(start_service, producer, read_events, [TRIO, FIVE])


@pytest.fixture
async def client(system: System) -> AsyncIterator[httpx.AsyncClient]:
    async with http(system.invoicing) as invoicing:
        yield invoicing


async def pay(system: System, invoice: PackageInvoice, cents: int) -> None:
    payment_id = uuid4()
    await system.producer.send(
        RecordPayment(
            patient_id=invoice.patient_id,
            invoice_id=invoice.invoice_id,
            payment_id=payment_id,
            amount_cents=cents,
            paid_at=datetime.now(UTC),
            recorded_by="billing:bo",
        )
    )
    await system.events.wait_for(PaymentRecorded, lambda e: e.payload.payment_id == payment_id)


async def refund(system: System, invoice: PackageInvoice, cents: int) -> PackageInvoiceRefunded:
    refund_id = uuid4()
    await system.producer.send(
        RefundPackageInvoice(
            patient_id=invoice.patient_id,
            invoice_id=invoice.invoice_id,
            refund_id=refund_id,
            amount_cents=cents,
            refunded_by="billing:bo",
            reason="moving away",
        )
    )
    event = await system.events.wait_for(
        PackageInvoiceRefunded, lambda e: e.payload.refund_id == refund_id
    )
    return event.payload


async def book_linked(system: System, who: str, days: int, hour: int) -> tuple[UUID, datetime]:
    command = booking(who, days_ahead(days, hour))
    await system.book(command)
    await system.events.wait_for(
        LineLinked, lambda e: e.payload.appointment_id == command.appointment_id
    )
    return command.appointment_id, command.starts_at


async def attend(system: System, who: str, appointment_id: UUID) -> LineUsed:
    await system.producer.send(
        RecordAttendance(
            patient_id=who,
            appointment_id=appointment_id,
            attendance=Attendance.ARRIVED,
            recorded_by="dr-adams",
        )
    )
    event = await system.events.wait_for(
        LineUsed, lambda e: e.payload.appointment_id == appointment_id
    )
    return event.payload


def recomputed(
    events: list[Any], first: date, last: date, location_id: str | None = None
) -> list[dict[str, Any]]:
    """The report from the events alone: every amount at its instant's local day at the
    selling location; before ``first`` it is owed at the start, after ``last`` ignored."""
    invoices: dict[UUID, PackageInvoice] = {}
    entries: list[tuple[UUID, str, int | None, datetime | None]] = []
    seen: set[UUID] = set()
    for envelope in events:
        if envelope.message_id in seen:
            continue  # the same event read twice (a resend) counts once
        seen.add(envelope.message_id)
        e = envelope.payload
        if isinstance(e, PackageInvoiceIssued):
            invoices[e.invoice_id] = e.invoice
            if (
                e.transferred_from is None
            ):  # a transfer's invoice owes what SessionsTransferred says
                entries.append((e.invoice_id, "sold", e.invoice.price_cents, e.invoice.issued_at))
        elif isinstance(e, PackageInvoiceToppedUp):
            entries.append((e.invoice_id, "sold", e.sold_cents, e.accounted_at))
        elif isinstance(e, SessionsTransferred):
            entries.append((e.invoice_id, "transferred_out", e.transferred_cents, e.accounted_at))
            entries.append((e.to_invoice_id, "transferred_in", e.transferred_cents, e.accounted_at))
        elif isinstance(e, SessionsExpired):
            entries.append((e.invoice_id, "expired", e.expired_cents, e.accounted_at))
        elif isinstance(e, LineUsed):
            entries.append((e.invoice_id, "recognised", e.recognised_cents, e.accounted_at))
        elif isinstance(e, LineForfeited):
            entries.append((e.invoice_id, "forfeited", e.forfeited_cents, e.accounted_at))
        elif isinstance(e, PackageInvoiceRefunded):
            entries.append((e.invoice_id, "refunded", e.refunded_owed_cents, e.accounted_at))
            entries.append(
                (e.invoice_id, "refunded_recognised", e.refunded_recognised_cents, e.accounted_at)
            )
        elif isinstance(e, PackageInvoiceVoided):
            entries.append((e.invoice_id, "voided", e.voided_cents, e.accounted_at))
    months = sorted({f"{d.year:04d}-{d.month:02d}" for d in days(first, last)})
    opening: dict[tuple[str, str], int] = defaultdict(int)
    moved: dict[tuple[str, str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for invoice_id, kind, amount, at in entries:
        assert amount is not None and at is not None, f"{kind} of {invoice_id} has no amount"
        invoice = invoices[invoice_id]
        if location_id is not None and invoice.location_id != location_id:
            continue
        day = at.astimezone(ZoneInfo(invoice.time_zone)).date()
        group = (invoice.package_id, invoice.currency)
        sign = 1 if kind in ADDS_TO_OWED else 0 if kind == "refunded_recognised" else -1
        if day < first:
            opening[group] += sign * amount
        elif day <= last:
            moved[(*group, f"{day.year:04d}-{day.month:02d}")][kind] += amount
    rows = []
    for group in sorted(set(opening) | {(p, c) for p, c, _ in moved}):
        owed = opening[group]
        if not owed and not any(moved[(*group, m)] for m in months if (*group, m) in moved):
            continue
        for month in months:
            sums = moved.get((*group, month), {})
            start = owed
            owed += sum(sums.get(k, 0) * (1 if k in ADDS_TO_OWED else -1) for k in KINDS)
            rows.append(
                {"package_id": group[0], "currency": group[1], "month": month}
                | {"opening_owed_cents": start}
                | {f"{kind}_cents": sums.get(kind, 0) for kind in KINDS}
                | {"refunded_recognised_cents": sums.get("refunded_recognised", 0)}
                | {"owed_cents": owed}
            )
    return rows


def about_invoice(invoice_id: UUID) -> Callable[[Envelope[Any]], bool]:
    return lambda envelope: bool(envelope.payload.invoice_id == invoice_id)


def same(wanted: Any) -> Callable[[Envelope[Any]], bool]:
    return lambda envelope: bool(envelope.payload == wanted)


def days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def csv_rows(text: str) -> list[dict[str, Any]]:
    text_columns = ("package_id", "currency", "month")
    return [
        {key: value if key in text_columns else int(value) for key, value in row.items()}
        for row in csv.DictReader(io.StringIO(text))
    ]


async def test_the_report_recomputed_from_the_events_equals_the_http_report_to_the_cent(
    system: System, client: httpx.AsyncClient, read_events: ReadEvents
) -> None:
    now = datetime.now(UTC)
    # A: 3 sessions for 100.00 sold 45 days ago at Northside (before the period: owed at its
    # start), paid; one session used, one forfeited by a late cancel, then 50.00 refunded.
    a_who, b_who, c_who, d_who = (patient() for _ in range(4))
    a = await system.buy(a_who, "trio", location_id=NORTHSIDE, issued_at=now - timedelta(days=45))
    assert [line.share_cents for line in a.lines] == [3334, 3333, 3333]
    assert a.owed_cents == 10000 and a.location_id == NORTHSIDE
    await pay(system, a, 10000)
    used_at, _ = await book_linked(system, a_who, 2, 9)
    spent = await attend(system, a_who, used_at)
    assert (spent.recognised_cents, spent.owed_cents) == (3334, 6666)
    late, late_starts = await book_linked(system, a_who, 3, 10)
    await system.producer.send(
        CancelAppointment(
            patient_id=a_who,
            appointment_id=late,
            cancelled_by="patient",
            cancelled_at=late_starts - timedelta(hours=3),
        )
    )
    forfeited = await system.events.wait_for(
        LineForfeited, lambda e: e.payload.appointment_id == late
    )
    assert (forfeited.payload.forfeited_cents, forfeited.payload.owed_cents) == (3333, 3333)
    partial = await refund(system, a, 5000)  # more than is owed: 16.67 of it was recognised
    assert (partial.refunded_owed_cents, partial.refunded_recognised_cents) == (3333, 1667)
    assert partial.owed_cents == 0

    # B: 5 sessions for 400.00 at Southside, paid, one used, refunded 100.00 then the rest.
    b = await system.buy(b_who, "five", location_id=SOUTHSIDE)
    await pay(system, b, 40000)
    appointment, _ = await book_linked(system, b_who, 2, 11)
    assert (await attend(system, b_who, appointment)).recognised_cents == 8000
    first_refund = await refund(system, b, 10000)
    assert (first_refund.refunded_owed_cents, first_refund.owed_cents) == (10000, 22000)
    full = await refund(system, b, 30000)
    assert (full.refunded_owed_cents, full.refunded_recognised_cents, full.owed_cents) == (
        22000,
        8000,
        0,
    )

    # C: voided unpaid; D: sold and left alone (still owed in full).
    c = await system.buy(c_who, "five", location_id=NORTHSIDE)
    await system.producer.send(
        VoidPackageInvoice(
            patient_id=c_who, invoice_id=c.invoice_id, voided_by="billing:bo", reason="mistake"
        )
    )
    voided = await system.events.wait_for(
        PackageInvoiceVoided, lambda e: e.payload.invoice_id == c.invoice_id
    )
    assert (voided.payload.voided_cents, voided.payload.owed_cents) == (40000, 0)
    d = await system.buy(d_who, "five", location_id=NORTHSIDE)

    # Everything read off the topic again, from its beginning, by a reader of its own.
    reader = await read_events(INVOICING_EVENTS)
    accounted: list[Any] = [spent, forfeited.payload, partial, first_refund, full, voided.payload]
    for wanted in accounted:
        await reader.wait_for(type(wanted), same(wanted))
    await reader.wait_for(PackageInvoiceIssued, lambda e: e.payload.invoice_id == d.invoice_id)
    first = (now - timedelta(days=10)).date().replace(day=1)
    last = (now + timedelta(days=40)).date()
    for location in (None, NORTHSIDE, SOUTHSIDE):
        query = {"from": first.isoformat(), "to": last.isoformat()}
        if location:
            query["location_id"] = location
        answer = await client.get("/reports/deferred-revenue", params=query)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        expected = recomputed(reader.received, first, last, location)
        assert body["rows"] == expected
        as_csv = await client.get("/reports/deferred-revenue", params=query | {"format": "csv"})
        assert as_csv.status_code == 200 and as_csv.headers["content-type"].startswith("text/csv")
        assert csv_rows(as_csv.text) == expected

    answer = await client.get(
        "/reports/deferred-revenue", params={"from": first.isoformat(), "to": last.isoformat()}
    )
    (eur,) = answer.json()["totals"]
    assert eur == {
        "currency": "EUR",
        "opening_owed_cents": 10000,  # A, sold before the period
        "sold_cents": 3 * 40000,
        "recognised_cents": 3334 + 8000,
        "forfeited_cents": 3333,
        "expired_cents": 0,
        "transferred_in_cents": 0,
        "transferred_out_cents": 0,
        "refunded_cents": 3333 + 10000 + 22000,
        "voided_cents": 40000,
        "refunded_recognised_cents": 1667 + 8000,
        "owed_cents": 40000,  # D
    }
    # The database agrees with the events: what each invoice still owes.
    owed = await system.invoicing.pool.fetch(
        "SELECT invoice_id, owed_cents FROM package_invoices ORDER BY owed_cents"
    )
    assert [row["owed_cents"] for row in owed] == [0, 0, 0, 40000]


async def test_a_bad_period_is_refused_naming_it(system: System, client: httpx.AsyncClient) -> None:
    backwards = await client.get(
        "/reports/deferred-revenue", params={"from": "2026-03-01", "to": "2026-02-01"}
    )
    assert backwards.status_code == 422 and "ends before it begins" in backwards.text
    long = await client.get(
        "/reports/deferred-revenue", params={"from": "2020-01-01", "to": "2026-01-01"}
    )
    assert long.status_code == 422 and "60 months" in long.text
    missing = await client.get("/reports/deferred-revenue", params={"from": "2026-03-01"})
    assert missing.status_code == 422


async def test_the_report_shows_only_invoices_sold_at_the_callers_clinics(
    start_service: StartService, producer: Any, read_events: ReadEvents, tmp_path: Path
) -> None:
    keys = issuer.Keys(tmp_path / "issuer-keys.json")
    events = await read_events(INVOICING_EVENTS)
    async with local_issuer(keys) as issuer_url:
        oidc: dict[str, Any] = {
            "oidc_issuer": issuer_url,
            "oidc_audience": AUDIENCE,
            "staff_api_open": False,
        }

        def token(role: str, clinics: list[str] | None) -> str:
            claims: dict[str, Any] = {"sub": "bo", "name": "Bo", "role": role}
            if clinics is not None:
                claims["clinics"] = clinics
            return issuer.mint(keys, issuer=issuer_url, audience=AUDIENCE, **claims)

        await start_service("calendar", **oidc)
        invoicing = await start_service("invoicing", **oidc)
        for message in [*SETUP[:2], *fee_commands(), FIVE]:
            await producer.send(message)

        async def ready() -> bool:
            places = await invoicing.pool.fetchval("SELECT count(*) FROM locations")
            return bool(places == 2 and await _has_package(invoicing, "five"))

        await eventually(ready, what="the catalogue and the locations")
        now = datetime.now(UTC)
        for location in (NORTHSIDE, SOUTHSIDE, SOUTHSIDE):
            invoice_id = uuid4()
            await producer.send(
                IssuePackageInvoice(
                    patient_id=patient(),
                    invoice_id=invoice_id,
                    package_id="five",
                    channel=PurchaseChannel.STAFF,
                    issued_by="bo",
                    issued_at=now,
                    location_id=location,
                )
            )
            await events.wait_for(PackageInvoiceIssued, about_invoice(invoice_id))
        period = {"from": now.date().isoformat(), "to": now.date().isoformat()}

        async def sold(role: str, clinics: list[str] | None, **query: str) -> Any:
            async with staff_client(invoicing, token(role, clinics)) as http_client:
                answer = await http_client.get("/reports/deferred-revenue", params=period | query)
            if answer.status_code != 200:
                return answer.status_code
            return sum(row["sold_cents"] for row in answer.json()["rows"])

        assert await sold("billing", [NORTHSIDE]) == 40000
        assert await sold("admin", [SOUTHSIDE]) == 80000
        assert await sold("billing", [NORTHSIDE, SOUTHSIDE]) == 120000
        assert await sold("billing", [NORTHSIDE, SOUTHSIDE], location_id=SOUTHSIDE) == 80000
        assert await sold("billing", [NORTHSIDE], location_id=SOUTHSIDE) == 403
        assert await sold("billing", []) == 0  # a token naming no clinic sees no sale's
        assert await sold("reception", [NORTHSIDE]) == 403  # reception may not read reports
        assert await sold("practitioner", [NORTHSIDE]) == 403
