"""R14's balance, one test per definition: used, booked and remaining at a given ``now`` (I10)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st
from packline_contracts.invoices import LineStatus
from packline_invoicing.rules import balance

NOW = datetime(2027, 3, 1, 10, 0, tzinfo=UTC)
PAST, UPCOMING = NOW - timedelta(hours=1), NOW + timedelta(days=2)


def test_used_is_attended_forfeited_or_linked_to_an_appointment_already_past() -> None:
    lines = [
        (LineStatus.USED, UPCOMING),  # arrived early: attended all the same
        (LineStatus.FORFEITED, UPCOMING),
        (LineStatus.LINKED, PAST),
        (LineStatus.LINKED, NOW),  # started just now
        (LineStatus.OPEN, None),
    ]
    counted = balance(lines, NOW, None)
    assert (counted.used, counted.booked, counted.remaining, counted.total) == (4, 0, 1, 5)


def test_booked_is_linked_to_an_upcoming_appointment_or_a_booking_requested() -> None:
    lines = [
        (LineStatus.LINKED, UPCOMING),
        (LineStatus.BOOKING_REQUESTED, UPCOMING),
        (LineStatus.BOOKING_REQUESTED, PAST),  # the calendar has not answered: still held
        (LineStatus.OPEN, None),
    ]
    counted = balance(lines, NOW, None)
    assert (counted.booked, counted.used, counted.remaining) == (3, 0, 1)
    # The same lines a week later: the linked appointment has passed, the requests still wait.
    later = balance(lines, NOW + timedelta(days=7), None)
    assert (later.booked, later.used, later.remaining) == (2, 1, 1)


def test_remaining_is_the_open_lines_and_everything_adds_up_to_the_total() -> None:
    lines: list[tuple[LineStatus, datetime | None]] = [(LineStatus.OPEN, None)] * 3
    lines += [(LineStatus.USED, PAST), (LineStatus.LINKED, UPCOMING)]
    counted = balance(lines, NOW, date(2027, 5, 30))
    assert counted.remaining == 3
    assert counted.booked + counted.used + counted.remaining == counted.total == 5
    assert counted.expires_on == date(2027, 5, 30)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(list(LineStatus)),
            st.none() | st.integers(min_value=-3, max_value=3).map(lambda d: NOW + timedelta(d)),
        ),
        max_size=30,
    )
)
def test_the_balance_from_an_invoices_tally_is_each_line_counted_one_by_one(
    lines: list[tuple[LineStatus, datetime | None]],
) -> None:
    """Line events count the balance from one aggregate of the invoice's lines
    (rules.tallied_balance); it equals classifying every line on its own, as R14 says. A
    line transferred to another patient's invoice is no longer this invoice's: not counted."""
    mine = [line for line in lines if line[0] != LineStatus.TRANSFERRED]
    used = sum(
        status in (LineStatus.USED, LineStatus.FORFEITED, LineStatus.EXPIRED)
        or (status == LineStatus.LINKED and starts is not None and starts <= NOW)
        for status, starts in mine
    )
    remaining = sum(status == LineStatus.OPEN for status, _ in mine)
    counted = balance(lines, NOW, None)
    assert (counted.total, counted.used, counted.remaining) == (len(mine), used, remaining)
    assert counted.booked == len(mine) - used - remaining
