"""The invoicing service through the real broker and database (issue: invoicing)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
import uvicorn
from packline_contracts import wording
from packline_contracts.appointments import AppointmentBooked
from packline_contracts.catalogue import DefineLocation, DefinePractitioner
from packline_contracts.envelope import Envelope
from packline_contracts.invoices import (
    InvoiceCommandRefused,
    IssuePackageInvoice,
    LineBookingRefused,
    LineLinked,
    LineUnlinked,
    LinkAppointment,
    LinkRefusalCode,
    LinkRefused,
    PackageInvoiceIssued,
    PackageInvoiceVoided,
    PurchaseChannel,
    RecordPayment,
    UnlinkAppointment,
    UnlinkReason,
    VoidPackageInvoice,
)
from packline_contracts.topics import INVOICING_COMMANDS, INVOICING_EVENTS, dead_letter_topic
from packline_contracts.types import Appointment, AppointmentStatus, BookingSource
from packline_core import deadletters
from packline_core.service import Service
from packline_invoicing import commands

from tests.clinic import (
    DR_A,
    DR_B,
    MASSAGE_60,
    NORTHSIDE,
    SETUP,
    booking,
    days_ahead,
    fee_commands,
    package,
    patient,
)
from tests.conftest import ReadEvents, StartService
from tests.e2e.test_service_process import free_port
from tests.helpers import about, eventually, get_until

pytestmark = pytest.mark.infra


async def until(check: Any, what: str) -> Any:
    return await eventually(check, what=what)


@pytest.fixture
async def invoicing(start_service: StartService, producer: Any) -> Service:
    service = await start_service("invoicing")
    for message in [
        *fee_commands(),
        package(),
        package("massage-2-dr-a", count=2, practitioners=[DR_A]),
    ]:
        await producer.send(message)

    async def catalogue() -> bool:
        return bool(await service.pool.fetchval("SELECT count(*) FROM packages") == 2)

    await until(catalogue, "the catalogue")
    return service


async def buy(producer: Any, events: Any, who: str, package_id: str = "massage-5x60") -> Any:
    invoice_id = uuid4()
    await producer.send(
        IssuePackageInvoice(
            patient_id=who,
            invoice_id=invoice_id,
            package_id=package_id,
            channel=PurchaseChannel.ONLINE,
            issued_by="shop",
            issued_at=datetime.now(UTC),
        )
    )
    issued = await events.wait_for(
        PackageInvoiceIssued, lambda e: e.payload.invoice_id == invoice_id
    )
    return issued.payload.invoice


async def announce(producer: Any, *appointments: Appointment) -> None:
    """The calendar's AppointmentBooked for each: invoicing links only appointments it knows."""
    for appointment in appointments:
        await producer.send(
            AppointmentBooked(patient_id=appointment.patient_id, appointment=appointment)
        )


async def send_link(producer: Any, link: LinkAppointment) -> Any:
    """The matcher's link, after the calendar's event of its appointment."""
    await announce(producer, link.appointment)
    return await producer.send(link)


def appointment_for(who: str, starts_at: datetime, practitioner: str = DR_A) -> Appointment:
    return Appointment(
        appointment_id=uuid4(),
        version=1,
        patient_id=who,
        practitioner_id=practitioner,
        location_id=NORTHSIDE,
        starts_at=starts_at,
        duration_minutes=60,
        fee_ids=[MASSAGE_60],
        status=AppointmentStatus.BOOKED,
        source=BookingSource.STAFF,
    )


async def test_purchase_creates_one_line_per_session_with_the_package_terms(
    invoicing: Service, producer: Any, read_events: ReadEvents
) -> None:
    events = await read_events(INVOICING_EVENTS)
    who = patient()
    invoice = await buy(producer, events, who, "massage-2-dr-a")
    assert [line.line_number for line in invoice.lines] == [1, 2]
    assert {tuple(line.practitioners.ids or []) for line in invoice.lines} == {(DR_A,)}
    assert invoice.balance.total == 2 and invoice.balance.remaining == 2
    assert invoice.redeemable
    unknown = uuid4()
    await producer.send(
        IssuePackageInvoice(
            patient_id=who,
            invoice_id=unknown,
            package_id="no-such-package",
            channel=PurchaseChannel.STAFF,
            issued_by="maria",
            issued_at=datetime.now(UTC),
        )
    )
    refused = await events.wait_for(
        InvoiceCommandRefused, lambda e: e.payload.invoice_id == unknown
    )
    assert "unknown package no-such-package" in refused.payload.reason


async def test_fifty_links_racing_for_the_last_line_exactly_one_wins(
    invoicing: Service, producer: Any, read_events: ReadEvents
) -> None:
    events = await read_events(INVOICING_EVENTS)
    who = patient()
    invoice = await buy(producer, events, who, "massage-2-dr-a")
    first, last = invoice.lines
    taken = appointment_for(who, days_ahead(2))
    await send_link(
        producer,
        LinkAppointment(
            patient_id=who,
            invoice_id=invoice.invoice_id,
            line_id=first.line_id,
            appointment=taken,
            rule="test",
        ),
    )
    await events.wait_for(LineLinked, lambda e: e.payload.appointment_id == taken.appointment_id)

    contenders = [appointment_for(who, days_ahead(3, hour=8 + i % 10)) for i in range(50)]
    for appointment in contenders:
        await send_link(
            producer,
            LinkAppointment(
                patient_id=who,
                invoice_id=invoice.invoice_id,
                line_id=last.line_id,
                appointment=appointment,
                rule="test",
            ),
        )
    answers = [
        await events.wait_for_any(LineLinked, LinkRefused, where=about(appointment.appointment_id))
        for appointment in contenders
    ]
    won = [a.payload for a in answers if isinstance(a.payload, LineLinked)]
    lost = [a.payload for a in answers if isinstance(a.payload, LinkRefused)]
    assert len(won) == 1 and len(lost) == 49
    assert {refusal.code for refusal in lost} == {LinkRefusalCode.LINE_TAKEN}
    assert won[0].balance.remaining == 0
    assert (
        await invoicing.pool.fetchval(
            "SELECT count(*) FROM invoice_lines"
            " WHERE appointment_id IS NOT NULL AND invoice_id = $1",
            invoice.invoice_id,
        )
        == 2
    )


async def test_concurrent_transactions_cannot_both_take_the_last_line(
    invoicing: Service, producer: Any, read_events: ReadEvents
) -> None:
    events = await read_events(INVOICING_EVENTS)
    who = patient()
    invoice = await buy(producer, events, who, "massage-2-dr-a")
    line = invoice.lines[0]

    async def try_link(appointment: Appointment) -> bool:
        async with invoicing.transaction() as tx:
            return await commands.apply_link(
                tx, invoice.invoice_id, line.line_id, appointment, "race"
            )

    results = await asyncio.gather(
        *(try_link(appointment_for(who, days_ahead(4))) for _ in range(12))
    )
    assert sorted(results) == [False] * 11 + [True]
    # And one appointment can never hold two lines (the unique index):
    twice = appointment_for(who, days_ahead(5))
    assert await try_link_to(invoicing, invoice.invoice_id, invoice.lines[1].line_id, twice)
    other = await buy(producer, events, who, "massage-2-dr-a")
    assert not await try_link_to(invoicing, other.invoice_id, other.lines[0].line_id, twice)


async def try_link_to(
    service: Service, invoice_id: UUID, line_id: UUID, appointment: Appointment
) -> bool:
    async with service.transaction() as tx:
        return await commands.apply_link(tx, invoice_id, line_id, appointment, "test")


async def test_restrictions_validity_and_payment_are_checked_again(
    invoicing: Service, producer: Any, read_events: ReadEvents
) -> None:
    events = await read_events(INVOICING_EVENTS)
    who = patient()
    invoice = await buy(producer, events, who, "massage-2-dr-a")
    line = invoice.lines[0].line_id
    cases = {
        LinkRefusalCode.PRACTITIONER_NOT_ALLOWED: appointment_for(who, days_ahead(2), DR_B),
        LinkRefusalCode.OUTSIDE_VALIDITY: appointment_for(who, days_ahead(400)),
        LinkRefusalCode.WRONG_PATIENT: appointment_for(patient(), days_ahead(2)),
    }
    for appointment in cases.values():
        await send_link(
            producer,
            LinkAppointment(
                patient_id=who,
                invoice_id=invoice.invoice_id,
                line_id=line,
                appointment=appointment,
                rule="t",
            ),
        )
    for code, appointment in cases.items():
        refused = await events.wait_for(LinkRefused, about(appointment.appointment_id))
        assert refused.payload.code == code


async def test_duplicated_link_and_unlink_have_one_effect_and_void_releases_every_line(
    invoicing: Service, producer: Any, read_events: ReadEvents
) -> None:
    events = await read_events(INVOICING_EVENTS)
    who = patient()
    invoice = await buy(producer, events, who)
    first, second = (appointment_for(who, days_ahead(d)) for d in (2, 3))
    await announce(producer, first, second)

    # The links must find their appointments known, or they wait, and the unlink below would
    # withdraw a waiting link instead of releasing a linked line.
    async def known() -> bool:
        count = await invoicing.pool.fetchval(
            "SELECT count(*) FROM known_appointments WHERE appointment_id = ANY($1::uuid[])",
            [first.appointment_id, second.appointment_id],
        )
        return bool(count == 2)

    await eventually(known, what="invoicing to know both appointments")
    for appointment, line in ((first, invoice.lines[0]), (second, invoice.lines[1])):
        link = LinkAppointment(
            patient_id=who,
            invoice_id=invoice.invoice_id,
            line_id=line.line_id,
            appointment=appointment,
            rule="test",
        )
        sent = await producer.send(link)
        await producer.send(link, message_id=sent.message_id)  # delivered twice
    unlink = UnlinkAppointment(
        patient_id=who,
        invoice_id=invoice.invoice_id,
        line_id=invoice.lines[0].line_id,
        appointment_id=first.appointment_id,
        appointment_version=2,
        reason=UnlinkReason.CANCELLED,
    )
    sent = await producer.send(unlink)
    await producer.send(unlink, message_id=sent.message_id)
    # The void comes from another producer on another topic (packline.invoicing.commands, the
    # links travel on packline.invoicing.links): no order holds between them, so the staff's
    # void is sent once the unlink is seen applied.
    await events.wait_for(LineUnlinked, lambda e: e.payload.appointment_id == first.appointment_id)
    await producer.send(
        VoidPackageInvoice(
            patient_id=who,
            invoice_id=invoice.invoice_id,
            voided_by="manager",
            reason="sold in error",
        )
    )
    await events.wait_for(
        PackageInvoiceVoided, lambda e: e.payload.invoice_id == invoice.invoice_id
    )
    mine = [
        type(e.payload).__name__
        for e in events.received
        if e.patient_id == who and not isinstance(e.payload, PackageInvoiceIssued)
    ]
    assert mine == [
        "LineLinked",
        "LineLinked",
        "LineUnlinked",
        "LineUnlinked",
        "PackageInvoiceVoided",
    ]
    voided = [
        e.payload
        for e in events.received
        if isinstance(e.payload, LineUnlinked) and e.patient_id == who
    ]
    assert [u.reason for u in voided] == [UnlinkReason.CANCELLED, UnlinkReason.INVOICE_VOIDED]
    assert voided[1].appointment_id == second.appointment_id
    assert [u.link_version for u in voided] == [2, 2]
    assert (
        await invoicing.pool.fetchval(
            "SELECT count(*) FROM invoice_lines WHERE invoice_id = $1 AND status <> 'open'",
            invoice.invoice_id,
        )
        == 0
    )
    # A void invoice takes no new link:
    late = appointment_for(who, days_ahead(6))
    await send_link(
        producer,
        LinkAppointment(
            patient_id=who,
            invoice_id=invoice.invoice_id,
            line_id=invoice.lines[2].line_id,
            appointment=late,
            rule="t",
        ),
    )
    refused = await events.wait_for(
        LinkRefused, lambda e: e.payload.appointment_id == late.appointment_id
    )
    assert refused.payload.code == LinkRefusalCode.NOT_REDEEMABLE


async def test_pay_before_use_makes_the_invoice_redeemable_once_paid(
    invoicing: Service, producer: Any, read_events: ReadEvents
) -> None:
    events = await read_events(INVOICING_EVENTS)
    await producer.send(package("prepaid", count=1, pay_before_use=True, price_cents=9000))
    await until(lambda: _has_package(invoicing, "prepaid"), "the prepaid package")
    who = patient()
    invoice = await buy(producer, events, who, "prepaid")
    assert not invoice.redeemable
    await producer.send(
        RecordPayment(
            patient_id=who,
            invoice_id=invoice.invoice_id,
            payment_id=uuid4(),
            amount_cents=9000,
            paid_at=datetime.now(UTC),
            recorded_by="till",
        )
    )
    appointment = appointment_for(who, days_ahead(2))
    await send_link(
        producer,
        LinkAppointment(
            patient_id=who,
            invoice_id=invoice.invoice_id,
            line_id=invoice.lines[0].line_id,
            appointment=appointment,
            rule="t",
        ),
    )
    linked = await events.wait_for(
        LineLinked, lambda e: e.payload.appointment_id == appointment.appointment_id
    )
    assert linked.payload.balance.booked == 1


async def _has_package(service: Service, package_id: str) -> bool:
    return bool(
        await service.pool.fetchval("SELECT 1 FROM packages WHERE package_id = $1", package_id)
    )


@contextlib.asynccontextmanager
async def serving(service: Service) -> AsyncIterator[str]:
    """Serve an in-process service's HTTP API on a real port (the other service calls it)."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(service.http, port=port, lifespan="off", log_config=None)
    )
    task = asyncio.create_task(server.serve())
    await eventually(lambda: _started(server), what="the HTTP server")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def _started(server: uvicorn.Server) -> bool:
    return server.started


async def test_book_from_the_invoice_finishes_both_ways(
    start_service: StartService, producer: Any, read_events: ReadEvents
) -> None:
    events = await read_events(INVOICING_EVENTS)
    calendar = await start_service("calendar")
    for message in SETUP:
        if isinstance(message, DefinePractitioner | DefineLocation):
            await producer.send(message)
    async with serving(calendar) as calendar_url:
        invoicing = await start_service("invoicing", calendar_url=calendar_url)
        for message in [
            *fee_commands(),
            package("massage-2-dr-a", count=2, practitioners=[DR_A], locations=[NORTHSIDE]),
        ]:
            await producer.send(message)

        async def ready() -> bool:
            fees = await calendar.pool.fetchval("SELECT count(*) FROM fees")
            people = await calendar.pool.fetchval("SELECT count(*) FROM practitioners")
            return bool(
                fees == 2 and people == 2 and await _has_package(invoicing, "massage-2-dr-a")
            )

        await until(ready, "both catalogues")
        who = patient()
        invoice = await buy(producer, events, who, "massage-2-dr-a")
        line = invoice.lines[0]
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=invoicing.http), base_url="http://x"
        )
        base = f"/invoices/{invoice.invoice_id}/lines/{line.line_id}"
        when = days_ahead(3, hour=9)

        free = await client.get(f"{base}/availability", params={"starts_at": when.isoformat()})
        assert free.status_code == 200 and free.json()["available"] is True
        saved = await client.put(
            f"{base}/appointment",
            json={"starts_at": when.isoformat(), "booked_by": "reception:maria"},
        )
        assert saved.status_code == 202, saved.text
        appointment_id = saved.json()["appointment_id"]
        linked = await events.wait_for(
            LineLinked, lambda e: str(e.payload.appointment_id) == appointment_id
        )
        assert linked.payload.rule == "booked from this invoice line"
        calendar_client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=calendar.http), base_url="http://x"
        )
        await get_until(
            calendar_client,
            f"/appointments/{appointment_id}",
            lambda p: p["package"] is not None,
            what="the calendar to note the package",
        )
        shown = (await client.get(f"/invoices/{invoice.invoice_id}")).json()
        assert shown["lines"][0]["shows"] == f"linked: {wording.moment(when.astimezone(UTC))}"
        assert shown["lines"][1]["shows"] == "Unassigned"

        # The other way: the slot is taken by another patient's appointment.
        taken_at = days_ahead(4, hour=9)
        await producer.send(booking(patient(), taken_at))
        second = f"/invoices/{invoice.invoice_id}/lines/{invoice.lines[1].line_id}"

        async def slot_taken() -> bool:
            answer = await client.get(
                f"{second}/availability", params={"starts_at": taken_at.isoformat()}
            )
            return answer.json()["available"] is False

        await until(slot_taken, "Check Availability to show the slot taken")
        saved = await client.put(
            f"{second}/appointment",
            json={"starts_at": taken_at.isoformat(), "booked_by": "reception:maria"},
        )
        assert saved.status_code == 202
        refused = await events.wait_for(
            LineBookingRefused,
            lambda e: str(e.payload.appointment_id) == saved.json()["appointment_id"],
        )
        assert refused.payload.line.status.value == "open"
        shown = (await client.get(f"/invoices/{invoice.invoice_id}")).json()
        assert shown["lines"][1]["shows"] == "Unassigned"
        assert shown["lines"][1]["note"].startswith("Dr Adams is already booked")

        # R8: unlink from the invoice in one action; the appointment stays in the calendar.
        unassigned = await client.delete(f"{base}/appointment", params={"unassigned_by": "maria"})
        assert unassigned.status_code == 200
        released = await events.wait_for(
            LineUnlinked, lambda e: str(e.payload.appointment_id) == appointment_id
        )
        assert released.payload.reason == UnlinkReason.UNASSIGNED_BY_STAFF
        # The calendar applies the unlink from invoicing's topic in its own time: wait until its
        # panel drops the package, then check the appointment itself was left booked.
        panel = await get_until(
            calendar_client,
            f"/appointments/{appointment_id}",
            lambda p: p["package"] is None,
            what="the calendar to drop the package note",
        )
        assert panel["status"] == "booked"
        await client.aclose()
        await calendar_client.aclose()


async def test_bad_requests_are_refused_with_reasons(
    invoicing: Service, producer: Any, read_events: ReadEvents
) -> None:
    events = await read_events(INVOICING_EVENTS)
    who = patient()
    invoice = await buy(producer, events, who)
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=invoicing.http), base_url="http://x"
    )
    unknown = await client.get(f"/invoices/{uuid4()}")
    assert unknown.status_code == 404
    base = f"/invoices/{invoice.invoice_id}/lines/{invoice.lines[0].line_id}/appointment"
    expired = await client.put(
        base, json={"starts_at": days_ahead(400).isoformat(), "booked_by": "m"}
    )
    assert expired.status_code == 422 and "outside validity" in expired.text
    anyone = await client.put(base, json={"starts_at": days_ahead(2).isoformat(), "booked_by": "m"})
    assert anyone.status_code == 422 and "choose a practitioner" in anyone.text
    sold = await client.post(
        "/invoices", json={"patient_id": who, "package_id": "nope", "issued_by": "m"}
    )
    assert sold.status_code == 422
    await client.aclose()
    # Another patient's invoice is not this patient's:
    await producer.send(
        RecordPayment(
            patient_id=patient(),
            invoice_id=invoice.invoice_id,
            payment_id=uuid4(),
            amount_cents=100,
            paid_at=datetime.now(UTC),
            recorded_by="till",
        )
    )
    refused = await events.wait_for(
        InvoiceCommandRefused, lambda e: e.payload.command_type == "RecordPayment"
    )
    assert "of this patient" in refused.payload.reason


async def test_staff_sell_a_package_over_http_and_bad_packages_are_dead_lettered(
    invoicing: Service, producer: Any, infrastructure: Any, read_events: ReadEvents
) -> None:
    events = await read_events(INVOICING_EVENTS)
    who = patient()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=invoicing.http), base_url="http://x"
    ) as client:
        sold = await client.post(
            "/invoices",
            json={"patient_id": who, "package_id": "massage-2-dr-a", "issued_by": "maria"},
        )
        assert sold.status_code == 201, sold.text
        body = sold.json()
        assert body["balance_text"].startswith("2 of 2 left, expires ")
        assert [line["shows"] for line in body["lines"]] == ["Unassigned", "Unassigned"]
        listed = (await client.get(f"/patients/{who}/invoices")).json()
    assert [invoice["invoice_id"] for invoice in listed] == [body["invoice_id"]]
    issued = await events.wait_for(
        PackageInvoiceIssued, lambda e: str(e.payload.invoice_id) == body["invoice_id"]
    )
    assert issued.payload.invoice.channel == PurchaseChannel.STAFF

    no_items = package("empty").model_dump(mode="json")
    no_items["items"] = []
    negative = package("negative").model_dump(mode="json")
    negative["price_cents"] = -1
    for payload in (no_items, negative):
        envelope = Envelope.wrap(package(), producer="test").model_dump(mode="json")
        envelope["payload"] = payload
        await producer._producer.send_and_wait(
            producer.topic_prefix + INVOICING_COMMANDS.name,
            json.dumps(envelope).encode(),
            b"invoicing-catalogue",
        )
    topic = invoicing.settings.topic(dead_letter_topic("invoicing"))

    async def two_dead_letters() -> list[Any] | None:
        letters = await deadletters.read_all(infrastructure.kafka_bootstrap, topic)
        return letters if len(letters) >= 2 else None

    letters = await eventually(two_dead_letters, what="the two bad packages")
    reasons = [dict(letter.headers)["dead-letter-reason"].decode() for letter in letters]
    assert "payload.items: List should have at least 1 item" in reasons[0]
    assert "payload.price_cents: Input should be greater than or equal to 0" in reasons[1]
    assert not await invoicing.pool.fetchval(
        "SELECT count(*) FROM packages WHERE package_id IN ('empty', 'negative')"
    )


async def test_r1_as_written_online_only_when_sold_online_and_a_sale_only_narrows(
    invoicing: Service, producer: Any, read_events: ReadEvents
) -> None:
    events = await read_events(INVOICING_EVENTS)
    await producer.send(package("in-clinic-only", online_purchase=False))
    await until(lambda: _has_package(invoicing, "in-clinic-only"), "the in-clinic package")
    who = patient()
    online = uuid4()
    await producer.send(
        IssuePackageInvoice(
            patient_id=who,
            invoice_id=online,
            package_id="in-clinic-only",
            channel=PurchaseChannel.ONLINE,
            issued_by="shop",
            issued_at=datetime.now(UTC),
        )
    )
    refused = await events.wait_for(InvoiceCommandRefused, lambda e: e.payload.invoice_id == online)
    assert refused.payload.reason == "channel: package in-clinic-only cannot be bought online"

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=invoicing.http), base_url="http://x"
    ) as client:
        for chosen, said in (
            ({"ids": None}, "a sale cannot widen that to any"),
            ({"ids": [DR_B]}, f"is not for practitioner(s) {DR_B}"),
        ):
            answer = await client.post(
                "/invoices",
                json={
                    "patient_id": who,
                    "package_id": "massage-2-dr-a",
                    "issued_by": "maria",
                    "practitioners": chosen,
                },
            )
            assert answer.status_code == 422, answer.text
            (problem,) = answer.json()["detail"]
            assert problem["loc"] == ["body", "practitioners"] and said in problem["msg"]
    assert (
        await invoicing.pool.fetchval(
            "SELECT count(*) FROM package_invoices WHERE patient_id = $1", who
        )
        == 0
    )


async def test_a_link_is_checked_against_the_appointment_invoicing_knows(
    invoicing: Service, producer: Any, read_events: ReadEvents
) -> None:
    """Issue #19: the matcher's link is applied only to an appointment the calendar announced,
    as the calendar announced it; a link read before the calendar's event waits for it."""
    events = await read_events(INVOICING_EVENTS)
    who = patient()
    invoice = await buy(producer, events, who)
    lines = [line.line_id for line in invoice.lines]

    def link(line: UUID, appointment: Appointment) -> LinkAppointment:
        return LinkAppointment(
            patient_id=who,
            invoice_id=invoice.invoice_id,
            line_id=line,
            appointment=appointment,
            rule="t",
        )

    # Read before the calendar's event: it waits (the line untouched), then links on the event.
    early = appointment_for(who, days_ahead(2))
    await producer.send(link(lines[0], early))

    async def waiting(appointment: Appointment) -> bool:
        return bool(
            await invoicing.pool.fetchval(
                "SELECT 1 FROM waiting_links WHERE appointment_id = $1",
                appointment.appointment_id,
            )
        )

    await until(lambda: waiting(early), "the early link, waiting for the calendar's event")
    await announce(producer, early)
    linked = await events.wait_for(LineLinked, about(early.appointment_id))
    assert linked.payload.line.line_id == lines[0]

    # The snapshot disagrees with what the calendar said of that version: refused, naming it.
    moved = appointment_for(who, days_ahead(3))
    await announce(producer, moved)
    forged = moved.model_copy(update={"practitioner_id": DR_B})
    await producer.send(link(lines[1], forged))
    refused = await events.wait_for(LinkRefused, about(moved.appointment_id))
    assert refused.payload.code == LinkRefusalCode.STALE
    assert "appointment.practitioner_id" in refused.payload.reason

    # Another patient's appointment, claimed for this patient: refused.
    theirs = appointment_for(patient(), days_ahead(3))
    await announce(producer, theirs)
    await producer.send(link(lines[1], theirs.model_copy(update={"patient_id": who})))
    refused = await events.wait_for(LinkRefused, about(theirs.appointment_id))
    assert refused.payload.code == LinkRefusalCode.WRONG_PATIENT

    # An appointment the calendar never announced never takes a session; the matcher's unlink
    # withdraws the waiting link.
    ghost = appointment_for(who, days_ahead(4))
    await producer.send(link(lines[2], ghost))
    await until(lambda: waiting(ghost), "the ghost's link, waiting")
    line = await invoicing.pool.fetchrow(
        "SELECT status, appointment_id FROM invoice_lines WHERE line_id = $1", lines[2]
    )
    assert line is not None and (line["status"], line["appointment_id"]) == ("open", None)
    await producer.send(
        UnlinkAppointment(
            patient_id=who,
            invoice_id=invoice.invoice_id,
            line_id=lines[2],
            appointment_id=ghost.appointment_id,
            appointment_version=2,
            reason=UnlinkReason.DELETED,
        )
    )
    withdrawn = await events.wait_for(LinkRefused, about(ghost.appointment_id))
    assert "withdrawn" in withdrawn.payload.reason
    assert not await waiting(ghost)


async def test_a_void_never_reopens_a_session_used_at_the_same_moment(
    invoicing: Service, producer: Any, read_events: ReadEvents
) -> None:
    """Attendance (one consumer) marks a linked line used while a void (another consumer)
    releases the invoice's lines. Made deterministic: the attendance's transaction is held
    open, the void is sent and waits for its lock, then the attendance commits. The void must
    see the line used and leave it so (R13 releases linked lines only; R14: a used line is
    final), not open it again from what it read before the lock."""
    events = await read_events(INVOICING_EVENTS)
    who = patient()
    invoice = await buy(producer, events, who)
    line_id = invoice.lines[0].line_id
    appointment = appointment_for(who, days_ahead(2))
    await invoicing.pool.execute(
        "UPDATE invoice_lines SET status = 'linked', appointment_id = $2,"
        " appointment_starts_at = $3, appointment_version = 1 WHERE line_id = $1",
        line_id,
        appointment.appointment_id,
        appointment.starts_at,
    )
    async with invoicing.pool.acquire() as attendance:
        held = attendance.transaction()
        await held.start()
        await attendance.execute(
            "UPDATE invoice_lines SET status = 'used', version = version + 1 WHERE line_id = $1",
            line_id,
        )
        await producer.send(
            VoidPackageInvoice(
                patient_id=who, invoice_id=invoice.invoice_id, voided_by="manager", reason="x"
            )
        )

        async def void_waits_for_the_line() -> bool:
            waiting = await invoicing.pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND query LIKE '%invoice_lines%'"
            )
            return bool(waiting)

        await eventually(void_waits_for_the_line, what="the void to wait for the line's lock")
        await held.commit()
    await events.wait_for(
        PackageInvoiceVoided, lambda e: e.payload.invoice_id == invoice.invoice_id
    )
    status = await invoicing.pool.fetchval(
        "SELECT status FROM invoice_lines WHERE line_id = $1", line_id
    )
    assert status == "used", "the void opened a session the patient had used"
    released = [
        e for e in events.received if isinstance(e.payload, LineUnlinked) and e.patient_id == who
    ]
    assert released == [], "nothing was linked when the void applied"
