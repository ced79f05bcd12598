"""A package's household (R18, issue #22 point 4), the pure parts: who a new list adds and
removes, which invoices refuse a change and why, and the link check (R6) letting a household
member's appointment redeem a line while anyone else's is still refused as another patient's."""

from __future__ import annotations

from datetime import UTC, date, datetime
from uuid import UUID

from hypothesis import given
from hypothesis import strategies as st
from packline_contracts.invoices import InvoiceStatus, LineStatus, LinkRefusalCode
from packline_contracts.types import Appointment, AppointmentStatus, BookingSource
from packline_invoicing import lines
from packline_invoicing.household import household_change, household_refusal, sharing_refusal

OWNER, DAUGHTER, SON, STRANGER = "ana", "ana-daughter", "ana-son", "zoe"
LINE = lines.Line(
    line_id=UUID(int=1),
    invoice_id=UUID(int=2),
    line_number=1,
    patient_id=OWNER,
    fee_id="massage-60",
    practitioner_ids=("dr-a",),
    location_ids=("northside",),
    valid_from=date(2027, 3, 1),
    valid_until=date(2027, 6, 30),
    shared_with=frozenset({DAUGHTER}),
)


def appointment_of(patient_id: str, n: int = 10, **changes: object) -> Appointment:
    fields: dict[str, object] = {
        "appointment_id": UUID(int=n),
        "version": 1,
        "patient_id": patient_id,
        "practitioner_id": "dr-a",
        "location_id": "northside",
        "starts_at": datetime(2027, 4, 1, 9, tzinfo=UTC),
        "duration_minutes": 60,
        "fee_ids": ["massage-60"],
        "status": AppointmentStatus.BOOKED,
        "source": BookingSource.STAFF,
        **changes,
    }
    return Appointment.model_validate(fields)


def test_the_invoices_patient_and_a_household_member_may_redeem_a_line() -> None:
    for who in (OWNER, DAUGHTER):
        assert lines.link_refusal(LINE, appointment_of(who), True) is None
        linked = lines.applied(lines.link(LINE, appointment_of(who), True))
        assert (linked.line.status, linked.line.appointment_id) == (LineStatus.LINKED, UUID(int=10))


def test_anyone_else_is_refused_as_another_patient() -> None:
    for who in (STRANGER, SON):
        refused = lines.link_refusal(LINE, appointment_of(who), True)
        assert refused is not None and refused.code == LinkRefusalCode.WRONG_PATIENT
    # Read without its invoice's household (shared with nobody): only the patient.
    alone = lines.Line(**{**LINE.__dict__, "shared_with": frozenset()})
    refused = lines.link_refusal(alone, appointment_of(DAUGHTER), True)
    assert refused is not None and refused.code == LinkRefusalCode.WRONG_PATIENT


def test_a_household_member_is_held_to_the_same_rules() -> None:
    """R6 for the member's appointment as for the patient's: practitioner, location, validity,
    redeemable; and a line taken is taken."""
    cases = {
        LinkRefusalCode.PRACTITIONER_NOT_ALLOWED: appointment_of(DAUGHTER, practitioner_id="dr-b"),
        LinkRefusalCode.LOCATION_NOT_ALLOWED: appointment_of(DAUGHTER, location_id="southside"),
        LinkRefusalCode.OUTSIDE_VALIDITY: appointment_of(
            DAUGHTER, starts_at=datetime(2027, 7, 2, 9, tzinfo=UTC)
        ),
        LinkRefusalCode.FEE_NOT_COVERED: appointment_of(DAUGHTER, fee_ids=["physio-30"]),
    }
    for code, appointment in cases.items():
        refused = lines.link_refusal(LINE, appointment, True)
        assert refused is not None and refused.code == code
    refused = lines.link_refusal(LINE, appointment_of(DAUGHTER), False)
    assert refused is not None and refused.code == LinkRefusalCode.NOT_REDEEMABLE
    taken = lines.applied(lines.link(LINE, appointment_of(OWNER, 11), True)).line
    refused = lines.link_refusal(taken, appointment_of(DAUGHTER), True)
    assert refused is not None and refused.code == LinkRefusalCode.LINE_TAKEN


def test_removing_a_member_ends_new_links_only() -> None:
    """The member's appointment already linked keeps its session, and keeps it when it moves
    (R10); a new appointment of theirs is refused."""
    linked = lines.applied(lines.link(LINE, appointment_of(DAUGHTER), True)).line
    removed = lines.Line(**{**linked.__dict__, "shared_with": frozenset()})
    moved = appointment_of(DAUGHTER, version=2, starts_at=datetime(2027, 4, 8, 9, tzinfo=UTC))
    again = lines.applied(lines.link(removed, moved, True))
    assert (again.line.status, again.line.appointment_starts_at) == (
        LineStatus.LINKED,
        moved.starts_at,
    )
    released = lines.applied(lines.release(again.line, UUID(int=10))).line
    refused = lines.link_refusal(released, appointment_of(DAUGHTER, 12), True)
    assert refused is not None and refused.code == LinkRefusalCode.WRONG_PATIENT


def test_a_new_list_says_who_it_adds_and_removes() -> None:
    assert household_change([], [DAUGHTER, SON]) == ([DAUGHTER, SON], [])
    assert household_change([DAUGHTER, SON], [SON, STRANGER]) == ([STRANGER], [DAUGHTER])
    assert household_change([DAUGHTER], []) == ([], [DAUGHTER])
    assert household_change([DAUGHTER, SON], [SON, DAUGHTER]) == ([], [])


members = st.lists(st.sampled_from(["a", "b", "c", "d", "e", "f"]), unique=True, max_size=6)


@given(members, members)
def test_added_and_removed_turn_the_old_list_into_the_new(old: list[str], new: list[str]) -> None:
    added, removed = household_change(old, new)
    assert set(old) - set(removed) | set(added) == set(new)
    assert not set(added) & set(old) and not set(removed) & set(new)
    assert added == [m for m in new if m in added] and removed == [m for m in old if m in removed]


def test_a_change_is_refused_naming_the_field() -> None:
    for status in (InvoiceStatus.VOID, InvoiceStatus.REFUNDED):
        refused = sharing_refusal(status)
        assert refused is not None and refused[0] == "invoice_id"
        assert status.value in refused[1]
    for status in (InvoiceStatus.ISSUED, InvoiceStatus.PAID):
        assert sharing_refusal(status) is None
    assert household_refusal(OWNER, [DAUGHTER, OWNER]) == (
        "shared_with",
        "names the invoice's own patient",
    )
    assert household_refusal(OWNER, [DAUGHTER, DAUGHTER]) == (
        "shared_with",
        "names a patient twice",
    )
    assert household_refusal(OWNER, [DAUGHTER, SON]) is None
    assert household_refusal(OWNER, []) is None
