"""The invoice line model (packline_invoicing.lines), driven by random sequences of transitions:
requesting a booking, linking, releasing, using and forfeiting, with appointments that fit the
line or not. Each step is checked against what the brief says, restated here independently of
the model: which status each transition starts from, R6 for a link (the invoice's patient or a
member of its household, R18), R14 and R9 for the final statuses, and the database's own checks
on what a line holds."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st
from packline_contracts.invoices import LineStatus, LinkRefusalCode
from packline_contracts.types import Appointment, AppointmentStatus, BookingSource
from packline_invoicing import lines

PATIENTS = ("ana", "ben", "cy")
FEES = ("massage-60", "physio-30")
PRACTITIONERS = ("dr-a", "dr-b", "dr-c")
LOCATIONS = ("northside", "southside")
# Zones far apart, so a local day differs from the UTC day both ways (R15).
ZONES = ("UTC", "Australia/Sydney", "Pacific/Kiritimati", "Pacific/Pago_Pago")
APPOINTMENTS = tuple(UUID(int=n) for n in range(1, 4))
HELD = "the appointment the line holds"  # resolved when the step runs
FIRST_DAY = date(2027, 3, 1)
HOLDING_STATUSES = {
    LineStatus.BOOKING_REQUESTED,
    LineStatus.LINKED,
    LineStatus.USED,
    LineStatus.FORFEITED,
}
FINAL_STATUSES = {LineStatus.USED, LineStatus.FORFEITED}
# What a transition may change; the rest was fixed at sale.
STATE = {
    "status",
    "appointment_id",
    "appointment_starts_at",
    "appointment_version",
    "appointment_time_zone",
    "booking_requested_at",
    "note",
    "version",
}

restriction = st.none() | st.lists(st.sampled_from(PRACTITIONERS), min_size=1, unique=True).map(
    tuple
)


@st.composite
def fresh_lines(draw: st.DrawFn) -> lines.Line:
    valid_from = FIRST_DAY + timedelta(days=draw(st.integers(0, 3)))
    owner = draw(st.sampled_from(PATIENTS))
    others = [other for other in PATIENTS if other != owner]
    return lines.Line(
        line_id=UUID(int=100),
        invoice_id=UUID(int=200),
        line_number=draw(st.integers(1, 10)),
        patient_id=owner,
        # R18: shared with one of the others, or nobody; the third is always a stranger.
        shared_with=draw(st.frozensets(st.sampled_from(others), max_size=1)),
        fee_id=draw(st.sampled_from(FEES)),
        practitioner_ids=draw(restriction),
        location_ids=draw(
            st.none() | st.lists(st.sampled_from(LOCATIONS), min_size=1, unique=True).map(tuple)
        ),
        valid_from=valid_from,
        valid_until=valid_from + timedelta(days=draw(st.integers(0, 4))),
    )


@st.composite
def starting_lines(draw: st.DrawFn) -> lines.Line:
    """A fresh line, or (half the time) one already linked to an appointment that fits it, so
    the transitions from linked are tried often."""
    line = draw(fresh_lines())
    if draw(st.booleans()):
        fit = lines.link(line, fitted(line, draw(appointments()), (True,) * 5), True)
        assert isinstance(fit, lines.Changed)
        line = fit.line
    return line


instants = st.integers(-2 * 24, 10 * 24).map(
    lambda hours: datetime(2027, 3, 1, tzinfo=UTC) + timedelta(hours=hours, minutes=7)
)
# Half the time the one the line holds: most transitions need it.
appointment_ids = st.just(HELD) | st.sampled_from(APPOINTMENTS)


@st.composite
def appointments(draw: st.DrawFn) -> dict[str, Any]:
    """An appointment's fields, its id possibly the one the line holds when the step runs."""
    return {
        "appointment_id": draw(appointment_ids),
        "version": draw(st.integers(1, 5)),
        "patient_id": draw(st.sampled_from(PATIENTS)),
        "practitioner_id": draw(st.sampled_from(PRACTITIONERS)),
        "location_id": draw(st.sampled_from(LOCATIONS)),
        "starts_at": draw(instants),
        "duration_minutes": 60,
        "fee_ids": draw(st.lists(st.sampled_from(FEES), min_size=1, max_size=2, unique=True)),
        "status": AppointmentStatus.BOOKED,
        "source": BookingSource.STAFF,
        "time_zone": draw(st.sampled_from(ZONES)),
    }


# Which of patient, fee, practitioner, location and day a link's appointment is made to fit the
# line with (most random appointments fit no line, and a line must be linked to go further).
fits = st.just((True,) * 5) | st.tuples(*[st.booleans()] * 5)


def fitted(line: lines.Line, given_fields: dict[str, Any], fit: tuple[bool, ...]) -> Appointment:
    """The appointment of a link step, made to fit ``line`` where ``fit`` says."""
    patient, fee, practitioner, location, day = fit
    chosen = {**given_fields, "appointment_id": held(line, given_fields["appointment_id"])}
    if patient:
        chosen["patient_id"] = line.patient_id
    if fee and line.fee_id not in chosen["fee_ids"]:
        chosen["fee_ids"] = [*chosen["fee_ids"][:1], line.fee_id]
    if practitioner and line.practitioner_ids is not None:
        chosen["practitioner_id"] = line.practitioner_ids[-1]
    if location and line.location_ids is not None:
        chosen["location_id"] = line.location_ids[-1]
    if day:
        noon = datetime.combine(line.valid_until, time(12), ZoneInfo(chosen["time_zone"]))
        chosen["starts_at"] = noon.astimezone(UTC)
    return Appointment(**chosen)


redeemable = st.sampled_from((True, True, True, False))  # mostly: a link must be able to go on

steps = st.one_of(
    st.tuples(
        st.just("request_booking"),
        st.sampled_from(APPOINTMENTS),
        instants,
        st.none() | st.sampled_from(ZONES),
        instants,
    ),
    st.tuples(st.just("link"), appointments(), redeemable, fits),
    st.tuples(st.just("release"), appointment_ids, st.none() | st.just("released by staff")),
    st.tuples(st.just("use"), appointment_ids, st.none() | st.integers(1, 9)),
    st.tuples(st.just("forfeit"), appointment_ids, st.just("a late cancellation")),
)


def held(line: lines.Line, chosen: Any) -> UUID:
    if chosen == HELD:
        return line.appointment_id or UUID(int=99)  # holds none: an appointment it never held
    assert isinstance(chosen, UUID)
    return chosen


def run(line: lines.Line, step: tuple[Any, ...]) -> lines.Changed[Any] | lines.Refused:
    kind, *args = step
    if kind == "request_booking":
        appointment_id, starts_at, zone, at = args
        return lines.request_booking(line, appointment_id, starts_at, zone, at)
    if kind == "link":
        given_fields, redeemable, fit = args
        return lines.link(line, fitted(line, given_fields, fit), redeemable)
    if kind == "release":
        return lines.release(line, held(line, args[0]), note=args[1])
    if kind == "use":
        return lines.use(line, held(line, args[0]), args[1])
    assert kind == "forfeit"
    return lines.forfeit(line, held(line, args[0]), args[1])


def r6_refusal(
    line: lines.Line, appointment: Appointment, redeemable: bool
) -> LinkRefusalCode | None:
    """R6 as the brief states it, in the order the model reports the first reason."""
    own = line.status in (LineStatus.BOOKING_REQUESTED, LineStatus.LINKED) and (
        line.appointment_id == appointment.appointment_id
    )
    day = appointment.starts_at.astimezone(ZoneInfo(appointment.time_zone)).date()
    # The invoice's patient or a household member; the line's own appointment keeps it (R10).
    whose = appointment.patient_id == line.patient_id or appointment.patient_id in line.shared_with
    checks = [
        (not whose and not own, LinkRefusalCode.WRONG_PATIENT),
        (line.status != LineStatus.OPEN and not own, LinkRefusalCode.LINE_TAKEN),
        (line.fee_id not in appointment.fee_ids, LinkRefusalCode.FEE_NOT_COVERED),
        (
            line.practitioner_ids is not None
            and appointment.practitioner_id not in line.practitioner_ids,
            LinkRefusalCode.PRACTITIONER_NOT_ALLOWED,
        ),
        (
            line.location_ids is not None and appointment.location_id not in line.location_ids,
            LinkRefusalCode.LOCATION_NOT_ALLOWED,
        ),
        (not line.valid_from <= day <= line.valid_until, LinkRefusalCode.OUTSIDE_VALIDITY),
        (not redeemable, LinkRefusalCode.NOT_REDEEMABLE),
    ]
    return next((code for failed, code in checks if failed), None)


def allowed_from(line: lines.Line, step: tuple[Any, ...]) -> bool:
    """Whether the step's transition starts from the line's status and holding (R3, R8, R9,
    R14); a link is R6's to answer."""
    kind, *args = step
    if kind == "request_booking":
        return line.status == LineStatus.OPEN
    holds_it = line.appointment_id is not None and line.appointment_id == held(line, args[0])
    if kind == "release":
        return holds_it and line.status in (LineStatus.BOOKING_REQUESTED, LineStatus.LINKED)
    return holds_it and line.status == LineStatus.LINKED  # use, forfeit


def check_holding(line: lines.Line) -> None:
    """What the database checks too: a line holds an appointment exactly while it is
    booking_requested, linked, used or forfeited; it has a request time exactly while
    booking_requested; and an open line keeps nothing of an appointment."""
    assert (line.appointment_id is not None) == (line.status in HOLDING_STATUSES)
    assert (line.booking_requested_at is not None) == (line.status == LineStatus.BOOKING_REQUESTED)
    if line.status == LineStatus.OPEN:
        assert line.appointment_starts_at is None
        assert line.appointment_version is None
        assert line.appointment_time_zone is None
    else:
        assert line.note is None  # a note says why the line was last released
    if line.status in (LineStatus.LINKED, LineStatus.USED, LineStatus.FORFEITED):
        assert line.appointment_version is not None


def expected_refusal(line: lines.Line, step: tuple[Any, ...]) -> lines.Refusal:
    """The code a refused transition other than a link gives: the line is final, does not hold
    the appointment named, or its status is not one the transition starts from."""
    if line.status in FINAL_STATUSES:
        return lines.Refusal.FINAL
    if step[0] != "request_booking" and line.appointment_id != held(line, step[1]):
        return lines.Refusal.NOT_HELD
    return lines.Refusal.WRONG_STATUS


@settings(max_examples=400)
@given(starting_lines(), st.lists(steps, max_size=25))
def test_random_transitions_keep_the_lines_rules(
    line: lines.Line, sequence: list[tuple[Any, ...]]
) -> None:
    start, applied = line.version, 0
    check_holding(line)
    for step in sequence:
        before = line
        outcome = run(line, step)
        if before.status in FINAL_STATUSES:
            # R14, R9: a used or forfeited line never changes again.
            assert isinstance(outcome, lines.Refused), step
        if step[0] != "link":
            assert isinstance(outcome, lines.Changed) == allowed_from(before, step), step
        if isinstance(outcome, lines.Refused):
            assert outcome.reason
            if step[0] != "link":
                assert outcome.code == expected_refusal(before, step), (step, outcome)
            continue
        applied += 1
        line = outcome.line
        assert line.version == before.version + 1
        for field in fields(lines.Line):
            if field.name not in STATE:
                assert getattr(line, field.name) == getattr(before, field.name), field.name
        check_holding(line)
    # One version per change, none per refusal.
    assert line.version == start + applied


@settings(max_examples=400)
@given(fresh_lines(), st.lists(steps, max_size=8), appointments(), st.booleans(), fits)
def test_a_link_is_refused_exactly_when_r6_says(
    line: lines.Line,
    before: list[tuple[Any, ...]],
    given_fields: dict[str, Any],
    redeemable: bool,
    fit: tuple[bool, ...],
) -> None:
    for step in before:  # any status the line can reach
        outcome = run(line, step)
        if isinstance(outcome, lines.Changed):
            line = outcome.line
    appointment = fitted(line, given_fields, fit)
    expected = r6_refusal(line, appointment, redeemable)
    outcome = lines.link(line, appointment, redeemable)
    if expected is not None:
        assert isinstance(outcome, lines.Refused)
        assert outcome.code == expected
        assert lines.link_refusal(line, appointment, redeemable) == outcome
        return
    assert isinstance(outcome, lines.Changed)
    assert outcome.line.status == LineStatus.LINKED
    assert outcome.line.appointment_id == outcome.event.appointment_id
    assert outcome.event.appointment_id == appointment.appointment_id
    assert outcome.event.appointment_version == appointment.version
    assert outcome.line.appointment_starts_at == appointment.starts_at
    assert outcome.line.appointment_time_zone == appointment.time_zone


@settings(max_examples=400)
@given(starting_lines(), st.lists(steps, max_size=25))
def test_what_happened_says_what_changed(line: lines.Line, sequence: list[tuple[Any, ...]]) -> None:
    """Each event names the appointment the line took, let go of or spent, and the status it
    left."""
    for step in sequence:
        before = line
        outcome = run(line, step)
        if isinstance(outcome, lines.Refused):
            continue
        line, event = outcome.line, outcome.event
        if isinstance(event, lines.BookingRequested):
            assert line.status == LineStatus.BOOKING_REQUESTED
            assert (line.appointment_id, line.appointment_starts_at) == (
                event.appointment_id,
                event.starts_at,
            )
        elif isinstance(event, lines.Released):
            assert line.status == LineStatus.OPEN
            assert event.appointment_id == before.appointment_id
            assert event.was == before.status
            assert line.note == event.note
        elif isinstance(event, lines.Used):
            assert line.status == LineStatus.USED
            assert event.appointment_id == before.appointment_id == line.appointment_id
            # The newer of the linked version and the attended one, never older than the link.
            assert before.appointment_version is not None
            assert event.appointment_version == line.appointment_version
            assert event.appointment_version >= before.appointment_version
            assert step[2] is None or event.appointment_version >= step[2]
        elif isinstance(event, lines.Forfeited):
            assert line.status == LineStatus.FORFEITED
            assert event.appointment_id == before.appointment_id == line.appointment_id
            assert event.reason == step[2]
        else:
            assert isinstance(event, lines.Linked)
            assert line.status == LineStatus.LINKED


def test_a_booked_line_is_linked_then_used_and_stays_used() -> None:
    """The everyday life of a line, step by step: requested from the invoice, booked by the
    calendar, attended; then nothing moves it (R14)."""
    line = lines.Line(
        line_id=UUID(int=100),
        invoice_id=UUID(int=200),
        line_number=1,
        patient_id="ana",
        fee_id="massage-60",
        practitioner_ids=("dr-a",),
        location_ids=None,
        valid_from=FIRST_DAY,
        valid_until=FIRST_DAY + timedelta(days=30),
        note="the calendar refused: slot taken",
    )
    starts = datetime(2027, 3, 5, 9, tzinfo=UTC)
    asked = datetime(2027, 3, 1, 12, tzinfo=UTC)
    requested = lines.applied(lines.request_booking(line, APPOINTMENTS[0], starts, "UTC", asked))
    assert requested.line.note is None  # the old refusal no longer shows
    assert requested.line.booking_requested_at == asked
    appointment = Appointment(
        appointment_id=APPOINTMENTS[0],
        version=1,
        patient_id="ana",
        practitioner_id="dr-a",
        location_id="northside",
        starts_at=starts,
        duration_minutes=60,
        fee_ids=["massage-60"],
        status=AppointmentStatus.BOOKED,
        source=BookingSource.INVOICE,
    )
    linked = lines.applied(lines.link(requested.line, appointment, True))
    assert linked.line.booking_requested_at is None
    used = lines.applied(lines.use(linked.line, APPOINTMENTS[0], 3))
    assert (used.line.status, used.line.appointment_version, used.line.version) == (
        LineStatus.USED,
        3,
        4,
    )
    for outcome in (
        lines.release(used.line, APPOINTMENTS[0]),
        lines.forfeit(used.line, APPOINTMENTS[0], "a no-show"),
        lines.use(used.line, APPOINTMENTS[0], 4),
    ):
        assert isinstance(outcome, lines.Refused)
        assert outcome.code == lines.Refusal.FINAL
    assert lines.link(used.line, appointment, True) == lines.Refused(
        LinkRefusalCode.LINE_TAKEN, "the line is used"
    )
