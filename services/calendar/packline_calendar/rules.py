"""The calendar's rules, without I/O: what a booking or a change must satisfy before it is tried
against the database (which alone decides availability)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from packline_contracts import clinic_time, wording
from packline_contracts.appointments import RefusalCode
from packline_contracts.types import AppointmentStatus, BookingSource, InvoiceLineRef

# An appointment in one of these states holds its practitioner's time.
HOLDS_TIME = (
    AppointmentStatus.BOOKED,
    AppointmentStatus.ARRIVED,
    AppointmentStatus.COMPLETED,
    AppointmentStatus.NO_SHOW,
)
# Only these can be moved, changed or cancelled.
CHANGEABLE = (AppointmentStatus.BOOKED, AppointmentStatus.ARRIVED)


@dataclass(frozen=True)
class Refusal:
    code: RefusalCode
    reason: str


def check_booking(
    *,
    time_zone: str,
    starts_at: datetime,
    requested_at: datetime,
    fee_ids: list[str],
    known_fees: dict[str, int],
    source: BookingSource,
    invoice_line: InvoiceLineRef | None,
) -> Refusal | None:
    """Why a booking cannot be made, or None. ``requested_at`` is when the command was sent,
    so replaying it later decides the same way."""
    if starts_at <= requested_at:
        when = wording.moment(clinic_time.local(starts_at, time_zone))
        return Refusal(RefusalCode.IN_THE_PAST, f"{when} is in the past")
    unknown = [fee for fee in fee_ids if fee not in known_fees]
    if unknown:
        return Refusal(RefusalCode.UNKNOWN_FEE, f"unknown fee(s): {', '.join(unknown)}")
    if (source == BookingSource.INVOICE) != (invoice_line is not None):
        return Refusal(
            RefusalCode.INVALID, "an invoice line is given exactly when the source is 'invoice'"
        )
    return None


def default_duration(fee_ids: list[str], known_fees: dict[str, int]) -> int:
    """R3: without a duration, the appointment lasts as long as its first fee."""
    return known_fees[fee_ids[0]]


def check_changeable(status: AppointmentStatus, action: str) -> Refusal | None:
    if status not in CHANGEABLE:
        return Refusal(
            RefusalCode.NOT_CHANGEABLE, f"cannot {action} an appointment that is {status.value}"
        )
    return None


def clash_reason(practitioner: str, starts_at: datetime, ends_at: datetime, time_zone: str) -> str:
    """Worded in the location's local time (R15)."""
    starts, ends = clinic_time.local(starts_at, time_zone), clinic_time.local(ends_at, time_zone)
    return (
        f"{practitioner} is already booked from {wording.hour(starts)} to {wording.hour(ends)}"
        f" {starts.tzname()} on {starts:%a} {wording.day(starts.date())}"
    )


# How far a sender's clock may be from the calendar's before its ``occurred_at`` stops being
# believed as the time of a request (documented in the README's table of refusals).
CLOCK_SKEW = timedelta(minutes=5)


def request_time(occurred_at: datetime, calendar_now: datetime) -> datetime:
    """When a command was made, for "is this in the past": the sender's ``occurred_at`` while
    it is within ``CLOCK_SKEW`` of the calendar's clock (so a prompt replay decides the same
    way), else the calendar's own time: a backdated envelope cannot book into 2020."""
    if abs(occurred_at - calendar_now) <= CLOCK_SKEW:
        return occurred_at
    return calendar_now
