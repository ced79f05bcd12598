"""The help article, told by the running system: ``deploy/packline demo`` (after ``run``).

It sets up a clinic (practitioners, locations, fees, a package), then walks through the article's
scenarios the way other services and staff screens drive Packline — commands on Kafka, HTTP — and
says in plain words what happened at each step. Every run uses new patients.

``--runs N`` tells the story N times in a row (each with a new patient) and stops at the first
that fails, saying which step and why, with exit status 1."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import httpx
from packline_contracts.appointments import (
    AppointmentBooked,
    BookAppointment,
    CancelAppointment,
)
from packline_contracts.catalogue import (
    DefineFee,
    DefineLocation,
    DefinePackage,
    DefinePractitioner,
)
from packline_contracts.client import PacklineConsumer, PacklineProducer
from packline_contracts.invoices import (
    IssuePackageInvoice,
    LineLinked,
    LineUnlinked,
    PackageInvoiceIssued,
    PurchaseChannel,
)
from packline_contracts.matching import AppointmentNotMatched
from packline_contracts.patients import RegisterPatient
from packline_contracts.topics import CALENDAR_EVENTS, INVOICING_EVENTS, MATCHER_EVENTS
from packline_contracts.types import BookingSource, PackageItem, Restriction, Validity

KAFKA = os.environ.get("PACKLINE_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
CALENDAR = f"http://127.0.0.1:{os.environ.get('PACKLINE_CALENDAR_HTTP_PORT', '8081')}"
INVOICING = f"http://127.0.0.1:{os.environ.get('PACKLINE_INVOICING_HTTP_PORT', '8082')}"
MATCHER = f"http://127.0.0.1:{os.environ.get('PACKLINE_MATCHER_HTTP_PORT', '8083')}"
TOKEN = os.environ.get("PACKLINE_STAFF_TOKEN")
PREFIX = os.environ.get("PACKLINE_TOPIC_PREFIX", "")
STAFF = {"Authorization": f"Bearer {TOKEN}"} if TOKEN else {}


def say(text: str) -> None:
    print(text, flush=True)


def when(days: int, hour: int) -> datetime:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today + timedelta(days=days, hours=hour)


def short(invoice_id: UUID) -> str:
    return f"#{str(invoice_id)[:8]}"


async def story() -> None:
    run = uuid4().hex[:6]
    jane = f"jane-{run}"
    async with (
        PacklineProducer(KAFKA, producer="packline-demo", topic_prefix=PREFIX) as send,
        # Entering waits until the reader is positioned: nothing sent next can be missed.
        PacklineConsumer(
            KAFKA,
            [CALENDAR_EVENTS, INVOICING_EVENTS, MATCHER_EVENTS],
            group_id=f"packline-demo-{run}",
            topic_prefix=PREFIX,
            from_beginning=False,
        ) as events,
        httpx.AsyncClient(base_url=INVOICING, headers=STAFF, timeout=10) as invoicing,
        httpx.AsyncClient(base_url=CALENDAR, headers=STAFF, timeout=10) as calendar,
        httpx.AsyncClient(base_url=MATCHER, headers=STAFF, timeout=10) as matcher,
    ):
        say("Setting up the clinic: Dr Adams and Dr Baker, Northside and Southside clinics,")
        say(
            "a 60-min massage fee, and the package '5 x 60-min massage with Dr Adams at Northside'."
        )
        for message in (
            DefinePractitioner(practitioner_id="dr-adams", name="Dr Adams"),
            DefinePractitioner(practitioner_id="dr-baker", name="Dr Baker"),
            DefineLocation(location_id="northside", name="Northside clinic"),
            DefineLocation(location_id="southside", name="Southside clinic"),
            DefineFee(
                fee_id="massage-60",
                name="60-min massage",
                duration_minutes=60,
                price_cents=9000,
                currency="EUR",
            ),
            DefinePackage(
                package_id="massage-5x60-dr-adams",
                name="5 x 60-min massage with Dr Adams at Northside",
                items=[PackageItem(fee_id="massage-60", count=5)],
                practitioners=Restriction(ids=["dr-adams"]),
                locations=Restriction(ids=["northside"]),
                validity=Validity(days=90),
                price_cents=40000,
                currency="EUR",
                online_purchase=True,
            ),
        ):
            await send.send(message)
        await wait_until(lambda: catalogue_ready(invoicing, calendar), "the catalogue")

        await send.send(RegisterPatient(patient_id=jane, name=f"Jane Demo {run}"))
        say(f"\nThe patient: Jane Demo {run}, patient id {jane} (the console finds her by name).")
        invoice_id = uuid4()
        await send.send(
            IssuePackageInvoice(
                patient_id=jane,
                invoice_id=invoice_id,
                package_id="massage-5x60-dr-adams",
                channel=PurchaseChannel.ONLINE,
                issued_by="online shop",
                issued_at=datetime.now(UTC),
            )
        )
        issued = (
            await events.wait_for(
                PackageInvoiceIssued, lambda e: e.payload.invoice_id == invoice_id
            )
        ).payload
        b = issued.invoice.balance
        say(
            f"\n1. Jane buys the package online: package invoice {short(invoice_id)},"
            f" {b.total} sessions, expires {b.expires_on:%a %d %b %Y}."
        )
        await wait_until(lambda: matcher_knows(matcher, jane, invoice_id), "the matcher")

        say(
            "\n2. From the invoice: staff open the invoice, click the pencil next to the first fee."
        )
        line = issued.invoice.lines[0]
        base = f"/invoices/{invoice_id}/lines/{line.line_id}"
        start = await free_slot(calendar, "dr-adams", 10)
        free = (
            await invoicing.get(f"{base}/availability", params={"starts_at": start.isoformat()})
        ).json()
        say(
            f"   Check Availability {start:%a %d %b %H:%M} with Dr Adams: "
            + ("available." if free["available"] else "taken.")
        )
        saved = (
            await invoicing.put(
                f"{base}/appointment",
                # Who books is the caller the token names, not a field of the request.
                json={"starts_at": start.isoformat()},
            )
        ).json()
        first = UUID(saved["appointment_id"])
        link = (
            await events.wait_for(LineLinked, lambda e: e.payload.appointment_id == first)
        ).payload
        say(
            f"   Save: booked {start:%a %H:%M} with Dr Adams -> linked to package invoice"
            f" {short(invoice_id)}, session {link.session_number} of {link.balance.total}."
        )
        shown = (await invoicing.get(f"/invoices/{invoice_id}")).json()
        say(f"   The invoice now shows line 1: {shown['lines'][0]['shows']}.")

        say(
            "\n3. From the calendar: staff book Jane with Dr Adams at Northside"
            " for a 60-min massage."
        )
        at = await free_slot(calendar, "dr-adams", 11)
        second = await book(
            send,
            events,
            BookAppointment(
                patient_id=jane,
                appointment_id=uuid4(),
                practitioner_id="dr-adams",
                location_id="northside",
                starts_at=at,
                fee_ids=["massage-60"],
                source=BookingSource.STAFF,
                booked_by="reception",
            ),
        )
        link = (
            await events.wait_for(LineLinked, lambda e: e.payload.appointment_id == second)
        ).payload
        panel = await wait_until(lambda: noted(calendar, second), "the package note")
        say(
            f"   Booked {at:%a %d %b %H:%M} -> automatically linked"
            f" (session {link.session_number}"
            f" of {link.balance.total}). The appointment panel notes: {panel['package']['text']}."
        )

        say("\n4. Jane books online with Dr Baker (the package is only for Dr Adams).")
        third = await book(
            send,
            events,
            BookAppointment(
                patient_id=jane,
                appointment_id=uuid4(),
                practitioner_id="dr-baker",
                location_id="northside",
                starts_at=await free_slot(calendar, "dr-baker", 9),
                fee_ids=["massage-60"],
                source=BookingSource.ONLINE,
                booked_by="online bookings",
            ),
        )
        why = (
            await events.wait_for(
                AppointmentNotMatched, lambda e: e.payload.appointment_id == third
            )
        ).payload
        say(f"   Booked, but not linked: {why.candidates[0].reason}.")

        say("\n5. Staff unlink the calendar booking from the invoice (X, then Unassigned).")
        await invoicing.delete(f"/invoices/{invoice_id}/lines/{link.line.line_id}/appointment")
        await events.wait_for(LineUnlinked, lambda e: e.payload.appointment_id == second)
        panel = await wait_until(lambda: unnoted(calendar, second), "the note to go")
        say(
            f"   The line is Unassigned again; the appointment stays in the calendar"
            f" ({panel['status']}) without the package note."
        )

        say("\n6. Jane cancels the appointment booked from the invoice, in the calendar.")
        await send.send(
            CancelAppointment(
                patient_id=jane,
                appointment_id=first,
                cancelled_by="jane",
                cancelled_at=datetime.now(UTC),
            )
        )
        released = (
            await events.wait_for(LineUnlinked, lambda e: e.payload.appointment_id == first)
        ).payload
        b = released.balance
        say(
            f"   The session is released: {b.remaining} of {b.total} left,"
            f" expires {b.expires_on:%d %B %Y}."
        )
        say("\nDone. Every step went through Kafka and the services' HTTP APIs.")


async def book(send: PacklineProducer, events: PacklineConsumer, command: BookAppointment) -> UUID:
    await send.send(command)
    await events.wait_for(
        AppointmentBooked, lambda e: e.payload.appointment.appointment_id == command.appointment_id
    )
    return command.appointment_id


async def wait_until(check: Any, what: str, within: float = 30) -> Any:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            sys.exit(
                f"demo: gave up waiting for {what}; is Packline running (deploy/packline run)?"
            )
        await asyncio.sleep(0.2)


async def catalogue_ready(invoicing: httpx.AsyncClient, calendar: httpx.AsyncClient) -> bool:
    known = await calendar.get(
        "/availability",
        params={
            "practitioner_id": "dr-baker",
            "starts_at": when(1, 8).isoformat(),
            "duration_minutes": 5,
        },
    )
    fees = [fee["fee_id"] for fee in (await calendar.get("/fees")).json()]
    return known.status_code == 200 and "massage-60" in fees and await package_known(invoicing)


async def package_known(invoicing: httpx.AsyncClient) -> bool:
    return (await invoicing.get("/packages/massage-5x60-dr-adams")).status_code == 200


async def free_slot(
    calendar: httpx.AsyncClient, practitioner: str, hour: int, after: int = 2
) -> datetime:
    """The first day from ``after`` days on when the practitioner is free at ``hour``."""
    for day in range(after, after + 365):
        answer = await calendar.get(
            "/availability",
            params={
                "practitioner_id": practitioner,
                "starts_at": when(day, hour).isoformat(),
                "duration_minutes": 60,
            },
        )
        if answer.json()["available"]:
            return when(day, hour)
    sys.exit(f"demo: {practitioner} has no free {hour}:00 in a year")


async def matcher_knows(matcher: httpx.AsyncClient, patient: str, invoice_id: UUID) -> bool:
    lines = (await matcher.get(f"/patients/{patient}/links")).json()["lines"]
    return any(line["invoice_id"] == str(invoice_id) for line in lines)


async def noted(calendar: httpx.AsyncClient, appointment_id: UUID) -> dict[str, Any] | None:
    panel = (await calendar.get(f"/appointments/{appointment_id}")).json()
    return panel if panel.get("package") else None


async def unnoted(calendar: httpx.AsyncClient, appointment_id: UUID) -> dict[str, Any] | None:
    panel = (await calendar.get(f"/appointments/{appointment_id}")).json()
    return panel if panel.get("package") is None else None


async def main(runs: int) -> int:
    for number in range(1, runs + 1):
        if runs > 1:
            say(f"\n=== run {number} of {runs} ===")
        started = time.monotonic()
        try:
            await story()
        except (TimeoutError, httpx.HTTPError, OSError) as error:
            say(
                f"\ndemo: run {number} failed: {type(error).__name__}: {error}"
                "\nIs Packline running and ready? 'deploy/packline status' says; the services'"
                " logs are in $PACKLINE_LOG_DIR."
            )
            return 1
        if runs > 1:
            say(f"=== run {number} of {runs} passed in {time.monotonic() - started:.1f} s ===")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        prog="deploy/packline demo",
        description="Walk through the help article against the running system (deploy/packline "
        "run first), saying what happened at each step. Settings: PACKLINE_KAFKA_BOOTSTRAP, "
        "PACKLINE_*_HTTP_PORT, PACKLINE_STAFF_TOKEN, PACKLINE_TOPIC_PREFIX.",
    )
    parser.add_argument("--runs", type=int, default=1, help="tell the story this many times")
    sys.exit(asyncio.run(main(parser.parse_args().runs)))
