"""The help article, end to end: the three services run as processes and are driven only the way
their users drive them — commands and events on the registry's topics, staff screens over HTTP.
One test per paragraph of the article and per requirement; each checks the end state in every
service it touches, and that the three services agree on every link (I3). The clinic is in
Sydney, not UTC (R15): what staff see is worded in its local time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import pytest
from packline_contracts import clinic_time, wording
from packline_contracts.appointments import (
    AppointmentBooked,
    BookAppointment,
    CancelAppointment,
    ChangeAppointment,
    DeleteAppointment,
    RescheduleAppointment,
)
from packline_contracts.catalogue import PractitionerDefined
from packline_contracts.client import PacklineConsumer, PacklineProducer
from packline_contracts.invoices import (
    IssuePackageInvoice,
    LineBookingRefused,
    LineLinked,
    LineUnlinked,
    PackageInvoiceIssued,
    PurchaseChannel,
    RecordPayment,
    UnlinkReason,
    VoidPackageInvoice,
)
from packline_contracts.matching import AppointmentNotMatched, NoMatchCode
from packline_contracts.topics import (
    CALENDAR_DIRECTORY,
    CALENDAR_EVENTS,
    INVOICING_EVENTS,
    MATCHER_EVENTS,
)
from packline_contracts.types import BookingSource, Restriction

from tests.clinic import (
    DR_A,
    DR_B,
    MASSAGE_30,
    NORTHSIDE,
    booking,
    days_ahead,
    fee_commands,
    package,
    patient,
    setup_in,
)
from tests.conftest import CreateDatabase, Infrastructure
from tests.e2e.packline_processes import Processes, packline_processes
from tests.helpers import caught_up, eventually, get_until, shown

pytestmark = pytest.mark.infra

# "5 x 60-min massage with Dr Adams at Northside", and one any practitioner may redeem.
CLINIC_ZONE = "Australia/Sydney"


def shows(when: datetime) -> str:
    """What a linked line shows: its appointment's date and time in the clinic's local time."""
    return f"linked: {wording.moment(clinic_time.local(when, CLINIC_ZONE))}"


WITH_DR_A = package("dr-a-north", count=5, practitioners=[DR_A], locations=[NORTHSIDE])
ANYONE = package("anyone-3", count=3, days=120)
SHORT = package("short-2", count=2, days=20)


@dataclass
class Clinic:
    system: Processes
    producer: PacklineProducer
    events: PacklineConsumer

    def http(self, service: str) -> Any:
        return self.system.http[service]

    async def buy(self, who: str, package_id: str) -> Any:
        invoice_id = uuid4()
        await self.producer.send(
            IssuePackageInvoice(
                patient_id=who,
                invoice_id=invoice_id,
                package_id=package_id,
                channel=PurchaseChannel.ONLINE,
                issued_by="online-shop",
                issued_at=datetime.now(UTC),
            )
        )
        issued = await self.events.wait_for(
            PackageInvoiceIssued, lambda e: e.payload.invoice_id == invoice_id
        )
        # The matcher reads purchases and bookings from two topics: wait until it has this one.
        await eventually(
            lambda: self._matcher_knows(who, invoice_id),
            what="the matcher to know the invoice",
            describe=lambda: self.http("matcher").get(f"/patients/{who}/links"),
        )
        return issued.payload.invoice

    async def _matcher_knows(self, who: str, invoice_id: UUID) -> bool:
        links = (await self.http("matcher").get(f"/patients/{who}/links")).json()
        return any(line["invoice_id"] == str(invoice_id) for line in links["lines"])

    async def book(self, command: BookAppointment) -> UUID:
        await self.producer.send(command)
        await self.events.wait_for(
            AppointmentBooked,
            lambda e: e.payload.appointment.appointment_id == command.appointment_id,
        )
        return command.appointment_id

    async def linked(self, appointment_id: UUID, link_version: int = 1) -> LineLinked:
        event = await self.events.wait_for(
            LineLinked,
            lambda e: (
                e.payload.appointment_id == appointment_id
                and e.payload.link_version == link_version
            ),
        )
        return event.payload

    async def read(self, service: str, url: str) -> dict[str, Any]:
        answer = await self.http(service).get(url)
        assert answer.status_code == 200, shown(answer)
        return dict(answer.json())

    async def invoice(self, invoice_id: UUID) -> dict[str, Any]:
        """Invoicing's invoice. Read after one of invoicing's own events, it is already stored:
        the event leaves the outbox only once the change is committed."""
        return await self.read("invoicing", f"/invoices/{invoice_id}")

    async def panel(self, appointment_id: UUID) -> dict[str, Any]:
        return await self.read("calendar", f"/appointments/{appointment_id}")

    async def panel_when(self, appointment_id: UUID, test: Any) -> dict[str, Any]:
        """The calendar's panel once it shows what ``test`` expects: the calendar applies the
        line events some time after invoicing publishes them."""
        return dict(
            await get_until(
                self.http("calendar"),
                f"/appointments/{appointment_id}",
                test,
                what="the appointment panel",
            )
        )


@pytest.fixture
async def clinic(
    infrastructure: Infrastructure,
    topic_prefix: str,
    create_database: CreateDatabase,
    producer: PacklineProducer,
    read_events: Any,
) -> AsyncIterator[Clinic]:
    async with packline_processes(infrastructure, topic_prefix, create_database) as system:
        for message in [*setup_in(CLINIC_ZONE), *fee_commands(), WITH_DR_A, ANYONE, SHORT]:
            await producer.send(message)
        events = await read_events(CALENDAR_EVENTS, INVOICING_EVENTS, MATCHER_EVENTS)

        async def catalogue_ready() -> bool:
            answer = await system.http["calendar"].get(
                "/availability",
                params={
                    "practitioner_id": DR_B,
                    "starts_at": days_ahead(1).isoformat(),
                    "duration_minutes": 5,
                },
            )
            known = await system.http["invoicing"].get(f"/packages/{SHORT.package_id}")
            fees = (await system.http["calendar"].get("/fees")).json()
            return answer.status_code == 200 and known.status_code == 200 and len(fees) == 2

        await eventually(catalogue_ready, what="the directory and catalogue to be loaded")
        # The matcher words its explanations with the directory's names ("only with Dr Adams"),
        # which it reads from the calendar's directory topic: wait until it has applied them.
        directory = await read_events(CALENDAR_DIRECTORY)
        await directory.wait_for(PractitionerDefined, lambda e: e.payload.practitioner_id == DR_B)
        await caught_up(
            infrastructure.kafka_bootstrap,
            f"{topic_prefix}packline.matcher.directory",
            [topic_prefix + CALENDAR_DIRECTORY.name],
        )
        yield Clinic(system, producer, events)
        await system.reconcile()  # after every scenario: I3


# --- The catalogue and the purchase (R1, R2) ---------------------------------------------------


async def test_a_package_sold_with_narrower_restrictions_and_paid_before_use(
    clinic: Clinic,
) -> None:
    prepaid = package("prepaid-any", count=2, pay_before_use=True, price_cents=18000)
    await clinic.producer.send(prepaid)

    terms = await get_until(
        clinic.http("invoicing"), "/packages/prepaid-any", lambda _: True, what="the new package"
    )
    assert terms["pay_before_use"] is True and terms["practitioners"]["ids"] is None
    who = patient()
    invoice_id = uuid4()
    await clinic.producer.send(
        IssuePackageInvoice(
            patient_id=who,
            invoice_id=invoice_id,
            package_id="prepaid-any",
            channel=PurchaseChannel.STAFF,
            issued_by="reception:maria",
            issued_at=datetime.now(UTC),
            practitioners=Restriction(ids=[DR_B]),
            locations=Restriction(ids=[NORTHSIDE]),
        )
    )
    issued = await clinic.events.wait_for(
        PackageInvoiceIssued, lambda e: e.payload.invoice_id == invoice_id
    )
    lines = issued.payload.invoice.lines
    assert [line.practitioners.ids for line in lines] == [[DR_B], [DR_B]]  # chosen at sale
    assert issued.payload.invoice.redeemable is False  # must be paid first
    await eventually(lambda: clinic._matcher_knows(who, invoice_id), what="the matcher")
    unpaid = await clinic.book(booking(who, days_ahead(3), practitioner=DR_B))
    why = await clinic.events.wait_for(
        AppointmentNotMatched, lambda e: e.payload.appointment_id == unpaid
    )
    assert why.payload.candidates[0].code == NoMatchCode.UNPAID
    await clinic.producer.send(
        RecordPayment(
            patient_id=who,
            invoice_id=invoice_id,
            payment_id=uuid4(),
            amount_cents=18000,
            paid_at=datetime.now(UTC),
            recorded_by="payments",
        )
    )
    link = await clinic.linked(unpaid)  # R12: paid now, the waiting appointment is linked
    assert link.invoice_id == invoice_id
    shown = await clinic.invoice(invoice_id)
    assert shown["status"] == "paid" and shown["paid_cents"] == 18000 and shown["redeemable"]


# --- "From the invoice" (R3) ------------------------------------------------------------------


async def test_book_from_the_invoice_after_check_availability(clinic: Clinic) -> None:
    who = patient()
    invoice = await clinic.buy(who, WITH_DR_A.package_id)
    line = invoice.lines[0]
    base = f"/invoices/{invoice.invoice_id}/lines/{line.line_id}"
    when = days_ahead(3, hour=9)
    available = await clinic.http("invoicing").get(
        f"{base}/availability", params={"starts_at": when.isoformat()}
    )
    assert available.json()["available"] is True
    saved = await clinic.http("invoicing").put(
        f"{base}/appointment", json={"starts_at": when.isoformat(), "booked_by": "reception:maria"}
    )
    assert saved.status_code == 202
    appointment_id = UUID(saved.json()["appointment_id"])
    await clinic.linked(appointment_id)
    shown = await clinic.invoice(invoice.invoice_id)
    assert shown["lines"][0]["shows"] == shows(when)  # the date on the line, in Sydney time
    panel = await clinic.panel_when(appointment_id, lambda p: p["package"] is not None)
    assert panel["source"] == "invoice" and panel["practitioner_id"] == DR_A
    assert panel["package"]["text"] == "5 x 60-min massage: session 1 of 5, 4 left"


async def test_book_from_the_invoice_when_check_availability_says_taken(clinic: Clinic) -> None:
    who = patient()
    invoice = await clinic.buy(who, WITH_DR_A.package_id)
    when = days_ahead(4, hour=11)
    await clinic.book(booking(patient(), when, practitioner=DR_A))  # someone else has that slot
    base = f"/invoices/{invoice.invoice_id}/lines/{invoice.lines[0].line_id}"
    taken = await clinic.http("invoicing").get(
        f"{base}/availability", params={"starts_at": when.isoformat()}
    )
    assert taken.json()["available"] is False and "clash" in taken.json()
    saved = await clinic.http("invoicing").put(
        f"{base}/appointment", json={"starts_at": when.isoformat(), "booked_by": "reception:maria"}
    )
    refused = await clinic.events.wait_for(
        LineBookingRefused,
        lambda e: str(e.payload.appointment_id) == saved.json()["appointment_id"],
    )
    assert refused.payload.reason.startswith("Dr Adams is already booked")
    line = (await clinic.invoice(invoice.invoice_id))["lines"][0]
    assert line["shows"] == "Unassigned" and line["note"].startswith("Dr Adams is already booked")


# --- "From the calendar" (R4) and online (R5) -------------------------------------------------


async def test_book_from_the_calendar_links_and_notes_the_package(clinic: Clinic) -> None:
    who = patient()
    invoice = await clinic.buy(who, WITH_DR_A.package_id)
    when = days_ahead(5, hour=10)
    appointment = await clinic.book(booking(who, when))
    link = await clinic.linked(appointment)
    assert link.invoice_id == invoice.invoice_id and link.balance.remaining == 4
    panel = await clinic.panel_when(appointment, lambda p: p["package"] is not None)
    assert panel["package"]["invoice_id"] == str(invoice.invoice_id)
    assert (await clinic.invoice(invoice.invoice_id))["lines"][0]["shows"] == shows(when)


async def test_patients_booking_online_claim_their_package(clinic: Clinic) -> None:
    who = patient()
    await clinic.buy(who, WITH_DR_A.package_id)
    appointment = await clinic.book(booking(who, days_ahead(6), source=BookingSource.ONLINE))
    assert (await clinic.linked(appointment)).line.line_number == 1


# --- "Notice": only with the practitioner and location linked in the package invoice (R6, R7) -


async def test_only_the_linked_practitioner_and_location_and_the_miss_is_explained(
    clinic: Clinic,
) -> None:
    who = patient()
    await clinic.buy(who, WITH_DR_A.package_id)
    wrong = await clinic.book(booking(who, days_ahead(7), practitioner=DR_B))
    explained = await clinic.events.wait_for(
        AppointmentNotMatched, lambda e: e.payload.appointment_id == wrong
    )
    assert explained.payload.candidates[0].reason == "covers this fee only with Dr Adams"
    why = (await clinic.http("matcher").get(f"/appointments/{wrong}/explanation")).json()
    assert "only with Dr Adams" in why["summary"]
    assert (await clinic.panel(wrong))["package"] is None


async def test_an_expired_package_is_explained(clinic: Clinic) -> None:
    who = patient()
    await clinic.buy(who, SHORT.package_id)
    late = await clinic.book(booking(who, days_ahead(40)))
    explained = await clinic.events.wait_for(
        AppointmentNotMatched, lambda e: e.payload.appointment_id == late
    )
    assert explained.payload.candidates[0].code == NoMatchCode.EXPIRED
    assert explained.payload.candidates[0].reason.startswith("expired on ")


# --- Cancel: unlink from the invoice, then Unassigned (R8); cancel or delete (R9) -------------


async def test_unlink_from_the_invoice_then_unassigned(clinic: Clinic) -> None:
    who = patient()
    invoice = await clinic.buy(who, WITH_DR_A.package_id)
    appointment = await clinic.book(booking(who, days_ahead(8)))
    link = await clinic.linked(appointment)
    await clinic.panel_when(appointment, lambda p: p["package"] is not None)
    answer = await clinic.http("invoicing").delete(
        f"/invoices/{invoice.invoice_id}/lines/{link.line.line_id}/appointment",
        params={"unassigned_by": "reception:maria"},
    )
    assert answer.status_code == 200
    released = await clinic.events.wait_for(
        LineUnlinked, lambda e: e.payload.appointment_id == appointment
    )
    assert released.payload.reason == UnlinkReason.UNASSIGNED_BY_STAFF
    panel = await clinic.panel_when(appointment, lambda p: p["package"] is None)
    assert panel["status"] == "booked"  # it stays in the calendar
    assert (await clinic.invoice(invoice.invoice_id))["lines"][0]["shows"] == "Unassigned"
    # Another line freeing up later does not pull it back (R8):
    other = await clinic.book(booking(who, days_ahead(9)))
    await clinic.linked(other)
    await clinic.producer.send(
        CancelAppointment(
            patient_id=who,
            appointment_id=other,
            cancelled_by="patient",
            cancelled_at=datetime.now(UTC),
        )
    )
    await clinic.events.wait_for(LineUnlinked, lambda e: e.payload.appointment_id == other)
    await clinic.system.reconcile()
    assert (await clinic.panel(appointment))["package"] is None


@pytest.mark.parametrize("how", ["cancel", "delete"])
async def test_cancel_or_delete_in_the_calendar_releases_the_session(
    clinic: Clinic, how: str
) -> None:
    who = patient()
    invoice = await clinic.buy(who, WITH_DR_A.package_id)
    appointment = await clinic.book(booking(who, days_ahead(10)))
    await clinic.linked(appointment)
    if how == "cancel":
        await clinic.producer.send(
            CancelAppointment(
                patient_id=who,
                appointment_id=appointment,
                cancelled_by="patient",
                cancelled_at=datetime.now(UTC),
            )
        )
    else:
        await clinic.producer.send(
            DeleteAppointment(
                patient_id=who, appointment_id=appointment, deleted_by="reception:maria"
            )
        )
    released = await clinic.events.wait_for(
        LineUnlinked, lambda e: e.payload.appointment_id == appointment
    )
    assert released.payload.balance.remaining == 5  # credit restored
    assert (await clinic.invoice(invoice.invoice_id))["lines"][0]["shows"] == "Unassigned"


# --- R10, R11, R12, R13, R14 ------------------------------------------------------------------


async def test_reschedule_keeps_the_link_and_a_fee_change_releases_it(clinic: Clinic) -> None:
    who = patient()
    invoice = await clinic.buy(who, WITH_DR_A.package_id)
    appointment = await clinic.book(booking(who, days_ahead(11)))
    await clinic.linked(appointment)
    moved_to = days_ahead(12, hour=15)
    await clinic.producer.send(
        RescheduleAppointment(
            patient_id=who, appointment_id=appointment, starts_at=moved_to, requested_by="maria"
        )
    )
    await clinic.linked(appointment, link_version=2)
    assert (await clinic.invoice(invoice.invoice_id))["lines"][0]["shows"] == shows(moved_to)
    await clinic.producer.send(
        ChangeAppointment(
            patient_id=who, appointment_id=appointment, fee_ids=[MASSAGE_30], requested_by="maria"
        )
    )
    released = await clinic.events.wait_for(
        LineUnlinked, lambda e: e.payload.appointment_id == appointment
    )
    assert released.payload.reason == UnlinkReason.NO_LONGER_FITS
    await clinic.panel_when(
        appointment, lambda p: p["package"] is None and p["fee_ids"] == [MASSAGE_30]
    )


async def test_two_packages_covering_the_fee_use_the_one_expiring_first(clinic: Clinic) -> None:
    who = patient()
    await clinic.buy(who, ANYONE.package_id)
    short = await clinic.buy(who, SHORT.package_id)
    appointment = await clinic.book(booking(who, days_ahead(2), practitioner=DR_B))
    link = await clinic.linked(appointment)
    assert link.invoice_id == short.invoice_id
    assert link.rule.startswith("earliest expiry")


async def test_a_late_purchase_links_upcoming_appointments_earliest_first(clinic: Clinic) -> None:
    who = patient()
    later = await clinic.book(booking(who, days_ahead(14)))
    sooner = await clinic.book(booking(who, days_ahead(13)))
    await eventually(
        lambda: _matcher_has_appointments(clinic, who, 2), what="the matcher to see both"
    )
    invoice = await clinic.buy(who, SHORT.package_id)
    assert (await clinic.linked(sooner)).line.line_number == 1
    assert (await clinic.linked(later)).line.line_number == 2
    shown = await clinic.invoice(invoice.invoice_id)
    assert shown["balance"]["booked"] == 2 and shown["balance"]["remaining"] == 0


async def _matcher_has_appointments(clinic: Clinic, who: str, count: int) -> bool:
    seen = (await clinic.http("matcher").get(f"/patients/{who}/appointments")).json()
    return len(seen) >= count


async def test_voiding_unlinks_and_the_appointment_moves_to_another_package(clinic: Clinic) -> None:
    who = patient()
    short = await clinic.buy(who, SHORT.package_id)
    appointment = await clinic.book(booking(who, days_ahead(3)))
    assert (await clinic.linked(appointment)).invoice_id == short.invoice_id
    other = await clinic.buy(who, ANYONE.package_id)
    await clinic.producer.send(
        VoidPackageInvoice(
            patient_id=who, invoice_id=short.invoice_id, voided_by="manager", reason="sold in error"
        )
    )
    moved = await clinic.linked(appointment, link_version=3)
    assert moved.invoice_id == other.invoice_id
    assert (await clinic.invoice(short.invoice_id))["status"] == "void"
    await clinic.panel_when(
        appointment, lambda p: p["package"] and p["package"]["invoice_id"] == str(other.invoice_id)
    )


async def test_balances_are_queryable_and_carried_in_the_events(clinic: Clinic) -> None:
    who = patient()
    invoice = await clinic.buy(who, WITH_DR_A.package_id)
    for day in (15, 16):
        link = await clinic.linked(await clinic.book(booking(who, days_ahead(day))))
    assert (link.balance.total, link.balance.booked, link.balance.remaining) == (5, 2, 3)
    shown = await clinic.invoice(invoice.invoice_id)
    assert shown["balance_text"].startswith("3 of 5 left, expires ")
    listed = (await clinic.http("invoicing").get(f"/patients/{who}/invoices")).json()
    assert listed[0]["balance"]["remaining"] == 3
