"""A package's end of life (R18) as pure rules: when a reminder is due and that each threshold is
announced once, when unbooked sessions are written off and when that counts (the selling
location's midnight, R15, I10), what an extension refuses (naming the field), the line model's
expire and extend, the balance of written-off sessions (R14), and the matcher's word for them."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st
from packline_contracts.catalogue import Package
from packline_contracts.invoices import InvoiceStatus, LineStatus
from packline_contracts.matching import NoMatchCode
from packline_contracts.types import Appointment, AppointmentStatus, BookingSource
from packline_invoicing import lines, rules
from packline_matcher import decision
from pydantic import ValidationError

LAST = date(2027, 3, 31)
NOW = datetime(2027, 3, 1, 10, 0, tzinfo=UTC)


# --- reminders --------------------------------------------------------------------------------


def test_a_reminder_is_due_once_a_threshold_is_crossed() -> None:
    assert rules.warning_due([30, 7], [], 31) is None
    assert rules.warning_due([30, 7], [], 30) == (30, [30])
    assert rules.warning_due([30, 7], [30], 20) is None
    assert rules.warning_due([30, 7], [30], 7) == (7, [7])
    assert rules.warning_due([30, 7], [30, 7], 0) is None


def test_thresholds_crossed_at_once_are_one_reminder_the_nearest() -> None:
    # A package of 5 days with reminders at 30 and 7: one reminder, "7 days", settling both.
    assert rules.warning_due([30, 7], [], 5) == (7, [7, 30])


def test_no_reminder_once_the_last_day_has_passed() -> None:
    assert rules.warning_due([30, 7], [], -1) is None
    assert rules.warning_due([1], [], 0) == (1, [1])  # the last day itself still reminds


@given(
    st.lists(st.integers(1, 60), unique=True, max_size=5),
    st.lists(st.integers(-3, 70), min_size=1, max_size=30).map(lambda d: sorted(d, reverse=True)),
)
def test_over_the_days_each_threshold_is_announced_at_most_once(
    thresholds: list[int], days: list[int]
) -> None:
    """Sweeps on any days (repeated, skipped) counting down to expiry: every threshold crossed
    before expiry is settled, each at most once, and the one announced is the nearest crossed."""
    warned: list[int] = []
    announced: list[int] = []
    for days_left in days:
        due = rules.warning_due(thresholds, warned, days_left)
        if due is None:
            continue
        threshold, settled = due
        assert threshold == min(settled)
        assert days_left <= threshold
        assert not set(settled) & set(warned)
        announced.append(threshold)
        warned += settled
    assert len(announced) == len(set(announced))
    assert len(warned) == len(set(warned))
    reached = [d for d in days if d >= 0]
    if reached:
        assert set(warned) == {t for t in thresholds if min(reached) <= t}


def test_the_next_reminder_is_the_furthest_threshold_still_ahead() -> None:
    assert rules.first_reminder_on(LAST, [30, 7]) == LAST - timedelta(days=30)
    assert rules.first_reminder_on(LAST, []) is None
    assert rules.next_reminder_on(LAST, [30, 7], 29) == LAST - timedelta(days=7)
    assert rules.next_reminder_on(LAST, [30, 7], 7) is None  # 7 is announced now
    assert rules.next_reminder_on(LAST, [30, 7], -1) is None


@given(
    st.lists(st.integers(1, 60), unique=True, min_size=1, max_size=5),
    st.integers(-3, 70),
)
def test_the_next_reminder_comes_after_today_and_before_the_last_day(
    thresholds: list[int], days_left: int
) -> None:
    today = LAST - timedelta(days=days_left)
    following = rules.next_reminder_on(LAST, thresholds, days_left)
    if following is None:
        assert all(t >= days_left for t in thresholds) or days_left < 0
    else:
        assert today < following <= LAST
        assert (LAST - following).days in thresholds


# --- write-off --------------------------------------------------------------------------------


def test_sessions_are_written_off_when_the_grace_has_ended() -> None:
    assert not rules.write_off_due(LAST, 0, LAST)
    assert rules.write_off_due(LAST, 0, LAST + timedelta(days=1))
    assert not rules.write_off_due(LAST, 7, LAST + timedelta(days=7))
    assert rules.write_off_due(LAST, 7, LAST + timedelta(days=8))
    assert rules.written_off_after(LAST, 7) == date(2027, 4, 7)


def test_a_write_off_counts_at_the_selling_locations_midnight_ending_the_grace() -> None:
    # Sydney is 11 hours ahead in March (AEDT): its midnight of 1 April is 13:00 UTC on 31 March.
    assert rules.write_off_at(LAST, 0, "Australia/Sydney") == datetime(
        2027, 3, 31, 13, 0, tzinfo=UTC
    )
    assert rules.write_off_at(LAST, 2, "UTC") == datetime(2027, 4, 3, 0, 0, tzinfo=UTC)


# --- extension --------------------------------------------------------------------------------


def test_an_extension_is_refused_naming_the_field() -> None:
    later = LAST + timedelta(days=30)
    assert rules.extension_refusal(InvoiceStatus.PAID, LAST, later, 2) is None
    for status in (InvoiceStatus.VOID, InvoiceStatus.REFUNDED):
        refused = rules.extension_refusal(status, LAST, later, 2)
        assert refused is not None and refused[0] == "invoice_id"
    for earlier in (LAST, LAST - timedelta(days=1)):
        refused = rules.extension_refusal(InvoiceStatus.ISSUED, LAST, earlier, 2)
        assert refused is not None and refused[0] == "valid_until"
        assert "31 March 2027" in refused[1]
    refused = rules.extension_refusal(InvoiceStatus.PAID, LAST, later, 0)
    assert refused is not None and refused[0] == "invoice_id"


# --- the line model ---------------------------------------------------------------------------


def a_line(**state: object) -> lines.Line:
    fields: dict[str, object] = {
        "line_id": UUID(int=1),
        "invoice_id": UUID(int=2),
        "line_number": 1,
        "patient_id": "ana",
        "fee_id": "massage-60",
        "practitioner_ids": None,
        "location_ids": None,
        "valid_from": date(2027, 1, 1),
        "valid_until": LAST,
    }
    return lines.Line(**{**fields, **state})  # type: ignore[arg-type]


def appointment_on(day: date) -> Appointment:
    return Appointment(
        appointment_id=UUID(int=9),
        version=1,
        patient_id="ana",
        practitioner_id="dr-a",
        location_id="northside",
        starts_at=datetime(day.year, day.month, day.day, 10, tzinfo=UTC),
        duration_minutes=60,
        fee_ids=["massage-60"],
        status=AppointmentStatus.BOOKED,
        source=BookingSource.STAFF,
    )


def test_only_an_open_line_expires_and_then_never_changes() -> None:
    expired = lines.applied(lines.expire(a_line(), LAST)).line
    assert (expired.status, expired.version, expired.appointment_id) == (
        LineStatus.EXPIRED,
        2,
        None,
    )
    assert isinstance(lines.expire(expired, LAST), lines.Refused)
    assert isinstance(lines.extend(expired, LAST + timedelta(days=9)), lines.Refused)
    refused = lines.link(expired, appointment_on(LAST), True)
    assert isinstance(refused, lines.Refused) and refused.code.value == "line_taken"
    held = lines.applied(lines.link(a_line(), appointment_on(LAST), True)).line
    outcome = lines.expire(held, LAST)
    assert isinstance(outcome, lines.Refused) and outcome.code == lines.Refusal.WRONG_STATUS


def test_an_extension_moves_the_last_day_later_only() -> None:
    late = appointment_on(LAST + timedelta(days=5))
    assert isinstance(lines.link(a_line(), late, True), lines.Refused)  # R6: after validity
    extended = lines.applied(lines.extend(a_line(), LAST + timedelta(days=10)))
    assert extended.line.valid_until == LAST + timedelta(days=10)
    assert extended.line.version == 2
    assert extended.event == lines.Extended(LAST, LAST + timedelta(days=10))
    assert isinstance(lines.link(extended.line, late, True), lines.Changed)
    for day in (LAST, LAST - timedelta(days=1)):
        refused = lines.extend(a_line(), day)
        assert isinstance(refused, lines.Refused) and refused.code == lines.Refusal.NOT_DUE
    # A linked line keeps its appointment and gets the new day too.
    held = lines.applied(lines.link(a_line(), appointment_on(LAST), True)).line
    moved = lines.applied(lines.extend(held, LAST + timedelta(days=1))).line
    assert (moved.status, moved.appointment_id) == (LineStatus.LINKED, held.appointment_id)


# --- balance (R14) ----------------------------------------------------------------------------


def test_written_off_sessions_are_spent_not_remaining() -> None:
    counted = rules.balance(
        [(LineStatus.EXPIRED, None)] * 2 + [(LineStatus.USED, NOW), (LineStatus.OPEN, None)],
        NOW,
        LAST,
    )
    assert (counted.total, counted.used, counted.remaining, counted.expired) == (4, 3, 1, 2)


# --- the package's terms ----------------------------------------------------------------------


def test_a_packages_reminders_are_each_once_and_kept_nearest_last() -> None:
    terms = {
        "package_id": "five",
        "name": "5 x massage",
        "items": [{"fee_id": "massage-60", "count": 5}],
        "validity": {"days": 90},
        "price_cents": 40000,
        "currency": "EUR",
    }
    package = Package.model_validate({**terms, "expiry_warning_days": [7, 30]})
    assert (package.expiry_warning_days, package.grace_days) == ([30, 7], 0)
    with pytest.raises(ValidationError, match="each threshold once"):
        Package.model_validate({**terms, "expiry_warning_days": [7, 7]})
    with pytest.raises(ValidationError, match="grace_days"):
        Package.model_validate({**terms, "grace_days": -1})


# --- the matcher (R7) -------------------------------------------------------------------------


def test_the_matcher_says_a_written_off_session_expired() -> None:
    line = decision.Line(
        line_id=UUID(int=1),
        invoice_id=UUID(int=2),
        package_id="five",
        package_name="5 x massage",
        line_number=1,
        fee_id="massage-60",
        practitioner_ids=None,
        location_ids=None,
        valid_from=date(2027, 1, 1),
        valid_until=LAST,
        invoice_issued_at=NOW,
        redeemable=True,
        unpaid=False,
        status="expired",
    )
    appointment = decision.Appointment(
        appointment_id=UUID(int=9),
        version=1,
        patient_id="ana",
        practitioner_id="dr-a",
        location_id="northside",
        starts_at=datetime(2027, 3, 20, 10, tzinfo=UTC),  # within validity, yet written off
        fee_ids=("massage-60",),
        status=AppointmentStatus.BOOKED,
        source=BookingSource.STAFF,
    )
    said = decision.decide(appointment, [line])
    assert said.link is None and said.explain is not None
    (candidate,) = said.explain.candidates
    assert candidate.code == NoMatchCode.EXPIRED
    assert "expired on 31 March 2027" in candidate.reason
