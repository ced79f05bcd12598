"""Clinic time (R15) through the real broker and databases: locations in Sydney, Perth and New
York judge validity, expiry and the day of purchase in their own local time, daylight-saving days
(23 and 25 hours) book, link and show at the right local hour, and the calendar's day view and
Check Availability speak the location's time (issue #17)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Any
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

import httpx
import pytest
from packline_contracts.catalogue import DefineLocation
from packline_contracts.invoices import (
    InvoiceCommandRefused,
    IssuePackageInvoice,
    LineLinked,
    PurchaseChannel,
)
from packline_contracts.matching import AppointmentNotMatched, NoMatchCode
from packline_contracts.types import Validity
from packline_core.service import Service

from tests.clinic import booking, package, patient
from tests.conftest import ReadEvents, StartService
from tests.helpers import eventually, shown
from tests.system import System, start_system

pytestmark = pytest.mark.infra

SYDNEY, PERTH, NEW_YORK = "sydney-cbd", "perth-north", "new-york-midtown"
ZONES = {SYDNEY: "Australia/Sydney", PERTH: "Australia/Perth", NEW_YORK: "America/New_York"}

UNTIL_1_MARCH = package("until-1-march", count=2).model_copy(
    update={"validity": Validity(until=date(2027, 3, 1))}
)
UNTIL_3_APRIL = package("until-3-april", count=2).model_copy(
    update={"validity": Validity(until=date(2027, 4, 3))}
)
ONE_DAY = package("one-day", count=2, days=1)
SYDNEY_ONLY = package("sydney-only", count=2, days=1, locations=[SYDNEY])


def local(day: date, hour: int, minute: int, location: str) -> datetime:
    """An instant given as the location's wall clock shows it."""
    return datetime.combine(day, time(hour, minute), ZoneInfo(ZONES[location]))


@pytest.fixture
async def system(start_service: StartService, producer: Any, read_events: ReadEvents) -> System:
    system = await start_system(
        start_service, producer, read_events, [UNTIL_1_MARCH, UNTIL_3_APRIL, ONE_DAY, SYDNEY_ONLY]
    )
    for location_id, zone in ZONES.items():
        await producer.send(
            DefineLocation(location_id=location_id, name=location_id, time_zone=zone)
        )

    async def zones_known() -> bool:
        calendar = await system.calendar.pool.fetch("SELECT location_id, time_zone FROM locations")
        invoicing = await system.invoicing.pool.fetch(
            "SELECT location_id, time_zone FROM locations"
        )
        wanted = set(ZONES.items())
        return wanted <= {tuple(r) for r in calendar} and wanted <= {tuple(r) for r in invoicing}

    await eventually(zones_known, what="calendar and invoicing to know the locations' zones")
    return system


async def linked(system: System, appointment_id: UUID) -> LineLinked:
    event = await system.events.wait_for(
        LineLinked, lambda e: e.payload.appointment_id == appointment_id
    )
    return event.payload


async def not_matched(system: System, appointment_id: UUID) -> AppointmentNotMatched:
    event = await system.events.wait_for(
        AppointmentNotMatched, lambda e: e.payload.appointment_id == appointment_id
    )
    return event.payload


async def get(service: Service, path: str, **params: Any) -> httpx.Response:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=service.http), base_url="http://x"
    ) as client:
        return await client.get(path, params=params)


@pytest.mark.parametrize("location", [SYDNEY, PERTH, NEW_YORK])
async def test_expiry_is_judged_on_the_locations_own_day(system: System, location: str) -> None:
    """Valid until 1 March: 09:00 local on 2 March is refused as expired on the local date (in
    Sydney that is still 1 March in UTC); 23:30 local on 1 March links (in New York that is
    already 2 March in UTC)."""
    who = patient()
    await system.buy(who, "until-1-march")
    late = await system.book(
        booking(who, local(date(2027, 3, 2), 9, 0, location), location=location)
    )
    explained = await not_matched(system, late)
    assert explained.candidates[0].code == NoMatchCode.EXPIRED
    assert explained.candidates[0].reason == "expired on 1 March 2027"
    last_evening = await system.book(
        booking(who, local(date(2027, 3, 1), 23, 30, location), location=location)
    )
    link = await linked(system, last_evening)
    assert link.line.valid_until == date(2027, 3, 1)


async def test_a_package_bought_at_2300_local_is_valid_from_that_local_day(
    system: System,
) -> None:
    """Bought at 23:00 in New York on 10 January (04:00 UTC on the 11th), valid 1 day: it is
    valid on 10 January local time, and ends at New York's midnight."""
    who = patient()
    bought_at = local(date(2027, 1, 10), 23, 0, NEW_YORK)
    invoice = await system.buy(who, "one-day", issued_at=bought_at, location_id=NEW_YORK)
    assert invoice.time_zone == "America/New_York"
    assert {(line.valid_from, line.valid_until) for line in invoice.lines} == {
        (date(2027, 1, 10), date(2027, 1, 10))
    }
    before_midnight = await system.book(
        booking(who, local(date(2027, 1, 10), 23, 30, NEW_YORK), location=NEW_YORK)
    )
    await linked(system, before_midnight)
    after_midnight = await system.book(
        booking(who, local(date(2027, 1, 11), 0, 30, NEW_YORK), location=NEW_YORK)
    )
    explained = await not_matched(system, after_midnight)
    assert explained.candidates[0].reason == "expired on 10 January 2027"


async def test_the_selling_location_defaults_to_the_only_one_the_package_allows(
    system: System,
) -> None:
    """Sold without naming a location, a package only for Sydney counts Sydney days: bought at
    08:00 in Sydney on 11 January (21:00 UTC on the 10th) it is valid on 11 January."""
    invoice = await system.buy(
        patient(), "sydney-only", issued_at=local(date(2027, 1, 11), 8, 0, SYDNEY)
    )
    assert invoice.time_zone == "Australia/Sydney"
    assert invoice.lines[0].valid_from == invoice.lines[0].valid_until == date(2027, 1, 11)


async def test_a_sale_at_an_unknown_location_is_refused_naming_the_field(system: System) -> None:
    who, invoice_id = patient(), uuid4()
    await system.producer.send(
        IssuePackageInvoice(
            patient_id=who,
            invoice_id=invoice_id,
            package_id="one-day",
            channel=PurchaseChannel.STAFF,
            issued_by="reception:maria",
            issued_at=datetime.now(UTC),
            location_id="atlantis",
        )
    )
    refused = await system.events.wait_for(
        InvoiceCommandRefused, lambda e: e.payload.invoice_id == invoice_id
    )
    assert "location_id" in refused.payload.reason and "atlantis" in refused.payload.reason
    assert not await system.invoicing.pool.fetchval(
        "SELECT 1 FROM package_invoices WHERE invoice_id = $1", invoice_id
    )


async def test_a_25_hour_day_books_links_and_shows_the_local_hour(system: System) -> None:
    """4 April 2027 in Sydney: clocks go back at 03:00 (a 25-hour day). 09:00 AEST that day is
    23:00 UTC on 3 April, so a package valid until 3 April must not take it; booked from the
    invoice line by its local date and time, the line shows 09:00."""
    who = patient()
    invoice = await system.buy(who, "until-3-april")
    expired = await system.book(
        booking(who, local(date(2027, 4, 4), 9, 0, SYDNEY), location=SYDNEY)
    )
    assert (await not_matched(system, expired)).candidates[0].reason == "expired on 3 April 2027"

    # Another patient's package valid on 4 April, so the late purchase cannot give it to the
    # appointment above (R12) before staff book from its line.
    other = await system.buy(
        patient(), "one-day", issued_at=local(date(2027, 4, 4), 1, 0, SYDNEY), location_id=SYDNEY
    )
    line = other.lines[0]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=system.invoicing.http), base_url="http://x"
    ) as client:
        answer = await client.put(
            f"/invoices/{other.invoice_id}/lines/{line.line_id}/appointment",
            json={
                "date": "2027-04-04",
                "time": "10:00",
                "location_id": SYDNEY,
                "practitioner_id": "dr-adams",
                "booked_by": "reception:maria",
            },
        )
        assert answer.status_code == 202, shown(answer)
        appointment_id = UUID(answer.json()["appointment_id"])
        link = await linked(system, appointment_id)
        assert link.line.appointment_starts_at == datetime(2027, 4, 4, 0, 0, tzinfo=UTC)
        assert link.line.appointment_time_zone == "Australia/Sydney"
        shown_invoice = (await client.get(f"/invoices/{other.invoice_id}")).json()
    assert shown_invoice["lines"][0]["shows"] == "linked: Sun 4 April 2027, 10:00 AEST"
    assert shown_invoice["lines"][0]["local_starts_at"] == "2027-04-04T10:00:00+10:00"
    assert invoice.invoice_id != other.invoice_id

    panel = (await get(system.calendar, f"/appointments/{appointment_id}")).json()
    assert panel["local_starts_at"] == "2027-04-04T10:00:00+10:00"
    assert panel["time_zone"] == "Australia/Sydney"

    # The day view of that local day holds 25 hours: 00:30 AEDT to 23:30 AEST.
    early = await system.book(booking(who, local(date(2027, 4, 4), 0, 30, SYDNEY), location=SYDNEY))
    late = await system.book(booking(who, local(date(2027, 4, 4), 23, 30, SYDNEY), location=SYDNEY))
    next_day = await system.book(
        booking(who, local(date(2027, 4, 5), 0, 30, SYDNEY), location=SYDNEY)
    )
    day = await get(system.calendar, "/appointments", date="2027-04-04", location_id=SYDNEY)
    assert day.status_code == 200, shown(day)
    ids = [UUID(a["appointment_id"]) for a in day.json()]
    assert early in ids and late in ids and expired in ids and appointment_id in ids
    assert next_day not in ids
    starts = {UUID(a["appointment_id"]): a["local_starts_at"] for a in day.json()}
    assert starts[early] == "2027-04-04T00:30:00+11:00"
    assert starts[late] == "2027-04-04T23:30:00+10:00"


async def test_a_23_hour_day_and_a_time_the_clocks_skip(system: System) -> None:
    """3 October 2027 in Sydney: clocks go forward at 02:00 (a 23-hour day). 09:00 AEDT books
    and shows as 09:00; 02:30 does not exist and Check Availability says so, naming the field."""
    who = patient()
    morning = await system.book(
        booking(who, local(date(2027, 10, 3), 9, 0, SYDNEY), location=SYDNEY)
    )
    panel = (await get(system.calendar, f"/appointments/{morning}")).json()
    assert panel["local_starts_at"] == "2027-10-03T09:00:00+11:00"
    assert panel["starts_at"].startswith("2027-10-02T22:00:00")

    free = await get(
        system.calendar,
        "/availability",
        practitioner_id="dr-adams",
        duration_minutes=60,
        location_id=SYDNEY,
        date="2027-10-03",
        time="09:30",
    )
    assert free.status_code == 200, shown(free)
    assert free.json()["available"] is False
    assert free.json()["clash"]["local_starts_at"] == "2027-10-03T09:00:00+11:00"

    skipped = await get(
        system.calendar,
        "/availability",
        practitioner_id="dr-adams",
        duration_minutes=60,
        location_id=SYDNEY,
        date="2027-10-03",
        time="02:30",
    )
    assert skipped.status_code == 422, shown(skipped)
    assert "time" in skipped.text and "clocks go forward" in skipped.text

    week = await get(
        system.calendar, "/appointments", date="2027-09-28", days=7, location_id=SYDNEY
    )
    assert morning in [UUID(a["appointment_id"]) for a in week.json()]
    no_zone = await get(system.calendar, "/appointments", date="2027-10-03")
    assert no_zone.status_code == 422 and "location_id" in no_zone.text
