"""What a line's history calls each change (packline_invoicing.history.happened), told from the
line before and the transition's outcome: a first link, the calendar booking the line's own
request, a move of the held appointment (with where it was), a link again at the same time, a
request released, an appointment unlinked, and the final changes."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from uuid import UUID

from packline_contracts.types import Appointment, AppointmentStatus, BookingSource
from packline_invoicing import history, lines

APPOINTMENT = UUID(int=1)
OTHER = UUID(int=2)
TEN = datetime(2027, 3, 2, 10, tzinfo=UTC)
LINE = lines.Line(
    line_id=UUID(int=100),
    invoice_id=UUID(int=200),
    line_number=1,
    patient_id="ana",
    fee_id="massage-60",
    practitioner_ids=None,
    location_ids=None,
    valid_from=date(2027, 3, 1),
    valid_until=date(2027, 3, 31),
)


def appointment(appointment_id: UUID, starts_at: datetime, version: int) -> Appointment:
    return Appointment(
        appointment_id=appointment_id,
        patient_id="ana",
        practitioner_id="dr-a",
        location_id="northside",
        starts_at=starts_at,
        duration_minutes=60,
        fee_ids=["massage-60"],
        status=AppointmentStatus.BOOKED,
        source=BookingSource.STAFF,
        version=version,
        time_zone="UTC",
    )


def linked(line: lines.Line, at: datetime, version: int = 1) -> lines.Changed[lines.Linked]:
    return lines.applied(lines.link(line, appointment(APPOINTMENT, at, version), True))


def test_a_first_link_a_move_and_a_link_again_at_the_same_time() -> None:
    first = linked(LINE, TEN)
    assert history.happened(LINE, first) == ("linked", None)
    moved = linked(first.line, TEN + timedelta(hours=4), version=2)
    assert history.happened(first.line, moved) == ("moved", TEN)
    again = linked(moved.line, TEN + timedelta(hours=4), version=3)
    assert history.happened(moved.line, again) == ("relinked", None)


def test_the_calendar_booking_the_lines_request_and_a_request_released() -> None:
    asked = lines.applied(lines.request_booking(LINE, APPOINTMENT, TEN, "UTC", TEN))
    assert history.happened(LINE, asked) == ("booking_requested", None)
    booked = linked(asked.line, TEN)
    assert history.happened(asked.line, booked) == ("booked", None)
    released = lines.applied(lines.release(asked.line, APPOINTMENT, note="slot taken"))
    assert history.happened(asked.line, released) == ("booking_released", None)


def test_an_unlink_and_the_final_changes() -> None:
    held = linked(LINE, TEN).line
    unlinked = lines.applied(lines.release(held, APPOINTMENT))
    assert history.happened(held, unlinked) == ("unlinked", None)
    used = lines.applied(lines.use(held, APPOINTMENT))
    assert history.happened(held, used) == ("used", None)
    forfeited = lines.applied(lines.forfeit(held, APPOINTMENT, "a late cancellation"))
    assert history.happened(held, forfeited) == ("forfeited", None)
    expired = lines.applied(lines.expire(LINE, LINE.valid_until))
    assert history.happened(LINE, expired) == ("expired", None)
    extended = lines.applied(lines.extend(LINE, date(2027, 4, 30)))
    assert history.happened(LINE, extended) == ("extended", None)
    transferred = lines.applied(lines.transfer(LINE, OTHER))
    assert history.happened(LINE, transferred) == ("transferred", None)
