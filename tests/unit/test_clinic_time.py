"""Clinic time's pure functions (R15): local days, their bounds on daylight-saving days, wall
clock times that do not exist or exist twice, and a decision judged on the location's day."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from packline_contracts import clinic_time, wording
from packline_contracts.catalogue import DefineLocation
from packline_contracts.matching import NoMatchCode
from packline_contracts.types import AppointmentStatus, LateCancelPolicy
from packline_matcher.decision import decide, forfeit_reason
from pydantic import ValidationError

from tests.decisions import appointment, line

SYDNEY, NEW_YORK = "Australia/Sydney", "America/New_York"


@pytest.mark.parametrize(
    ("zone", "day", "hours"),
    [
        (SYDNEY, date(2027, 4, 4), 25),  # clocks go back at 03:00
        (SYDNEY, date(2027, 10, 3), 23),  # clocks go forward at 02:00
        (NEW_YORK, date(2027, 3, 14), 23),
        (NEW_YORK, date(2027, 11, 7), 25),
        (SYDNEY, date(2027, 6, 1), 24),
        ("UTC", date(2027, 3, 28), 24),
    ],
)
def test_a_local_day_lasts_as_long_as_the_clocks_say(zone: str, day: date, hours: int) -> None:
    start, end = clinic_time.days_span(day, 1, zone)
    assert end - start == timedelta(hours=hours)
    assert clinic_time.local(start, zone).time() == time(0, 0)
    assert clinic_time.local_day(start, zone) == day
    assert clinic_time.local_day(end - timedelta(microseconds=1), zone) == day


def test_a_week_spanning_a_daylight_saving_change_is_seven_local_days() -> None:
    start, end = clinic_time.days_span(date(2027, 4, 1), 7, SYDNEY)
    assert end - start == timedelta(days=7, hours=1)


def test_a_time_the_clocks_skip_is_refused_and_one_they_repeat_is_its_first() -> None:
    with pytest.raises(clinic_time.NoSuchLocalTime, match="clocks go forward"):
        clinic_time.at(date(2027, 10, 3), time(2, 30), SYDNEY)
    repeated = clinic_time.at(date(2027, 4, 4), time(2, 30), SYDNEY)
    assert repeated == datetime(2027, 4, 3, 15, 30, tzinfo=UTC)  # 02:30 AEDT, the first one


@given(
    st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2150, 1, 1)),
    st.sampled_from([SYDNEY, NEW_YORK, "Australia/Perth", "Pacific/Auckland", "Europe/London"]),
)
def test_every_instant_falls_inside_the_bounds_of_its_local_day(naive: datetime, zone: str) -> None:
    instant = naive.replace(tzinfo=UTC)
    day = clinic_time.local_day(instant, zone)
    start, end = clinic_time.days_span(day, 1, zone)
    assert start <= instant < end


def test_a_location_names_a_real_zone() -> None:
    assert DefineLocation(location_id="x", name="X").time_zone == "UTC"
    with pytest.raises(ValidationError, match="IANA time zone"):
        DefineLocation(location_id="x", name="X", time_zone="Mars/Olympus")
    with pytest.raises(ValidationError):
        DefineLocation(location_id="x", name="X", time_zone="../../etc/passwd")


def test_wording_a_local_moment() -> None:
    when = clinic_time.local(datetime(2027, 3, 1, 22, 0, tzinfo=UTC), SYDNEY)
    assert wording.moment(when) == "Tue 2 March 2027, 09:00 AEDT"


def test_the_decision_judges_expiry_on_the_appointments_local_day() -> None:
    """22:00 UTC on 28 February is 09:00 on 1 March in Sydney: past a package valid until 28
    February there, and still within it in New York (17:00 on 28 February)."""
    instant = datetime(2027, 2, 28, 22, 0, tzinfo=UTC)
    until_28_feb = line(valid_from=date(2027, 1, 1), valid_until=date(2027, 2, 28))
    in_sydney = decide(appointment(starts_at=instant, time_zone=SYDNEY), [until_28_feb])
    assert in_sydney.link is None and in_sydney.explain is not None
    assert in_sydney.explain.candidates[0].code == NoMatchCode.EXPIRED
    assert in_sydney.explain.candidates[0].reason == "expired on 28 February 2027"
    in_new_york = decide(appointment(starts_at=instant, time_zone=NEW_YORK), [until_28_feb])
    assert in_new_york.link is not None


def test_a_late_cancellation_is_worded_in_the_locations_time() -> None:
    starts = datetime(2027, 3, 1, 22, 0, tzinfo=UTC)  # 09:00 on 2 March in Sydney
    cancelled = replace(
        appointment(starts_at=starts, time_zone=SYDNEY),
        status=AppointmentStatus.CANCELLED,
        cancelled_at=starts - timedelta(hours=15),
    )
    policy = LateCancelPolicy(forfeit_within_hours=24)
    assert forfeit_reason(cancelled, policy) == (
        "a late cancellation: cancelled Mon 1 March 2027, 18:00 AEDT, 15 hours before the "
        "appointment at 09:00 (this package forfeits inside 24 hours)"
    )
    decision = decide(
        cancelled,
        [
            replace(
                line(valid_from=date(2027, 1, 1), valid_until=date(2027, 3, 31)),
                status="linked",
                appointment_id=cancelled.appointment_id,
                policy=policy,
            )
        ],
    )
    assert decision.unlink is not None and decision.unlink.forfeit
    assert decision.unlink.why == forfeit_reason(cancelled, policy)
