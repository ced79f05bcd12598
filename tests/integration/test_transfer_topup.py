"""Top-up and transfer (R18, issue #22 point 5) with the three real services on the real broker
and databases: a top-up adds sessions at a price and the patient's waiting appointment links to
one; a transfer moves unbooked sessions to another patient's new invoice, the old lines are never
redeemable again and the recipient's waiting appointment links; the deferred-revenue report
follows both to the cent (a top-up is sold; a transfer's shares leave the old invoice and are
owed by the new one); retries apply nothing twice; refusals name the field; a transfer goes only
to a patient the caller's clinics see."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
from packline_contracts.ids import derived_id
from packline_contracts.invoices import (
    InvoiceCommandRefused,
    LineLinked,
    LineStatus,
    PackageInvoiceIssued,
    PackageInvoiceToppedUp,
    PackageInvoiceVoided,
    SessionsTransferred,
    TopUpPackageInvoice,
    TransferSessions,
    VoidPackageInvoice,
)
from packline_contracts.matching import AppointmentNotMatched
from packline_core import issuer

from tests.clinic import NORTHSIDE, SOUTHSIDE, booking, days_ahead, package, patient
from tests.conftest import ReadEvents, StartService
from tests.integration.test_identity import AUDIENCE, local_issuer
from tests.integration.test_identity import client as client_with
from tests.integration.test_revenue import recomputed
from tests.system import System, http, start_system

pytestmark = pytest.mark.infra

# 1 session for 100.00; a top-up adds more at its own price.
SINGLE = package("single", count=1, price_cents=10000)
# 3 sessions for 100.00: shares 33.34, 33.33, 33.33.
THREE = package("three", count=3, price_cents=10000)


@pytest.fixture
async def system(start_service: StartService, producer: Any, read_events: ReadEvents) -> System:
    return await start_system(start_service, producer, read_events, [SINGLE, THREE])


@pytest.fixture
async def client(system: System) -> AsyncIterator[httpx.AsyncClient]:
    async with http(system.invoicing) as invoicing:
        yield invoicing


def period() -> tuple[date, date]:
    today = datetime.now(UTC).date()
    return today.replace(day=1), today + timedelta(days=40)


async def report_totals(client: httpx.AsyncClient) -> dict[str, Any]:
    first, last = period()
    answer = await client.get(
        "/reports/deferred-revenue", params={"from": first.isoformat(), "to": last.isoformat()}
    )
    assert answer.status_code == 200, answer.text
    (eur,) = answer.json()["totals"]
    return dict(eur)


async def report_equals_the_events(system: System, client: httpx.AsyncClient) -> None:
    """The HTTP report's rows are what the invoicing events read off the topic say, to the cent
    (recomputed as tests/integration/test_revenue.py does)."""
    first, last = period()
    answer = await client.get(
        "/reports/deferred-revenue", params={"from": first.isoformat(), "to": last.isoformat()}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["rows"] == recomputed(system.events.received, first, last)


async def count(system: System, query: str, *args: Any) -> int:
    return int(await system.invoicing.pool.fetchval(query, *args))


async def test_a_top_up_adds_sessions_at_a_price_and_a_waiting_appointment_links(
    system: System, client: httpx.AsyncClient
) -> None:
    who = patient()
    invoice = await system.buy(who, "single", location_id=NORTHSIDE)
    first = booking(who, days_ahead(2, 9))
    await system.book(first)
    await system.events.wait_for(
        LineLinked, lambda e: e.payload.appointment_id == first.appointment_id
    )
    # Its only session is booked: the next appointment waits, explained (R7).
    waiting = booking(who, days_ahead(3, 9))
    await system.book(waiting)
    await system.events.wait_for(
        AppointmentNotMatched, lambda e: e.payload.appointment_id == waiting.appointment_id
    )
    before = await report_totals(client)
    assert (before["sold_cents"], before["owed_cents"]) == (10000, 10000)

    topup_id = uuid4()
    body = {
        "sessions": 2,
        "price_cents": 5001,
        "reason": "two more at the returning-patient price",
        "topup_id": str(topup_id),
        "topped_up_by": "billing:bo",
    }
    answer = await client.post(f"/invoices/{invoice.invoice_id}/top-ups", json=body)
    assert answer.status_code == 201, answer.text
    shown = answer.json()
    assert [line["line_number"] for line in shown["lines"]] == [1, 2, 3]
    assert [line["share_cents"] for line in shown["lines"]] == [10000, 2501, 2500]
    assert (shown["price_cents"], shown["owed_cents"]) == (15001, 15001)

    topped = (
        await system.events.wait_for(
            PackageInvoiceToppedUp, lambda e: e.payload.topup_id == topup_id
        )
    ).payload
    assert [line.line_number for line in topped.lines] == [2, 3]
    assert {line.status for line in topped.lines} == {LineStatus.OPEN}
    assert (topped.sold_cents, topped.price_cents, topped.owed_cents) == (5001, 15001, 15001)
    assert (topped.topped_up_by, topped.sessions, topped.balance.total) == ("billing:bo", 2, 3)
    assert topped.lines[0].valid_until == invoice.lines[0].valid_until

    # The waiting appointment links to the first added session (R12, R11's line order).
    linked = await system.events.wait_for(
        LineLinked, lambda e: e.payload.appointment_id == waiting.appointment_id
    )
    assert (linked.payload.invoice_id, linked.payload.session_number) == (invoice.invoice_id, 2)

    # The report counts the top-up's price as sold, to the cent.
    after = await report_totals(client)
    assert (after["sold_cents"], after["owed_cents"]) == (15001, 15001)
    await report_equals_the_events(system, client)
    audit = await system.invoicing.pool.fetchrow(
        "SELECT * FROM invoice_topups WHERE topup_id = $1", topup_id
    )
    assert audit is not None and (audit["topped_up_by"], audit["sessions"]) == ("billing:bo", 2)

    # The same top-up again (a retry) adds nothing and answers the same.
    again = await client.post(f"/invoices/{invoice.invoice_id}/top-ups", json=body)
    assert again.status_code == 201, again.text
    assert len(again.json()["lines"]) == 3
    assert await count(system, "SELECT count(*) FROM invoice_topups") == 1
    assert (await report_totals(client))["sold_cents"] == 15001


async def test_a_transfer_moves_unbooked_sessions_to_another_patients_new_invoice(
    system: System, client: httpx.AsyncClient
) -> None:
    giver, recipient = patient(), patient()
    invoice = await system.buy(giver, "three", location_id=NORTHSIDE)
    kept = booking(giver, days_ahead(2, 9))
    await system.book(kept)
    await system.events.wait_for(
        LineLinked, lambda e: e.payload.appointment_id == kept.appointment_id
    )
    # The recipient's appointment waits: no package of theirs covers it yet.
    theirs = booking(recipient, days_ahead(4, 11))
    await system.book(theirs)

    transfer_id = uuid4()
    new_invoice = derived_id("transfer", transfer_id)
    await system.producer.send(
        TransferSessions(
            patient_id=giver,
            invoice_id=invoice.invoice_id,
            transfer_id=transfer_id,
            to_patient_id=recipient,
            sessions=2,
            reason="given to her daughter",
            transferred_by="manager:li",
        )
    )
    moved = (
        await system.events.wait_for(
            SessionsTransferred, lambda e: e.payload.transfer_id == transfer_id
        )
    ).payload
    assert (moved.to_patient_id, moved.to_invoice_id, moved.sessions) == (
        recipient,
        new_invoice,
        2,
    )
    # The unbooked lines with the highest numbers move; the booked one stays.
    assert [line.line_number for line in moved.lines] == [2, 3]
    assert {line.status for line in moved.lines} == {LineStatus.TRANSFERRED}
    assert (moved.transferred_cents, moved.owed_cents) == (6666, 3334)
    assert (moved.balance.total, moved.balance.booked, moved.balance.remaining) == (1, 1, 0)

    issued = (
        await system.events.wait_for(
            PackageInvoiceIssued, lambda e: e.payload.invoice_id == new_invoice
        )
    ).payload
    assert (issued.patient_id, issued.transferred_from, issued.issued_by) == (
        recipient,
        invoice.invoice_id,
        "manager:li",
    )
    new = issued.invoice
    assert (new.package_id, new.price_cents, new.paid_cents, new.owed_cents) == (
        "three",
        6666,
        6666,
        6666,
    )
    assert [line.share_cents for line in new.lines] == [3333, 3333]
    assert {line.valid_until for line in new.lines} == {invoice.lines[0].valid_until}
    assert new.redeemable and new.location_id == NORTHSIDE

    # The recipient's waiting appointment links to the new invoice (R12).
    linked = await system.events.wait_for(
        LineLinked, lambda e: e.payload.appointment_id == theirs.appointment_id
    )
    assert (linked.payload.invoice_id, linked.payload.session_number) == (new_invoice, 1)

    # The old lines are not redeemable any more: the giver's next appointment is not linked.
    await system.matcher_has(
        "SELECT count(*) = 2 FROM lines WHERE invoice_id = $1 AND status = 'transferred'",
        invoice.invoice_id,
    )
    another = booking(giver, days_ahead(5, 9))
    await system.book(another)
    await system.events.wait_for(
        AppointmentNotMatched, lambda e: e.payload.appointment_id == another.appointment_id
    )
    rows = await system.invoicing.pool.fetch(
        "SELECT line_number, status, transferred_to FROM invoice_lines WHERE invoice_id = $1"
        " ORDER BY line_number",
        invoice.invoice_id,
    )
    assert [(row["status"], row["transferred_to"]) for row in rows] == [
        ("linked", None),
        ("transferred", derived_id("line", new_invoice, 1)),
        ("transferred", derived_id("line", new_invoice, 2)),
    ]

    # The report: the moved shares leave the old invoice and are owed by the new one, exactly.
    totals = await report_totals(client)
    assert (
        totals["sold_cents"],
        totals["transferred_out_cents"],
        totals["transferred_in_cents"],
        totals["owed_cents"],
    ) == (10000, 6666, 6666, 10000)
    owed = {
        row["invoice_id"]: row["owed_cents"]
        for row in await system.invoicing.pool.fetch(
            "SELECT invoice_id, owed_cents FROM package_invoices"
        )
    }
    assert owed == {invoice.invoice_id: 3334, new_invoice: 6666}
    await report_equals_the_events(system, client)

    # The same transfer again (a retry over HTTP) moves nothing and answers the same invoice.
    again = await client.post(
        f"/invoices/{invoice.invoice_id}/transfers",
        json={
            "to_patient_id": recipient,
            "sessions": 2,
            "reason": "given to her daughter",
            "transfer_id": str(transfer_id),
        },
    )
    assert again.status_code == 201, again.text
    assert again.json()["invoice_id"] == str(new_invoice)
    assert await count(system, "SELECT count(*) FROM session_transfers") == 1
    assert await count(system, "SELECT count(*) FROM package_invoices") == 2
    assert (await report_totals(client))["transferred_in_cents"] == 6666


async def test_top_ups_and_transfers_are_refused_naming_the_field(
    system: System, client: httpx.AsyncClient
) -> None:
    who, other = patient(), patient()
    invoice = await system.buy(who, "three", location_id=NORTHSIDE)
    path = f"/invoices/{invoice.invoice_id}"

    async def refused(url: str, body: dict[str, Any]) -> list[str | int]:
        answer = await client.post(url, json=body)
        assert answer.status_code == 422, answer.text
        return list(answer.json()["detail"][0]["loc"])

    assert await refused(f"{path}/top-ups", {"sessions": 0, "price_cents": 100}) == [
        "body",
        "sessions",
    ]
    assert await refused(f"{path}/top-ups", {"sessions": 1, "price_cents": -1}) == [
        "body",
        "price_cents",
    ]
    assert await refused(
        f"{path}/top-ups", {"sessions": 1, "price_cents": 100, "fee_id": "yoga-30"}
    ) == ["body", "fee_id"]
    transfer = {"to_patient_id": other, "sessions": 4, "reason": "asked"}
    assert await refused(f"{path}/transfers", transfer) == ["body", "sessions"]
    assert await refused(
        f"{path}/transfers", {**transfer, "sessions": 1, "to_patient_id": who}
    ) == [
        "body",
        "to_patient_id",
    ]
    assert await refused(f"{path}/transfers", {**transfer, "sessions": 0}) == ["body", "sessions"]
    assert await refused(f"{path}/transfers", {"to_patient_id": other, "sessions": 1}) == [
        "body",
        "reason",
    ]
    unknown = await client.post(
        f"/invoices/{uuid4()}/top-ups", json={"sessions": 1, "price_cents": 0}
    )
    assert unknown.status_code == 404

    # Through the topic: more sessions than are unbooked, then a void invoice.
    def refusal_of(command_type: str, field: str) -> Any:
        return lambda e: (
            e.payload.invoice_id == invoice.invoice_id
            and e.payload.command_type == command_type
            and e.payload.reason.startswith(f"{field}: ")
        )

    def transferring(sessions: int) -> TransferSessions:
        return TransferSessions(
            patient_id=who,
            invoice_id=invoice.invoice_id,
            transfer_id=uuid4(),
            to_patient_id=other,
            sessions=sessions,
            reason="asked",
            transferred_by="manager:li",
        )

    await system.producer.send(transferring(5))
    too_many = await system.events.wait_for(
        InvoiceCommandRefused, refusal_of("TransferSessions", "sessions")
    )
    assert "only 3 sessions unbooked" in too_many.payload.reason
    await system.producer.send(
        VoidPackageInvoice(
            patient_id=who, invoice_id=invoice.invoice_id, voided_by="billing:bo", reason="error"
        )
    )
    await system.events.wait_for(
        PackageInvoiceVoided, lambda e: e.payload.invoice_id == invoice.invoice_id
    )
    await system.producer.send(transferring(1))
    await system.producer.send(
        TopUpPackageInvoice(
            patient_id=who,
            invoice_id=invoice.invoice_id,
            topup_id=uuid4(),
            sessions=1,
            price_cents=100,
            topped_up_by="billing:bo",
        )
    )
    for command_type in ("TransferSessions", "TopUpPackageInvoice"):
        void = await system.events.wait_for(
            InvoiceCommandRefused, refusal_of(command_type, "invoice_id")
        )
        assert "void" in void.payload.reason
    assert await refused(f"{path}/top-ups", {"sessions": 1, "price_cents": 0}) == [
        "path",
        "invoice_id",
    ]
    assert await count(system, "SELECT count(*) FROM invoice_lines") == 3
    assert (await report_totals(client))["sold_cents"] == 10000


async def test_a_transfer_goes_only_to_a_patient_the_callers_clinics_see(
    start_service: StartService, producer: Any, read_events: ReadEvents, tmp_path: Path
) -> None:
    keys = issuer.Keys(tmp_path / "issuer-keys.json")
    async with local_issuer(keys) as issuer_url:
        oidc: dict[str, Any] = {
            "oidc_issuer": issuer_url,
            "oidc_audience": AUDIENCE,
            "staff_api_open": False,
        }

        def token(clinics: list[str]) -> str:
            return issuer.mint(
                keys,
                issuer=issuer_url,
                audience=AUDIENCE,
                sub="bo",
                name="Bo Billing",
                role="billing",
                clinics=clinics,
            )

        async def scoped(name: str, **settings: Any) -> Any:
            return await start_service(name, **oidc, **settings)

        system = await start_system(scoped, producer, read_events, [THREE])
        giver, southsider = patient(), patient()
        invoice = await system.buy(giver, "three", location_id=NORTHSIDE)
        # The recipient is seen only at Southside (a package sold there).
        await system.buy(southsider, "three", location_id=SOUTHSIDE)
        body = {"to_patient_id": southsider, "sessions": 1, "reason": "family"}
        url = f"/invoices/{invoice.invoice_id}/transfers"
        async with client_with(system.invoicing, token([NORTHSIDE])) as northside_only:
            answer = await northside_only.post(url, json=body)
            assert answer.status_code == 403, answer.text
            assert southsider in answer.json()["detail"]
            assert await count(system, "SELECT count(*) FROM session_transfers") == 0
            # Someone else's name for who transfers is refused: it is the caller.
            impostor = await northside_only.post(url, json=body | {"transferred_by": "mallory"})
            assert impostor.status_code == 422, impostor.text
        async with client_with(system.invoicing, token([NORTHSIDE, SOUTHSIDE])) as both:
            answer = await both.post(url, json=body)
            assert answer.status_code == 201, answer.text
            assert answer.json()["patient_id"] == southsider
        audit = await system.invoicing.pool.fetchrow(
            "SELECT transferred_by, reason, to_patient_id FROM session_transfers"
        )
        assert audit is not None and tuple(audit) == ("bo", "family", southsider)
