"""A small clinic for tests: ids, times and message builders in the help article's words."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from packline_contracts.appointments import BookAppointment
from packline_contracts.catalogue import DefineLocation, DefinePractitioner, FeeDefined
from packline_contracts.envelope import Message
from packline_contracts.invoices import (
    InvoiceLine,
    LineLinked,
    LineStatus,
    LineUnlinked,
    UnlinkReason,
)
from packline_contracts.types import Balance, BookingSource, InvoiceLineRef, Restriction

DR_A, DR_B = "dr-adams", "dr-baker"
NORTHSIDE, SOUTHSIDE = "northside", "southside"
MASSAGE_60, MASSAGE_30 = "massage-60", "massage-30"

# Directory commands share one key, so they apply in this order: once Dr Baker is known, so is
# everything before him. Tests wait for that before booking (bookings have other keys).
SETUP: list[Message] = [
    DefineLocation(location_id=NORTHSIDE, name="Northside clinic"),
    DefineLocation(location_id=SOUTHSIDE, name="Southside clinic"),
    DefinePractitioner(practitioner_id=DR_A, name="Dr Adams"),
    DefinePractitioner(practitioner_id=DR_B, name="Dr Baker"),
    FeeDefined(
        fee_id=MASSAGE_60,
        name="60-min massage",
        duration_minutes=60,
        price_cents=9000,
        currency="EUR",
    ),
    FeeDefined(
        fee_id=MASSAGE_30,
        name="30-min massage",
        duration_minutes=30,
        price_cents=5000,
        currency="EUR",
    ),
]


def setup_in(time_zone: str) -> list[Message]:
    """The clinic's locations and practitioners (SETUP's first four), its locations in
    ``time_zone`` (R15): the same clinic elsewhere in the world."""
    return [
        message.model_copy(update={"time_zone": time_zone})
        if isinstance(message, DefineLocation)
        else message
        for message in SETUP[:4]
    ]


def patient() -> str:
    return f"patient-{uuid4().hex[:8]}"


def days_ahead(days: int, hour: int = 10) -> datetime:
    """A time ``days`` from today at ``hour``:00 UTC (always in the future for days >= 1)."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today + timedelta(days=days, hours=hour)


def booking(
    patient_id: str,
    starts_at: datetime,
    *,
    practitioner: str = DR_A,
    location: str = NORTHSIDE,
    fees: list[str] | None = None,
    source: BookingSource = BookingSource.STAFF,
    line: InvoiceLineRef | None = None,
    **extra: Any,
) -> BookAppointment:
    return BookAppointment(
        patient_id=patient_id,
        appointment_id=uuid4(),
        practitioner_id=practitioner,
        location_id=location,
        starts_at=starts_at,
        fee_ids=fees or [MASSAGE_60],
        source=source,
        invoice_line=line,
        booked_by="reception:maria",
        **extra,
    )


def line_event(
    kind: type[LineLinked] | type[LineUnlinked],
    patient_id: str,
    appointment_id: UUID,
    link_version: int,
    *,
    invoice_id: UUID | None = None,
    session: int = 1,
) -> LineLinked | LineUnlinked:
    """A line event as invoicing publishes it (for the calendar's package note)."""
    invoice_id = invoice_id or uuid4()
    linked = kind is LineLinked
    line = InvoiceLine(
        line_id=uuid4(),
        line_number=session,
        fee_id=MASSAGE_60,
        practitioners=Restriction(ids=[DR_A]),
        locations=Restriction(),
        valid_from=date.today(),
        valid_until=date.today() + timedelta(days=90),
        status=LineStatus.LINKED if linked else LineStatus.OPEN,
        appointment_id=appointment_id if linked else None,
        version=link_version + 1,
    )
    common: dict[str, Any] = {
        "patient_id": patient_id,
        "invoice_id": invoice_id,
        "package_id": "massage-5x60",
        "package_name": "5 x 60-min massage",
        "line": line,
        "balance": Balance(
            total=5, booked=1 if linked else 0, used=0, remaining=4 if linked else 5
        ),
        "appointment_id": appointment_id,
        "link_version": link_version,
    }
    if linked:
        return LineLinked(**common, appointment_version=1, session_number=session, rule="test")
    return LineUnlinked(**common, reason=UnlinkReason.UNASSIGNED_BY_STAFF)


def package(
    package_id: str = "massage-5x60",
    *,
    count: int = 5,
    practitioners: list[str] | None = None,
    locations: list[str] | None = None,
    days: int = 90,
    pay_before_use: bool = False,
    price_cents: int = 40000,
    online_purchase: bool = True,
) -> Any:
    from packline_contracts.catalogue import DefinePackage
    from packline_contracts.types import PackageItem, Validity

    return DefinePackage(
        package_id=package_id,
        name=f"{count} x 60-min massage",
        items=[PackageItem(fee_id=MASSAGE_60, count=count)],
        practitioners=Restriction(ids=practitioners),
        locations=Restriction(ids=locations),
        validity=Validity(days=days),
        price_cents=price_cents,
        currency="EUR",
        pay_before_use=pay_before_use,
        online_purchase=online_purchase,
    )


def fee_commands() -> list[Message]:
    """The fees as invoicing's catalogue commands (invoicing republishes them for the calendar)."""
    from packline_contracts.catalogue import DefineFee

    return [
        DefineFee(**message.model_dump()) for message in SETUP if isinstance(message, FeeDefined)
    ]
