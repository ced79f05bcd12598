"""The matcher's decision, without Kafka or a database: every rule of R6 and tie-break of R11,
plus R7 explanations, R8, R9 and R10."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from uuid import UUID, uuid4

from hypothesis import given
from hypothesis import strategies as st
from packline_contracts.invoices import UnlinkReason
from packline_contracts.matching import NoMatchCode
from packline_contracts.types import AppointmentStatus, BookingSource, LateCancelPolicy
from packline_matcher.decision import decide

from tests.decisions import START, appointment, line, linked_to


def test_a_fitting_open_line_is_linked() -> None:
    only = line()
    decision = decide(appointment(), [only])
    assert decision.link is not None and decision.link.line == only
    assert decision.explain is None and decision.unlink is None


def test_each_restriction_of_r6_blocks_the_link_and_is_explained() -> None:
    cases = {
        NoMatchCode.PRACTITIONER_NOT_ALLOWED: line(practitioner_ids=("dr-b",)),
        NoMatchCode.LOCATION_NOT_ALLOWED: line(location_ids=("south",)),
        NoMatchCode.EXPIRED: line(valid_until=date(2026, 3, 9)),
        NoMatchCode.NOT_YET_VALID: line(valid_from=date(2026, 3, 11)),
        NoMatchCode.UNPAID: line(redeemable=False, unpaid=True),
        NoMatchCode.VOID: line(redeemable=False, unpaid=False),
        NoMatchCode.ALL_SESSIONS_BOOKED: line(status="linked", appointment_id=uuid4()),
    }
    for code, blocked in cases.items():
        decision = decide(appointment(), [blocked], {"dr-b": "Dr Baker", "south": "Southside"})
        assert decision.link is None, code
        assert decision.explain is not None, code
        assert [c.code for c in decision.explain.candidates] == [code]
    practitioner = decide(
        appointment(), [cases[NoMatchCode.PRACTITIONER_NOT_ALLOWED]], {"dr-b": "Dr Baker"}
    )
    assert (
        practitioner.explain
        and practitioner.explain.candidates[0].reason == "covers this fee only with Dr Baker"
    )
    expired = decide(appointment(), [cases[NoMatchCode.EXPIRED]])
    assert expired.explain and expired.explain.candidates[0].reason == "expired on 9 March 2026"


def test_all_sessions_booked_names_the_count() -> None:
    taken = [line(n, status="linked", appointment_id=uuid4()) for n in range(1, 6)]
    decision = decide(appointment(), taken)
    assert decision.explain and decision.explain.candidates[0].reason == "all 5 sessions booked"


def test_a_fee_no_package_covers_is_not_explained() -> None:
    assert decide(appointment(fee_ids=("physio",)), [line()]) == decide(appointment(), [])


def test_r11_earliest_expiry_then_oldest_invoice_then_line_order() -> None:
    late = line(1, valid_until=date(2026, 6, 30))
    early = line(2, valid_until=date(2026, 4, 30))
    assert decide(appointment(), [late, early]).link.line == early  # type: ignore[union-attr]
    newer = line(1, invoice_issued_at=datetime(2026, 3, 5, tzinfo=UTC), invoice_id=uuid4())
    older = line(1, invoice_issued_at=datetime(2026, 3, 2, tzinfo=UTC), invoice_id=uuid4())
    assert decide(appointment(), [newer, older]).link.line == older  # type: ignore[union-attr]
    third, second = line(3), line(2)
    assert decide(appointment(), [third, second]).link.line == second  # type: ignore[union-attr]


@given(st.permutations(list(range(6))))
def test_the_choice_does_not_depend_on_the_order_lines_are_listed(order: list[int]) -> None:
    lines = [
        line(
            n % 3 + 1,
            valid_until=date(2026, 4, 1) + timedelta(days=n // 2),
            invoice_issued_at=datetime(2026, 3, 1 + n % 2, tzinfo=UTC),
            line_id=UUID(int=n),
        )
        for n in range(6)
    ]
    chosen = decide(appointment(), [lines[i] for i in order]).link
    assert chosen is not None and chosen.line.line_id == UUID(int=0)


def test_cancel_releases_and_late_cancel_or_no_show_forfeits_under_policy() -> None:
    policy = LateCancelPolicy(forfeit_within_hours=24, no_show_forfeits=True)
    appt = appointment(status=AppointmentStatus.CANCELLED, cancelled_at=START - timedelta(days=3))
    early = decide(appt, [linked_to(appt, policy=policy)])
    assert (
        early.unlink and early.unlink.reason == UnlinkReason.CANCELLED and not early.unlink.forfeit
    )
    late = replace(appt, cancelled_at=START - timedelta(hours=2))
    assert decide(late, [linked_to(late, policy=policy)]).unlink.forfeit  # type: ignore[union-attr]
    no_show = appointment(status=AppointmentStatus.NO_SHOW)
    assert decide(no_show, [linked_to(no_show, policy=policy)]).unlink.forfeit  # type: ignore[union-attr]
    assert decide(no_show, [linked_to(no_show)]).unlink.reason == UnlinkReason.NO_SHOW  # type: ignore[union-attr]
    assert not decide(no_show, [linked_to(no_show)]).unlink.forfeit  # type: ignore[union-attr]
    deleted = appointment(status=AppointmentStatus.DELETED)
    assert decide(deleted, [linked_to(deleted)]).unlink.reason == UnlinkReason.DELETED  # type: ignore[union-attr]
    assert decide(appointment(status=AppointmentStatus.CANCELLED), [line()]).link is None


def test_r10_a_link_that_still_fits_is_kept_one_that_does_not_moves_or_is_explained() -> None:
    appt = appointment()
    current = linked_to(appt)
    assert decide(appt, [current]).keep == current
    changed = replace(appt, practitioner_id="dr-b", version=2)
    restricted = linked_to(appt, practitioner_ids=("dr-a",))
    other = line(2)
    moved = decide(changed, [restricted, other])
    assert moved.unlink and moved.unlink.reason == UnlinkReason.NO_LONGER_FITS
    assert moved.link and moved.link.line == other
    other_fee = decide(replace(appt, fee_ids=("physio",), version=2), [current])
    assert other_fee.unlink and other_fee.unlink.reason == UnlinkReason.NO_LONGER_FITS
    stuck = decide(changed, [restricted])
    assert (
        stuck.unlink and stuck.link is None and stuck.explain is None
    )  # its own line: not a candidate
    # another package covering the fee with Dr A only explains the miss:
    explained = decide(
        changed, [restricted, line(2, practitioner_ids=("dr-a",), invoice_id=uuid4())]
    )
    assert explained.unlink and explained.explain


def test_r8_an_appointment_staff_unlinked_is_never_linked_again() -> None:
    decision = decide(appointment(hand_unlinked=True), [line()])
    assert decision.link is None and decision.unlink is None and decision.keep is None


def test_a_line_refused_for_this_version_is_skipped_and_the_last_one_explained() -> None:
    first, second = line(1), line(2)
    appt = appointment(refused_line_ids=frozenset({first.line_id}))
    assert decide(appt, [first, second]).link.line == second  # type: ignore[union-attr]
    both = replace(appt, refused_line_ids=frozenset({first.line_id, second.line_id}))
    decision = decide(both, [first, second])
    assert decision.link is None and decision.explain
    assert decision.explain.candidates[0].code == NoMatchCode.LINE_REQUESTED_ELSEWHERE


def test_a_booking_from_an_invoice_line_is_left_to_invoicing() -> None:
    appt = appointment(source=BookingSource.INVOICE)
    assert decide(appt, [line(status="requested", appointment_id=appt.appointment_id)]) == decide(
        appointment(), []
    )


def test_r10_an_invoice_booking_once_linked_keeps_its_line_when_moved_and_lets_go_on_a_change() -> (
    None
):
    """Booked from Edit Invoice Line and linked: moved, it keeps its line (the line shows the new
    date); its fee changed, the line is released (found by the console's test: a linked line's
    new time never reached the line)."""
    from_invoice = appointment(source=BookingSource.INVOICE)
    held = linked_to(from_invoice)
    assert decide(from_invoice, [held]).keep == held
    other_fee = replace(from_invoice, fee_ids=("physio",))
    released = decide(other_fee, [held])
    assert released.unlink is not None and released.unlink.line == held


def test_r3_an_invoice_booking_is_left_to_invoicing_until_its_line_lets_it_go() -> None:
    """The booking can reach the matcher before the line's request does (two topics): it must
    not take the patient's other line meanwhile. Once the request was seen and the line let the
    appointment go, the matcher treats it like any other (found by the fault suite)."""
    from_invoice = appointment(source=BookingSource.INVOICE, awaiting_invoice=True)
    assert decide(from_invoice, [line(1), line(2)]) == decide(from_invoice, [])
    released = replace(from_invoice, awaiting_invoice=False)
    assert decide(released, [line(1)]).link is not None


def test_an_explanation_always_fits_its_event() -> None:
    """Many packages, each allowing many long-named practitioners: the explanation still fits
    AppointmentNotMatched (at most 20 packages named, every text within a Reason)."""
    from packline_contracts.matching import AppointmentNotMatched, CandidatePackage
    from packline_matcher.decision import MAX_CANDIDATES, explain

    names = {f"dr-{n}": "Dr " + "Longname-" * 20 + str(n) for n in range(10)}
    appt = appointment(practitioner_id="dr-elsewhere")
    covering = [
        line(invoice_id=uuid4(), practitioner_ids=tuple(names), package_name="P" * 200)
        for _ in range(MAX_CANDIDATES + 15)
    ]
    explained = explain(appt, covering, names)
    assert len(explained.candidates) == MAX_CANDIDATES
    assert explained.summary.endswith("…") or "and 15 more" in explained.summary
    event = AppointmentNotMatched(
        patient_id=appt.patient_id,
        appointment_id=appt.appointment_id,
        appointment_version=appt.version,
        fee_ids=list(appt.fee_ids),
        candidates=[
            CandidatePackage(
                invoice_id=c.line.invoice_id,
                package_id=c.line.package_id,
                package_name=c.line.package_name,
                code=c.code,
                reason=c.reason,
            )
            for c in explained.candidates
        ],
        summary=explained.summary,
    )
    assert len(event.summary) <= 500


def test_an_appointment_staff_unassigned_is_explained_as_such_and_never_linked() -> None:
    appt = appointment(hand_unlinked=True)
    decision = decide(appt, [line()])
    assert decision.link is None
    assert decision.explain is not None
    assert [c.code for c in decision.explain.candidates] == [NoMatchCode.UNASSIGNED_BY_STAFF]
    other_fee = appointment(hand_unlinked=True, fee_ids=("facial",))
    assert decide(other_fee, [line()]).explain is None  # no package covers it: nothing to say


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["massage", "physio", "yoga"]),
            st.sampled_from(["open", "requested", "linked", "used", "forfeited"]),
            st.sampled_from(["this", "other", None]),
            st.booleans(),
            st.integers(min_value=-60, max_value=60),
        ),
        max_size=12,
    ),
    st.sampled_from(list(AppointmentStatus)),
    st.sampled_from([("massage",), ("physio", "massage"), ("yoga",)]),
    st.booleans(),
)
def test_only_the_relevant_lines_decide(
    shapes: list[tuple[str, str, str | None, bool, int]],
    status: AppointmentStatus,
    fees: tuple[str, ...],
    hand_unlinked: bool,
) -> None:
    """The matcher loads only the lines for the appointment's fees and the one holding it
    (readmodel.load): every other line of the patient changes nothing decide() says."""
    from packline_matcher.decision import relevant

    appt = appointment(status=status, fee_ids=fees, hand_unlinked=hand_unlinked)
    other = uuid4()
    lines = [
        line(
            number,
            fee_id=fee,
            status=state if holder else "open",
            appointment_id={"this": appt.appointment_id, "other": other, None: None}[holder],
            redeemable=redeemable,
            valid_until=date(2026, 3, 10) + timedelta(days=days),
        )
        for number, (fee, state, holder, redeemable, days) in enumerate(shapes, start=1)
    ]
    holding = [x for x in lines if x.appointment_id == appt.appointment_id]
    if len(holding) > 1:  # one line at most holds an appointment (invoicing's unique index)
        return
    narrowed = [x for x in lines if relevant(appt, x)]
    assert decide(appt, narrowed, {}) == decide(appt, lines, {})


def test_sessions_transferred_away_are_neither_chosen_nor_counted_as_booked() -> None:
    """R18: a package of 3 with one session booked and two moved to another patient's invoice:
    the next appointment is told its only session is booked, not that all 3 are."""
    booked = line(1, status="linked", appointment_id=uuid4())
    moved = [line(n, status="transferred") for n in (2, 3)]
    found = decide(appointment(), [booked, *moved])
    assert found.link is None and found.explain is not None
    assert "its only session is booked" in found.explain.summary


def test_a_cancellation_releases_the_line_in_the_name_of_who_cancelled() -> None:
    """The unlink names who cancelled or deleted the appointment in the calendar, so invoicing's
    LineUnlinked and the line's history can say "unlinked by Sam"."""
    cancelled = appointment(status=AppointmentStatus.CANCELLED, ended_by="reception:sam")
    found = decide(cancelled, [linked_to(cancelled)])
    assert found.unlink is not None
    assert (found.unlink.reason, found.unlink.by) == (UnlinkReason.CANCELLED, "reception:sam")
