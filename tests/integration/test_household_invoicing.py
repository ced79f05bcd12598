"""A package's household (R18, issue #22 point 4), invoicing's side, through the real broker and
database: a package sold with ``shared_with`` shows it on the invoice and its events; a household
member's appointment redeems a line, anyone else's is refused as another patient's; staff change
the household later (SharePackageInvoice or PUT /invoices/{invoice_id}/household) and
PackageInvoiceShared says who was added and removed; a retry is answered again and applies
nothing twice; removing a member ends new links only; refusals name the field; staff act under
their verified identity and only at their clinics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from packline_contracts.envelope import Envelope
from packline_contracts.invoices import (
    InvoiceCommandRefused,
    IssuePackageInvoice,
    LineLinked,
    LinkAppointment,
    LinkRefusalCode,
    LinkRefused,
    PackageInvoiceIssued,
    PackageInvoiceShared,
    PackageInvoiceVoided,
    PurchaseChannel,
    SharePackageInvoice,
    VoidPackageInvoice,
)
from packline_contracts.topics import INVOICING_EVENTS
from packline_core import issuer
from packline_core.service import Service
from packline_invoicing import commands

from tests.clinic import NORTHSIDE, SOUTHSIDE, days_ahead, fee_commands, package, patient
from tests.conftest import ReadEvents, StartService
from tests.helpers import about, eventually
from tests.integration.test_identity import AUDIENCE, client, local_issuer
from tests.integration.test_invoicing import _has_package, appointment_for, send_link
from tests.system import http

pytestmark = pytest.mark.infra

FIVE = package()  # massage-5x60: any practitioner, any location
SOUTH = package("south-2", count=2, locations=[SOUTHSIDE])
NORTH = package("north-1", count=1, locations=[NORTHSIDE])


async def started(start_service: StartService, producer: Any, **settings: Any) -> Service:
    """Invoicing alone (the test plays the matcher: its links go straight to invoicing), with
    the fees and packages."""
    service = await start_service("invoicing", **settings)
    for message in [*fee_commands(), FIVE, SOUTH, NORTH]:
        await producer.send(message)

    async def catalogue() -> bool:
        return all([await _has_package(service, p) for p in ("massage-5x60", "south-2", "north-1")])

    await eventually(catalogue, what="the catalogue")
    return service


@pytest.fixture
async def invoicing(start_service: StartService, producer: Any) -> Service:
    return await started(start_service, producer)


@pytest.fixture
async def events(read_events: ReadEvents) -> Any:
    return await read_events(INVOICING_EVENTS)


@pytest.fixture
async def staff(invoicing: Service) -> AsyncIterator[httpx.AsyncClient]:
    async with http(invoicing) as api:
        yield api


async def buy(
    producer: Any, events: Any, who: str, package_id: str = "massage-5x60", **extra: Any
) -> Any:
    invoice_id = uuid4()
    await producer.send(
        IssuePackageInvoice(
            patient_id=who,
            invoice_id=invoice_id,
            package_id=package_id,
            channel=PurchaseChannel.STAFF,
            issued_by="billing:bo",
            issued_at=datetime.now(UTC),
            **extra,
        )
    )
    issued = await events.wait_for(
        PackageInvoiceIssued, lambda e: e.payload.invoice_id == invoice_id
    )
    return issued.payload.invoice


def sharing(who: str, invoice_id: UUID, members: list[str], **extra: Any) -> SharePackageInvoice:
    return SharePackageInvoice(
        patient_id=who,
        invoice_id=invoice_id,
        sharing_id=extra.pop("sharing_id", uuid4()),
        shared_with=members,
        reason=extra.pop("reason", "the family shares it"),
        shared_by="reception:sam",
        **extra,
    )


async def link(producer: Any, invoice: Any, line: int, appointment: Any) -> None:
    """The matcher's link of ``appointment`` to the invoice's line number ``line``, after the
    calendar's event of it."""
    await send_link(
        producer,
        LinkAppointment(
            patient_id=appointment.patient_id,
            invoice_id=invoice.invoice_id,
            line_id=invoice.lines[line - 1].line_id,
            appointment=appointment,
            rule="test: the matcher's choice",
        ),
    )


async def linked_or_refused(events: Any, appointment_id: UUID) -> Envelope[Any]:
    return await events.wait_for_any(LineLinked, LinkRefused, where=about(appointment_id))


async def household_of(service: Service, invoice_id: UUID) -> list[str]:
    return list(
        await service.pool.fetchval(
            "SELECT shared_with FROM package_invoices WHERE invoice_id = $1", invoice_id
        )
    )


async def test_a_package_sold_with_a_household_shows_it_and_a_members_appointment_redeems_it(
    invoicing: Service, producer: Any, events: Any, staff: httpx.AsyncClient
) -> None:
    owner, daughter, son, stranger = patient(), patient(), patient(), patient()
    sold = await staff.post(
        "/invoices",
        json={"patient_id": owner, "package_id": "massage-5x60", "shared_with": [daughter, son]},
    )
    assert sold.status_code == 201, sold.text
    assert sold.json()["shared_with"] == [daughter, son]
    invoice_id = UUID(sold.json()["invoice_id"])
    issued = await events.wait_for(
        PackageInvoiceIssued, lambda e: e.payload.invoice_id == invoice_id
    )
    assert issued.payload.invoice.shared_with == [daughter, son]
    assert await household_of(invoicing, invoice_id) == [daughter, son]
    shown = await staff.get(f"/invoices/{invoice_id}")
    assert shown.status_code == 200 and shown.json()["shared_with"] == [daughter, son]
    listed = await staff.get(f"/patients/{owner}/invoices")
    assert [invoice["shared_with"] for invoice in listed.json()] == [[daughter, son]]
    # Sold through the topic with a household too.
    other = await buy(producer, events, patient(), shared_with=[stranger])
    assert other.shared_with == [stranger]

    # The daughter's appointment redeems a line; the stranger's is another patient's (R6).
    invoice = issued.payload.invoice
    hers = appointment_for(daughter, days_ahead(2, 9))
    theirs = appointment_for(stranger, days_ahead(2, 11))
    await link(producer, invoice, 1, hers)
    await link(producer, invoice, 2, theirs)
    answer = await linked_or_refused(events, hers.appointment_id)
    assert isinstance(answer.payload, LineLinked), answer.payload
    assert (answer.payload.invoice_id, answer.payload.session_number) == (invoice_id, 1)
    refused = await linked_or_refused(events, theirs.appointment_id)
    assert isinstance(refused.payload, LinkRefused), refused.payload
    assert refused.payload.code == LinkRefusalCode.WRONG_PATIENT
    rows = await invoicing.pool.fetch(
        "SELECT line_number, status, appointment_id FROM invoice_lines WHERE invoice_id = $1"
        " ORDER BY line_number LIMIT 2",
        invoice_id,
    )
    assert [(row["status"], row["appointment_id"]) for row in rows] == [
        ("linked", hers.appointment_id),
        ("open", None),
    ]


async def test_staff_share_a_package_later_and_a_retry_applies_nothing_twice(
    invoicing: Service, producer: Any, events: Any, staff: httpx.AsyncClient
) -> None:
    owner, daughter, son = patient(), patient(), patient()
    invoice = await buy(producer, events, owner)
    assert invoice.shared_with == []
    # Before sharing, the daughter's appointment is refused.
    early = appointment_for(daughter, days_ahead(2, 8))
    await link(producer, invoice, 1, early)
    refused = await linked_or_refused(events, early.appointment_id)
    assert isinstance(refused.payload, LinkRefused)
    assert refused.payload.code == LinkRefusalCode.WRONG_PATIENT

    command = sharing(owner, invoice.invoice_id, [daughter, son])
    sent = await producer.send(command)
    shared = await events.wait_for(
        PackageInvoiceShared, lambda e: e.payload.sharing_id == command.sharing_id
    )
    assert (shared.payload.shared_with, shared.payload.added, shared.payload.removed) == (
        [daughter, son],
        [daughter, son],
        [],
    )
    assert (shared.payload.shared_by, shared.payload.reason) == (
        "reception:sam",
        "the family shares it",
    )
    assert shared.payload.shared_at == sent.occurred_at  # the command's time, not a clock's
    assert shared.message_id == commands.answer_id("shared", command.sharing_id)
    assert await household_of(invoicing, invoice.invoice_id) == [daughter, son]

    # The same change again (a retry under a new message id): answered again, applied once.
    await producer.send(command)
    again = await events.wait_for(
        PackageInvoiceShared,
        lambda e: e.message_id == shared.message_id and e is not shared,
    )
    assert again.payload == shared.payload
    assert (
        await invoicing.pool.fetchval(
            "SELECT count(*) FROM invoice_sharings WHERE invoice_id = $1", invoice.invoice_id
        )
        == 1
    )

    # The daughter's appointment now redeems a line.
    hers = appointment_for(daughter, days_ahead(3, 9))
    await link(producer, invoice, 1, hers)
    assert isinstance((await linked_or_refused(events, hers.appointment_id)).payload, LineLinked)

    # Over HTTP: the daughter leaves the household. Her linked appointment keeps its session;
    # a new one of hers is refused; the son's still links.
    body = {"shared_with": [son], "reason": "she has her own package now"}
    answer = await staff.put(f"/invoices/{invoice.invoice_id}/household", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["shared_with"] == [son]
    removed = await events.wait_for(
        PackageInvoiceShared,
        lambda e: e.payload.invoice_id == invoice.invoice_id and e.payload.removed == [daughter],
    )
    assert (removed.payload.added, removed.payload.shared_with) == ([], [son])
    assert (
        await invoicing.pool.fetchval(
            "SELECT status FROM invoice_lines WHERE appointment_id = $1", hers.appointment_id
        )
        == "linked"
    )
    later = appointment_for(daughter, days_ahead(4, 9))
    his = appointment_for(son, days_ahead(4, 11))
    await link(producer, invoice, 2, later)
    await link(producer, invoice, 3, his)
    refused = await linked_or_refused(events, later.appointment_id)
    assert isinstance(refused.payload, LinkRefused)
    assert refused.payload.code == LinkRefusalCode.WRONG_PATIENT
    assert isinstance((await linked_or_refused(events, his.appointment_id)).payload, LineLinked)
    audit = await invoicing.pool.fetch(
        "SELECT previous, shared_with, added, removed, reason FROM invoice_sharings"
        " WHERE invoice_id = $1 ORDER BY shared_at",
        invoice.invoice_id,
    )
    assert [
        (row["previous"], row["shared_with"], row["added"], row["removed"]) for row in audit
    ] == [([], [daughter, son], [daughter, son], []), ([daughter, son], [son], [], [daughter])]
    assert audit[1]["reason"] == "she has her own package now"

    # The same request again over HTTP (its sharing_id): the invoice as it is, nothing more.
    retried = {"shared_with": [son], "sharing_id": str(uuid4())}
    first = await staff.put(f"/invoices/{invoice.invoice_id}/household", json=retried)
    second = await staff.put(f"/invoices/{invoice.invoice_id}/household", json=retried)
    assert (first.status_code, second.status_code) == (200, 200)
    assert second.json()["shared_with"] == [son]
    assert (
        await invoicing.pool.fetchval(
            "SELECT count(*) FROM invoice_sharings WHERE invoice_id = $1", invoice.invoice_id
        )
        == 3
    )


async def test_a_household_change_is_refused_naming_the_field(
    invoicing: Service, producer: Any, events: Any, staff: httpx.AsyncClient
) -> None:
    owner, daughter = patient(), patient()
    invoice = await buy(producer, events, owner)
    path = f"/invoices/{invoice.invoice_id}/household"

    async def refused(answer: httpx.Response) -> list[Any]:
        assert answer.status_code == 422, answer.text
        return list(answer.json()["detail"][0]["loc"])

    # The owner in the list, someone twice, more than ten: refused by the model.
    assert await refused(await staff.put(path, json={"shared_with": [daughter, owner]})) == [
        "body",
        "shared_with",
    ]
    assert await refused(await staff.put(path, json={"shared_with": [daughter, daughter]})) == [
        "body",
        "shared_with",
    ]
    eleven = [patient() for _ in range(11)]
    assert await refused(await staff.put(path, json={"shared_with": eleven})) == [
        "body",
        "shared_with",
    ]
    assert await refused(await staff.put(path, json={})) == ["body", "shared_with"]
    sale = {"patient_id": owner, "package_id": "massage-5x60", "shared_with": [owner]}
    assert await refused(await staff.post("/invoices", json=sale)) == ["body", "shared_with"]
    unknown = await staff.put(f"/invoices/{uuid4()}/household", json={"shared_with": []})
    assert unknown.status_code == 404
    assert await household_of(invoicing, invoice.invoice_id) == []

    def refusal_of(invoice_id: UUID, field: str) -> Any:
        return lambda e: (
            e.payload.invoice_id == invoice_id
            and e.payload.command_type == "SharePackageInvoice"
            and e.payload.reason.startswith(f"{field}: ")
        )

    # Through the topic: an invoice that is not this patient's, a sharing id of another invoice.
    stray = uuid4()
    await producer.send(sharing(owner, stray, [daughter]))
    await events.wait_for(InvoiceCommandRefused, refusal_of(stray, "invoice_id"))
    other = await buy(producer, events, patient())
    used = uuid4()
    await producer.send(sharing(other.patient_id, other.invoice_id, [daughter], sharing_id=used))
    await events.wait_for(PackageInvoiceShared, lambda e: e.payload.sharing_id == used)
    await producer.send(sharing(owner, invoice.invoice_id, [daughter], sharing_id=used))
    await events.wait_for(InvoiceCommandRefused, refusal_of(invoice.invoice_id, "sharing_id"))

    # A void invoice's household cannot change: on the topic and over HTTP.
    await producer.send(
        VoidPackageInvoice(
            patient_id=owner, invoice_id=invoice.invoice_id, voided_by="billing:bo", reason="x"
        )
    )
    await events.wait_for(
        PackageInvoiceVoided, lambda e: e.payload.invoice_id == invoice.invoice_id
    )
    await producer.send(sharing(owner, invoice.invoice_id, [daughter]))
    void = await events.wait_for(
        InvoiceCommandRefused, refusal_of(invoice.invoice_id, "invoice_id")
    )
    assert "void" in void.payload.reason
    assert await refused(await staff.put(path, json={"shared_with": [daughter]})) == [
        "path",
        "invoice_id",
    ]
    assert await household_of(invoicing, invoice.invoice_id) == []
    assert not await invoicing.pool.fetchval(
        "SELECT count(*) FROM invoice_sharings WHERE invoice_id = $1", invoice.invoice_id
    )


async def test_staff_share_under_their_verified_identity_at_their_clinics_only(
    start_service: StartService, producer: Any, read_events: ReadEvents, tmp_path: Path
) -> None:
    keys = issuer.Keys(tmp_path / "issuer-keys.json")
    events = await read_events(INVOICING_EVENTS)
    async with local_issuer(keys) as issuer_url:

        def token(**claims: Any) -> str:
            who = {"sub": "bo", "name": "Bo Billing", "role": "billing", "clinics": [SOUTHSIDE]}
            return issuer.mint(keys, issuer=issuer_url, audience=AUDIENCE, **(who | claims))

        invoicing = await started(
            start_service,
            producer,
            oidc_issuer=issuer_url,
            oidc_audience=AUDIENCE,
            staff_api_open=False,
        )
        # The owner and the daughter are seen at Southside (their packages' lines are for
        # it); the neighbour only at Northside.
        owner, daughter, neighbour = patient(), patient(), patient()
        invoice = await buy(producer, events, owner, "south-2")
        await buy(producer, events, daughter, "south-2")
        await buy(producer, events, neighbour, "north-1")
        path = f"/invoices/{invoice.invoice_id}/household"
        body = {"shared_with": [daughter], "reason": "her daughter"}

        async with client(invoicing, token(clinics=[NORTHSIDE])) as north:
            outside = await north.put(path, json=body)
            assert outside.status_code == 403, outside.text
        async with client(invoicing, token(role="reception")) as reception:
            assert (await reception.put(path, json=body)).status_code == 403
        async with client(invoicing, token()) as bo:
            named = await bo.put(path, json={**body, "shared_by": "billing:someone-else"})
            assert named.status_code == 422
            assert named.json()["detail"][0]["loc"] == ["body", "shared_by"]
            elsewhere = await bo.put(path, json={"shared_with": [neighbour]})
            assert elsewhere.status_code == 403, elsewhere.text
            assert neighbour in elsewhere.text
            assert await household_of(invoicing, invoice.invoice_id) == []

            answer = await bo.put(path, json=body)
            assert answer.status_code == 200, answer.text
            assert answer.json()["shared_with"] == [daughter]
        shared = await events.wait_for(
            PackageInvoiceShared, lambda e: e.payload.invoice_id == invoice.invoice_id
        )
        assert (shared.payload.shared_by, shared.payload.added) == ("bo", [daughter])
        assert (
            await invoicing.pool.fetchval(
                "SELECT shared_by FROM invoice_sharings WHERE invoice_id = $1", invoice.invoice_id
            )
            == "bo"
        )
