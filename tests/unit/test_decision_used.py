"""The matcher and a used line (R14): the session was attended, so whatever happens to its
appointment afterwards the line stays where it is and no other line is taken for it."""

from __future__ import annotations

import pytest
from packline_contracts.invoices import UnlinkReason
from packline_contracts.matching import NoMatchCode
from packline_contracts.types import AppointmentStatus, LateCancelPolicy
from packline_matcher.decision import Decision, decide, problem

from tests.decisions import appointment, line


@pytest.mark.parametrize(
    "status",
    [
        AppointmentStatus.CANCELLED,
        AppointmentStatus.DELETED,
        AppointmentStatus.NO_SHOW,  # arrived, then marked no-show
    ],
)
def test_an_ended_appointment_does_not_release_its_used_line(status: AppointmentStatus) -> None:
    ended = appointment(status=status)
    policy = LateCancelPolicy(forfeit_within_hours=24, no_show_forfeits=True)
    used = line(status="used", appointment_id=ended.appointment_id, policy=policy)
    assert decide(ended, [used, line(2)]) == Decision()


def test_a_changed_attended_appointment_keeps_its_used_line_and_takes_no_other() -> None:
    arrived = appointment(status=AppointmentStatus.ARRIVED, fee_ids=("other-fee", "massage"))
    used = line(status="used", appointment_id=arrived.appointment_id, fee_id="gone")
    assert decide(arrived, [used, line(2)]) == Decision()


def test_a_used_line_takes_no_other_appointment() -> None:
    other = appointment()
    used = line(status="used", appointment_id=appointment().appointment_id)
    assert problem(other, used, {}) == (NoMatchCode.ALL_SESSIONS_BOOKED, "this session is booked")
    assert problem(other, line(status="used", appointment_id=other.appointment_id), {})


def test_a_no_show_of_a_linked_appointment_still_follows_the_policy() -> None:
    missed = appointment(status=AppointmentStatus.NO_SHOW)
    linked = line(status="linked", appointment_id=missed.appointment_id)
    unlink = decide(missed, [linked]).unlink
    assert unlink is not None and unlink.reason == UnlinkReason.NO_SHOW and not unlink.forfeit
