"""Lines and appointments as the matcher's decision sees them, for the tests of decide()."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from typing import Any
from uuid import uuid4

from packline_contracts.types import AppointmentStatus, BookingSource
from packline_matcher.decision import Appointment, Line

START = datetime(2026, 3, 10, 10, tzinfo=UTC)
INVOICE = uuid4()


def line(number: int = 1, **changes: object) -> Line:
    base = Line(
        line_id=uuid4(),
        invoice_id=INVOICE,
        package_id="p5",
        package_name="5 x massage",
        line_number=number,
        fee_id="massage",
        practitioner_ids=None,
        location_ids=None,
        valid_from=date(2026, 3, 1),
        valid_until=date(2026, 5, 30),
        invoice_issued_at=datetime(2026, 3, 1, tzinfo=UTC),
        redeemable=True,
        unpaid=False,
        status="open",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def appointment(**changes: object) -> Appointment:
    base = Appointment(
        appointment_id=uuid4(),
        version=1,
        patient_id="p-1",
        practitioner_id="dr-a",
        location_id="north",
        starts_at=START,
        fee_ids=("massage",),
        status=AppointmentStatus.BOOKED,
        source=BookingSource.STAFF,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def linked_to(appt: Appointment, **changes: Any) -> Line:
    return line(status="linked", appointment_id=appt.appointment_id, **changes)
