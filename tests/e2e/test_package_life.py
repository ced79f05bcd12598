"""One package's whole life, from sale to write-off (issue #22, R18), told through the three
services as processes and driven only as their users drive them: commands on the registry's
topics and the staff screens over HTTP, like the help article's acceptance suite. Every step
checks what each service it touches shows; at the end the deferred-revenue report equals what
the invoicing events say, to the cent, and the three services agree on every link (I3). The
clinic is in Sydney: every day below is Sydney's (R15).

The package: "4 x 60-min massage", 200.00 (four sessions of 50.00), valid 60 days from the day of
purchase, 14 days of grace, reminders 30 and 7 days before the last valid day, and a
cancellation within 24 hours of the appointment forfeits the session (R9).

1. **Sale with a household.** Ann Lee bought it at Northside 45 days ago, shared with her son
   Ben, and pays 200.00. Its last valid day is 14 days away: the expiry sweep reminds her
   (PackageExpiringSoon, the 30-day reminder, written off after 14 more days of grace).
2. **Links.** Ben's appointment links to session 1, "shared by Ann Lee"; Ann's own to session 2.
   Ben arrives (LineUsed: 50.00 recognised); Ann cancels hers three hours before it
   (LineForfeited: 50.00 forfeited).
3. **Top-up and transfer.** Staff add two sessions for 90.00 (45.00 each, sessions 5 and 6) and
   Ann pays for them; she gives one unbooked session to her mother Cleo: the highest unbooked
   line (6) moves to a new invoice of Cleo's, paid by Ann's, and Cleo's waiting appointment
   links to it (R12).
4. **Extension.** Ben's next appointment, six days after the last valid day, waits, explained
   ("expired on ..."). Staff extend the invoice by 30 days; the appointment links to session 3.
   Sessions 4 and 5 stay unbooked.
5. **The end.** A write-off comes only on the selling location's real day after the last valid
   day and the grace, and an extension moves that day later, so an invoice extended here cannot
   also be written off within a test that lasts a minute (a process's sweep takes no injected
   clock). The end is told on the Lees' earlier sale of the same package: Ann bought it 100
   days ago, shared with Ben, paid and never booked; its last valid day was 41 days ago and its
   grace ended 27 days ago. The running sweep (every second here) writes off its four sessions
   (SessionsExpired: 200.00 expired, accounted at the Sydney midnight that ended the grace),
   and an extension asked for now is refused: sessions written off stay written off. Sessions 4
   and 5 of the extended invoice will meet the same end on the day after its new last valid day
   and the grace, unless they are booked by then.
6. **The books.** The deferred-revenue report (JSON and CSV, all locations and Northside's)
   equals a recomputation from the invoicing events read off the topic: sold 490.00 (two sales
   and the top-up), recognised 50.00, forfeited 50.00, expired 200.00, transferred 45.00 out of
   Ann's invoice and into Cleo's, owed 190.00 (145.00 on Ann's, 45.00 on Cleo's).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from packline_contracts import clinic_time
from packline_contracts.appointments import Attendance, CancelAppointment, RecordAttendance
from packline_contracts.catalogue import PractitionerDefined
from packline_contracts.envelope import Envelope
from packline_contracts.ids import derived_id
from packline_contracts.invoices import (
    IssuePackageInvoice,
    LineForfeited,
    LineStatus,
    LineUsed,
    PackageExpiringSoon,
    PackageInvoice,
    PackageInvoiceExtended,
    PackageInvoiceIssued,
    PackageInvoiceToppedUp,
    PaymentRecorded,
    PurchaseChannel,
    RecordPayment,
    SessionsExpired,
    SessionsTransferred,
)
from packline_contracts.matching import AppointmentNotMatched, NoMatchCode
from packline_contracts.patients import PatientRegistered, RegisterPatient
from packline_contracts.topics import (
    CALENDAR_DIRECTORY,
    CALENDAR_EVENTS,
    INVOICING_EVENTS,
    MATCHER_EVENTS,
    PATIENT_DIRECTORY,
)
from packline_contracts.types import LateCancelPolicy

from tests.clinic import DR_A, NORTHSIDE, booking, fee_commands, package, patient, setup_in
from tests.conftest import CreateDatabase, Infrastructure, ReadEvents
from tests.e2e.packline_processes import packline_processes
from tests.e2e.test_help_article import CLINIC_ZONE, Clinic
from tests.helpers import caught_up, eventually, get_until, shown
from tests.integration.test_revenue import csv_rows, recomputed

pytestmark = pytest.mark.infra

FAMILY = package("family-4", count=4, price_cents=20000, days=60).model_copy(
    update={
        "grace_days": 14,
        "expiry_warning_days": [30, 7],
        "late_cancel_policy": LateCancelPolicy(forfeit_within_hours=24),
    }
)
SHARE = 5000  # 200.00 over four sessions
TOP_UP_SHARE = 4500  # 90.00 over two
SWEEP_EVERY_SECONDS = "1"


@pytest.fixture
async def clinic(
    infrastructure: Infrastructure,
    topic_prefix: str,
    create_database: CreateDatabase,
    producer: Any,
    read_events: ReadEvents,
) -> AsyncIterator[Clinic]:
    """The three services as processes, the expiry sweep every second, the clinic in Sydney."""
    async with packline_processes(
        infrastructure,
        topic_prefix,
        create_database,
        extra_env={"PACKLINE_EXPIRY_SWEEP_INTERVAL_SECONDS": SWEEP_EVERY_SECONDS},
    ) as system:
        for message in [*setup_in(CLINIC_ZONE), *fee_commands(), FAMILY]:
            await producer.send(message)
        events = await read_events(CALENDAR_EVENTS, INVOICING_EVENTS, MATCHER_EVENTS)

        async def catalogue_ready() -> bool:
            known = await system.http["invoicing"].get(f"/packages/{FAMILY.package_id}")
            fees = (await system.http["calendar"].get("/fees")).json()
            return known.status_code == 200 and len(fees) == 2

        await eventually(catalogue_ready, what="the catalogue to be loaded")
        # Invoicing takes the selling location's time zone from the directory, and the matcher
        # words its explanations with the directory's names: both have applied it.
        directory = await read_events(CALENDAR_DIRECTORY)
        await directory.wait_for(PractitionerDefined, lambda e: e.payload.practitioner_id == DR_A)
        for group in ("invoicing.directory", "matcher.directory"):
            await caught_up(
                infrastructure.kafka_bootstrap,
                f"{topic_prefix}packline.{group}",
                [topic_prefix + CALENDAR_DIRECTORY.name],
            )
        yield Clinic(system, producer, events)


async def register(
    clinic: Clinic,
    read_events: ReadEvents,
    infrastructure: Infrastructure,
    topic_prefix: str,
    names: list[str],
) -> list[str]:
    """Patients in the directory (R16), their names known to the matcher ("shared by ...")."""
    people = [patient() for _ in names]
    for who, name in zip(people, names, strict=True):
        await clinic.producer.send(RegisterPatient(patient_id=who, name=name))
    directory = await read_events(PATIENT_DIRECTORY)
    for who in people:
        await directory.wait_for(PatientRegistered, about_patient(who))
    await caught_up(
        infrastructure.kafka_bootstrap,
        f"{topic_prefix}packline.matcher.directory",
        [topic_prefix + PATIENT_DIRECTORY.name],
    )
    return people


async def sell(clinic: Clinic, who: str, days_ago: int, shared_with: list[str]) -> PackageInvoice:
    """Staff sell the package at Northside, ``days_ago`` days ago, shared with the household."""
    invoice_id = uuid4()
    await clinic.producer.send(
        IssuePackageInvoice(
            patient_id=who,
            invoice_id=invoice_id,
            package_id=FAMILY.package_id,
            channel=PurchaseChannel.STAFF,
            issued_by="reception:maria",
            issued_at=datetime.now(UTC) - timedelta(days=days_ago),
            location_id=NORTHSIDE,
            shared_with=shared_with,
        )
    )
    issued = await clinic.events.wait_for(
        PackageInvoiceIssued, lambda e: e.payload.invoice_id == invoice_id
    )
    await matcher_lines(clinic, who, invoice_id, lambda statuses: len(statuses) == 4)
    return issued.payload.invoice


async def pay(clinic: Clinic, invoice_id: UUID, who: str, cents: int) -> PaymentRecorded:
    payment_id = uuid4()
    await clinic.producer.send(
        RecordPayment(
            patient_id=who,
            invoice_id=invoice_id,
            payment_id=payment_id,
            amount_cents=cents,
            paid_at=datetime.now(UTC),
            recorded_by="reception:maria",
        )
    )
    paid = await clinic.events.wait_for(
        PaymentRecorded, lambda e: e.payload.payment_id == payment_id
    )
    return paid.payload


async def matcher_lines(
    clinic: Clinic, who: str, invoice_id: UUID, holds: Callable[[list[str]], bool]
) -> list[str]:
    """The statuses of the invoice's lines in the matcher's read model, once ``holds`` of them."""

    def statuses(body: dict[str, Any]) -> list[str]:
        return [line["status"] for line in body["lines"] if line["invoice_id"] == str(invoice_id)]

    body = await get_until(
        clinic.http("matcher"),
        f"/patients/{who}/links",
        lambda body: holds(statuses(body)),
        what=f"the matcher's lines of invoice {invoice_id}",
    )
    return statuses(body)


def about(invoice_id: UUID) -> Callable[[Envelope[Any]], bool]:
    return lambda envelope: bool(envelope.payload.invoice_id == invoice_id)


def about_patient(patient_id: str) -> Callable[[Envelope[Any]], bool]:
    return lambda envelope: bool(envelope.payload.patient_id == patient_id)


def same_message(message_id: UUID) -> Callable[[Envelope[Any]], bool]:
    return lambda envelope: envelope.message_id == message_id


async def happened(clinic: Clinic, invoice_id: UUID, line_number: int) -> list[str]:
    """What happened to a line, in order, as its history in invoicing tells it."""
    history = await clinic.http("invoicing").get(
        f"/invoices/{invoice_id}/lines/{line_number}/history"
    )
    assert history.status_code == 200, shown(history)
    return [entry["happened"] for entry in history.json()]


def at_ten(day: date) -> datetime:
    """10:00 on ``day`` at the clinic."""
    return clinic_time.at(day, time(10), CLINIC_ZONE)


# The invoicing events that move what an invoice owes (docs/revenue.md).
ACCOUNTED = (
    PackageInvoiceIssued,
    PackageInvoiceToppedUp,
    LineUsed,
    LineForfeited,
    SessionsTransferred,
    SessionsExpired,
)


async def test_a_package_from_sale_to_write_off(
    clinic: Clinic, read_events: ReadEvents, infrastructure: Infrastructure, topic_prefix: str
) -> None:
    ann, ben, cleo = await register(
        clinic, read_events, infrastructure, topic_prefix, ["Ann Lee", "Ben Lee", "Cleo Lee"]
    )
    today = clinic_time.local_day(datetime.now(UTC), CLINIC_ZONE)

    # 1. Sale with a household, 45 days ago at Northside, paid; the sweep reminds of its expiry.
    invoice = await sell(clinic, ann, days_ago=45, shared_with=[ben])
    last_day = clinic_time.local_day(invoice.issued_at, CLINIC_ZONE) + timedelta(days=59)
    assert (invoice.location_id, invoice.time_zone) == (NORTHSIDE, CLINIC_ZONE)
    assert (invoice.shared_with, invoice.grace_days) == ([ben], 14)
    assert [line.share_cents for line in invoice.lines] == [SHARE] * 4
    assert {line.valid_until for line in invoice.lines} == {last_day}
    assert (invoice.price_cents, invoice.owed_cents) == (20000, 20000)
    paid = await pay(clinic, invoice.invoice_id, ann, 20000)
    assert (paid.paid_cents, paid.status) == (20000, "paid")
    reminded = await clinic.events.wait_for(PackageExpiringSoon, about(invoice.invoice_id))
    reminder = reminded.payload
    assert (reminder.threshold_days, reminder.expires_on, reminder.unbooked) == (30, last_day, 4)
    reminded_on = clinic_time.local_day(reminded.occurred_at, CLINIC_ZONE)
    assert reminder.days_left == (last_day - reminded_on).days
    assert reminder.written_off_after == last_day + timedelta(days=14)

    # 2. Ben's appointment takes session 1 of his mother's package, Ann's own session 2; Ben
    # arrives, Ann cancels three hours before hers: forfeited under the package's policy.
    bens = await clinic.book(booking(ben, at_ten(today + timedelta(days=2))))
    link = await clinic.linked(bens)
    assert (link.invoice_id, link.session_number) == (invoice.invoice_id, 1)
    assert link.rule.endswith(", shared by Ann Lee"), link.rule
    anns_booking = booking(ann, at_ten(today + timedelta(days=3)))
    anns = await clinic.book(anns_booking)
    own = await clinic.linked(anns)
    assert (own.invoice_id, own.session_number, own.balance.remaining) == (
        invoice.invoice_id,
        2,
        2,
    )
    assert "shared by" not in own.rule, own.rule
    await clinic.producer.send(
        RecordAttendance(
            patient_id=ben,
            appointment_id=bens,
            attendance=Attendance.ARRIVED,
            recorded_by="dr-adams",
        )
    )
    used = (
        await clinic.events.wait_for(LineUsed, lambda e: e.payload.appointment_id == bens)
    ).payload
    assert (used.recognised_cents, used.owed_cents) == (SHARE, 15000)
    await clinic.producer.send(
        CancelAppointment(
            patient_id=ann,
            appointment_id=anns,
            cancelled_by="patient",
            cancelled_at=anns_booking.starts_at - timedelta(hours=3),
        )
    )
    forfeited = (
        await clinic.events.wait_for(LineForfeited, lambda e: e.payload.appointment_id == anns)
    ).payload
    assert (forfeited.forfeited_cents, forfeited.owed_cents) == (SHARE, 10000)
    panel = await clinic.panel_when(
        bens, lambda p: p["package"] and p["package"]["state"] == "used"
    )
    assert (panel["patient_name"], panel["package"]["invoice_id"]) == (
        "Ben Lee",
        str(invoice.invoice_id),
    )
    # The calendar's panel notes the forfeited session by the number it was linked as; the
    # matcher sees the appointment cancelled.
    panel = await clinic.panel_when(
        anns, lambda p: p["package"] and p["package"]["state"] == "forfeited"
    )
    assert panel["package"]["session_number"] == 2
    assert panel["package"]["text"].startswith("4 x 60-min massage: session 2 forfeited (")
    await get_until(
        clinic.http("matcher"),
        f"/patients/{ann}/appointments",
        lambda seen: [a["status"] for a in seen] == ["cancelled"],
        what="the matcher to see Ann's appointment cancelled",
    )

    # 3. Staff top up two sessions for 90.00, Ann pays; she gives one unbooked session to her
    # mother, whose waiting appointment then links to her new invoice.
    topup_id = uuid4()
    answer = await clinic.http("invoicing").post(
        f"/invoices/{invoice.invoice_id}/top-ups",
        json={
            "sessions": 2,
            "price_cents": 9000,
            "reason": "two more at the returning-patient price",
            "topup_id": str(topup_id),
            "topped_up_by": "billing:bo",
        },
    )
    assert answer.status_code == 201, shown(answer)
    assert [line["share_cents"] for line in answer.json()["lines"]] == [SHARE] * 4 + [
        TOP_UP_SHARE
    ] * 2
    topped = (
        await clinic.events.wait_for(
            PackageInvoiceToppedUp, lambda e: e.payload.topup_id == topup_id
        )
    ).payload
    assert [line.line_number for line in topped.lines] == [5, 6]
    assert {line.valid_until for line in topped.lines} == {last_day}
    assert (topped.sold_cents, topped.price_cents, topped.owed_cents) == (9000, 29000, 19000)
    paid = await pay(clinic, invoice.invoice_id, ann, 9000)
    assert (paid.paid_cents, paid.status) == (29000, "paid")

    cleos = await clinic.book(booking(cleo, at_ten(today + timedelta(days=4))))
    await get_until(
        clinic.http("matcher"),
        f"/patients/{cleo}/appointments",
        lambda seen: len(seen) == 1,
        what="the matcher to see Cleo's appointment",
    )
    transfer_id = uuid4()
    answer = await clinic.http("invoicing").post(
        f"/invoices/{invoice.invoice_id}/transfers",
        json={
            "to_patient_id": cleo,
            "sessions": 1,
            "reason": "a session for her mother",
            "transfer_id": str(transfer_id),
            "transferred_by": "billing:bo",
        },
    )
    assert answer.status_code == 201, shown(answer)
    cleos_invoice = derived_id("transfer", transfer_id)
    assert (answer.json()["invoice_id"], answer.json()["patient_id"]) == (str(cleos_invoice), cleo)
    moved = (
        await clinic.events.wait_for(
            SessionsTransferred, lambda e: e.payload.transfer_id == transfer_id
        )
    ).payload
    assert [line.line_number for line in moved.lines] == [6]  # the highest unbooked line
    assert (moved.to_patient_id, moved.to_invoice_id) == (cleo, cleos_invoice)
    assert (moved.transferred_cents, moved.owed_cents) == (TOP_UP_SHARE, 14500)
    given = (
        await clinic.events.wait_for(
            PackageInvoiceIssued, lambda e: e.payload.invoice_id == cleos_invoice
        )
    ).payload
    assert given.transferred_from == invoice.invoice_id
    new = given.invoice
    assert (new.price_cents, new.paid_cents, new.owed_cents) == (TOP_UP_SHARE,) * 3
    assert [(line.share_cents, line.valid_until) for line in new.lines] == [
        (TOP_UP_SHARE, last_day)
    ]
    cleos_link = await clinic.linked(cleos)
    assert (cleos_link.invoice_id, cleos_link.session_number) == (cleos_invoice, 1)

    # 4. Ben's next appointment is after the last valid day: it waits, explained, until staff
    # extend the invoice by 30 days.
    later = booking(ben, at_ten(last_day + timedelta(days=6)))
    await clinic.book(later)
    waiting = (
        await clinic.events.wait_for(
            AppointmentNotMatched, lambda e: e.payload.appointment_id == later.appointment_id
        )
    ).payload
    (candidate,) = waiting.candidates
    assert (candidate.invoice_id, candidate.code) == (invoice.invoice_id, NoMatchCode.EXPIRED)
    assert candidate.reason.startswith("expired on "), candidate.reason
    new_last_day = last_day + timedelta(days=30)
    answer = await clinic.http("invoicing").put(
        f"/invoices/{invoice.invoice_id}/validity",
        json={
            "valid_until": new_last_day.isoformat(),
            "reason": "Ben's arm is in a cast for a month",
            "extended_by": "billing:bo",
        },
    )
    assert answer.status_code == 200, shown(answer)
    extended = (
        await clinic.events.wait_for(PackageInvoiceExtended, about(invoice.invoice_id))
    ).payload
    assert (extended.previous_valid_until, extended.valid_until) == (last_day, new_last_day)
    unbooked = [invoice.lines[2].line_id, invoice.lines[3].line_id, topped.lines[0].line_id]
    assert sorted(extended.line_ids) == sorted(unbooked)
    relinked = await clinic.linked(later.appointment_id)
    assert (relinked.invoice_id, relinked.session_number) == (invoice.invoice_id, 3)
    assert relinked.rule.endswith(", shared by Ann Lee"), relinked.rule
    assert relinked.line.valid_until == new_last_day

    # 5. The end, on the Lees' earlier sale of the package: 100 days ago, paid, never booked;
    # its validity and grace have ended, so the sweep writes off its four sessions.
    earlier = await sell(clinic, ann, days_ago=100, shared_with=[ben])
    earlier_last_day = clinic_time.local_day(earlier.issued_at, CLINIC_ZONE) + timedelta(days=59)
    assert earlier_last_day + timedelta(days=14) < today
    await pay(clinic, earlier.invoice_id, ann, 20000)
    expired = (await clinic.events.wait_for(SessionsExpired, about(earlier.invoice_id))).payload
    assert (expired.sessions, expired.expired_cents, expired.owed_cents) == (4, 20000, 0)
    assert (expired.expired_on, expired.grace_days) == (earlier_last_day, 14)
    assert expired.accounted_at == clinic_time.day_starts(
        earlier_last_day + timedelta(days=15), CLINIC_ZONE
    )
    assert [line.status for line in expired.lines] == [LineStatus.EXPIRED] * 4
    assert (expired.balance.total, expired.balance.remaining, expired.balance.expired) == (4, 0, 4)
    too_late = await clinic.http("invoicing").put(
        f"/invoices/{earlier.invoice_id}/validity",
        json={
            "valid_until": new_last_day.isoformat(),
            "reason": "asked after the grace",
            "extended_by": "billing:bo",
        },
    )
    assert too_late.status_code == 422, shown(too_late)
    (problem,) = too_late.json()["detail"]
    assert problem["loc"] == ["path", "invoice_id"] and "written off" in problem["msg"], problem

    # Every service shows the same end state.
    anns_invoice = await clinic.invoice(invoice.invoice_id)
    assert [line["status"] for line in anns_invoice["lines"]] == [
        "used",
        "forfeited",
        "linked",
        "open",
        "open",
        "transferred",
    ]
    assert [line["valid_until"] for line in anns_invoice["lines"]] == [
        day.isoformat() for day in [last_day] * 2 + [new_last_day] * 3 + [last_day]
    ]
    assert (
        anns_invoice["status"],
        anns_invoice["price_cents"],
        anns_invoice["paid_cents"],
        anns_invoice["owed_cents"],
    ) == ("paid", 29000, 29000, 14500)
    balance = anns_invoice["balance"]
    assert (balance["total"], balance["booked"], balance["used"], balance["remaining"]) == (
        5,
        1,
        2,
        2,
    )
    assert balance["expires_on"] == new_last_day.isoformat()
    cleos_shown = await clinic.invoice(cleos_invoice)
    assert [line["status"] for line in cleos_shown["lines"]] == ["linked"]
    assert (cleos_shown["patient_id"], cleos_shown["owed_cents"]) == (cleo, TOP_UP_SHARE)
    earlier_shown = await clinic.invoice(earlier.invoice_id)
    assert [line["status"] for line in earlier_shown["lines"]] == ["expired"] * 4
    assert (earlier_shown["status"], earlier_shown["paid_cents"], earlier_shown["owed_cents"]) == (
        "paid",
        20000,
        0,
    )
    assert "4 sessions written off" in earlier_shown["balance_text"], earlier_shown
    assert await matcher_lines(
        clinic,
        ann,
        invoice.invoice_id,
        lambda s: s == ["used", "forfeited", "linked", "open", "open", "transferred"],
    )
    assert await matcher_lines(clinic, ann, earlier.invoice_id, lambda s: s == ["expired"] * 4)
    assert await matcher_lines(clinic, cleo, cleos_invoice, lambda s: s == ["linked"])
    panel = await clinic.panel_when(
        later.appointment_id, lambda p: p["package"] and p["package"]["state"] == "linked"
    )
    assert (panel["package"]["invoice_id"], panel["package"]["session_number"]) == (
        str(invoice.invoice_id),
        3,
    )
    panel = await clinic.panel_when(cleos, lambda p: p["package"] is not None)
    assert panel["package"]["invoice_id"] == str(cleos_invoice)
    # Each line's history in invoicing tells its part of the story.
    assert [await happened(clinic, invoice.invoice_id, n) for n in range(1, 7)] == [
        ["linked", "used"],
        ["linked", "forfeited"],
        ["extended", "linked"],
        ["extended"],
        ["extended"],
        ["transferred"],
    ]
    assert await happened(clinic, cleos_invoice, 1) == ["linked"]
    assert await happened(clinic, earlier.invoice_id, 4) == ["expired"]

    # 6. The deferred-revenue report equals the invoicing events read off the topic, to the cent.
    reader = await read_events(INVOICING_EVENTS)
    for envelope in clinic.events.received:
        if isinstance(envelope.payload, ACCOUNTED):
            await reader.wait_for(type(envelope.payload), same_message(envelope.message_id))
    first = clinic_time.local_day(earlier.issued_at, CLINIC_ZONE).replace(day=1)
    period = {"from": first.isoformat(), "to": new_last_day.isoformat()}
    for location in (None, NORTHSIDE):
        query = period | ({"location_id": location} if location else {})
        expected = recomputed(reader.received, first, new_last_day, location)
        answer = await clinic.http("invoicing").get("/reports/deferred-revenue", params=query)
        assert answer.status_code == 200, shown(answer)
        assert answer.json()["rows"] == expected
        as_csv = await clinic.http("invoicing").get(
            "/reports/deferred-revenue", params=query | {"format": "csv"}
        )
        assert as_csv.status_code == 200, shown(as_csv)
        assert as_csv.headers["content-type"].startswith("text/csv")
        assert csv_rows(as_csv.text) == expected
        (eur,) = answer.json()["totals"]
        assert eur == {
            "currency": "EUR",
            "opening_owed_cents": 0,
            "sold_cents": 20000 + 9000 + 20000,  # two sales and the top-up
            "recognised_cents": SHARE,  # Ben's session
            "forfeited_cents": SHARE,  # Ann's late cancellation
            "expired_cents": 20000,  # the earlier sale's four sessions
            "transferred_in_cents": TOP_UP_SHARE,  # Cleo's invoice
            "transferred_out_cents": TOP_UP_SHARE,  # from Ann's
            "refunded_cents": 0,
            "voided_cents": 0,
            "refunded_recognised_cents": 0,
            "owed_cents": 14500 + TOP_UP_SHARE,  # Ann's invoice and Cleo's
        }

    # At the end the three services agree on every link (I3): the session used, the one
    # forfeited and the two appointments still to come.
    agreed = await clinic.system.reconcile()
    assert agreed.links == 4, agreed
