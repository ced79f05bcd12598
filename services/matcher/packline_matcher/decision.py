"""Where a link is decided: a pure function of (appointment, the patient's package lines) that
says what to do — link, keep, unlink, or explain why no line can take it. No I/O: the matcher's
handlers load the read model, call :func:`decide`, and publish what it says.

The rules: a line can take an appointment when it is open, for one of the appointment's fees,
with an allowed practitioner and location, on a day within its validity (the day as the clocks
at the appointment's location show it, R15), and its invoice is redeemable (R6). When several
can, the earliest expiry wins, then the oldest invoice, then the lowest line number (R11).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from uuid import UUID

from packline_contracts import clinic_time, wording
from packline_contracts.invoices import UnlinkReason
from packline_contracts.matching import NoMatchCode
from packline_contracts.types import (
    DEFAULT_TIME_ZONE,
    AppointmentStatus,
    BookingSource,
    LateCancelPolicy,
)

ACTIVE = (AppointmentStatus.BOOKED, AppointmentStatus.ARRIVED, AppointmentStatus.COMPLETED)


@dataclass(frozen=True)
class Line:
    """A package line as the matcher's read model knows it."""

    line_id: UUID
    invoice_id: UUID
    package_id: str
    package_name: str
    line_number: int
    fee_id: str
    practitioner_ids: tuple[str, ...] | None
    location_ids: tuple[str, ...] | None
    valid_from: date
    valid_until: date
    invoice_issued_at: datetime
    redeemable: bool
    unpaid: bool  # not redeemable only because the package must be paid first
    # open, requested (a link or a booking is under way), linked, used, forfeited, expired
    # (written off unbooked at the end of its validity and grace, R18)
    status: str
    appointment_id: UUID | None = None
    policy: LateCancelPolicy | None = None
    # How many lines this one stands for: itself and the lines of its invoice after it that
    # decide exactly as it does (same fee, restrictions, validity and status) and were not read
    # (readmodel.load reads a few of a thousand alike lines; see condensed()). Counted where a
    # decision says how many: "of 3 that fit", "all 5 sessions booked".
    alike: int = 1
    # Whose invoice it is, when that is another patient's whose package is shared with this
    # one's household (R18): the rule and the explanation say so, by name where it is known.
    patient_id: str | None = None
    patient_name: str | None = None


@dataclass(frozen=True)
class Appointment:
    appointment_id: UUID
    version: int
    patient_id: str
    practitioner_id: str
    location_id: str
    starts_at: datetime
    fee_ids: tuple[str, ...]
    status: AppointmentStatus
    source: BookingSource
    hand_unlinked: bool = False
    # Booked from an invoice line whose request the matcher has not seen yet: invoicing's.
    awaiting_invoice: bool = False
    refused_line_ids: frozenset[UUID] = frozenset()
    cancelled_at: datetime | None = None
    ended_by: str | None = None  # who cancelled or deleted it (the calendar's event)
    time_zone: str = DEFAULT_TIME_ZONE  # its location's: the day it is on is judged there (R15)

    @property
    def day(self) -> date:
        """The location's local day the appointment is on."""
        return clinic_time.local_day(self.starts_at, self.time_zone)


@dataclass(frozen=True)
class Link:
    line: Line
    rule: str


@dataclass(frozen=True)
class Unlink:
    line: Line
    reason: UnlinkReason
    forfeit: bool = False
    why: str | None = None  # a forfeit, in the clinic's words and local time (R9, R15)
    by: str | None = None  # who cancelled or deleted it in the calendar


@dataclass(frozen=True)
class Candidate:
    line: Line
    code: NoMatchCode
    reason: str


@dataclass(frozen=True)
class Explain:
    candidates: tuple[Candidate, ...]
    summary: str


@dataclass(frozen=True)
class Decision:
    unlink: Unlink | None = None
    link: Link | None = None
    explain: Explain | None = None
    keep: Line | None = None  # linked, still fits: the line's date follows a reschedule


def decide(
    appointment: Appointment,
    lines: Sequence[Line],
    names: Mapping[str, str] | None = None,
) -> Decision:
    """What to do about ``appointment`` given its patient's lines: every line, or only the
    :func:`relevant` ones (the same decision; the handler loads only those)."""
    names = names or {}
    # A session moved to another patient's invoice is theirs now: not a candidate here, nor
    # counted among "all N sessions booked" (R18).
    lines = [line for line in lines if line.status != "transferred"]
    current = next(
        (
            line
            for line in lines
            if line.appointment_id == appointment.appointment_id
            and line.status in ("linked", "requested", "used")
        ),
        None,
    )
    if appointment.status not in ACTIVE:
        if current is None or current.status != "linked":
            return Decision()
        reason = ENDED_BECAUSE.get(appointment.status, UnlinkReason.CANCELLED)
        forfeit = forfeits(appointment, current.policy)
        why = forfeit_reason(appointment, current.policy) if forfeit else None
        return Decision(unlink=Unlink(current, reason, forfeit, why, appointment.ended_by))
    if appointment.source == BookingSource.INVOICE and (
        (current is not None and current.status != "linked") or appointment.awaiting_invoice
    ):
        # Booked from this line: invoicing links it when the booking succeeds. Once linked it is
        # like any linked appointment: a move keeps its line at the new date (R10), a change
        # that no longer fits releases it.
        return Decision()
    if current is not None:
        if current.status == "requested":
            return Decision()  # an answer is on its way
        if current.status == "used":
            return Decision()  # attended: the session stays used whatever changes (R14)
        if current.fee_id in appointment.fee_ids and problem(appointment, current, names) is None:
            return Decision(keep=current)
        unlink = Unlink(current, UnlinkReason.NO_LONGER_FITS)
        rest = [line for line in lines if line.line_id != current.line_id]
        found = choose(appointment, rest, names)
        return Decision(unlink=unlink, link=found.link, explain=found.explain)
    if appointment.hand_unlinked:
        # R8: staff unlinked it; never again on our own, and the explanation says so (R7).
        return Decision(explain=unassigned_by_staff(appointment, lines))
    return choose(appointment, lines, names)


def relevant(appointment: Appointment, line: Line) -> bool:
    """Whether ``line`` can matter to what :func:`decide` says about ``appointment``: a line
    for one of its fees (a candidate, or named in an explanation), or the line holding it.
    No other line is ever read (readmodel.load loads just these)."""
    return line.fee_id in appointment.fee_ids or line.appointment_id == appointment.appointment_id


def alike(line: Line) -> tuple[object, ...]:
    """What a line is decided by, besides its number: lines of one invoice that share this
    decide alike (R6's restrictions and validity, and whether it is free)."""
    return (
        line.invoice_id,
        line.fee_id,
        line.status,
        line.practitioner_ids,
        line.location_ids,
        line.valid_from,
        line.valid_until,
    )


def condensed(lines: Sequence[Line], open_kept: int) -> list[Line]:
    """The lines readmodel.load reads of a patient's ``lines`` for some fees (those holding or
    being linked to the batch's appointments are read apart, whole): of each group of
    :func:`alike` lines, in line order, the first ``open_kept`` open ones or the first one of any
    other status, the last kept standing for the rest (``alike``). A fold of a batch deciding at
    most ``open_kept - 1`` of the patient's appointments says the same of these as of every line:
    it takes open lines in line order, one per appointment, and the rest are only counted."""
    groups: dict[tuple[object, ...], list[Line]] = {}
    for line in sorted(lines, key=in_order):
        groups.setdefault(alike(line), []).append(line)
    kept: list[Line] = []
    for group in groups.values():
        keep = open_kept if group[0].status == "open" else 1
        head = group[:keep]
        if len(group) > keep:
            head[-1] = replace(head[-1], alike=len(group) - keep + 1)
        kept += head
    return sorted(kept, key=in_order)


def in_order(line: Line) -> tuple[datetime, UUID, int]:
    """The order lines are read in: the oldest invoice first, then line order (an explanation
    names packages in this order)."""
    return line.invoice_issued_at, line.invoice_id, line.line_number


def unassigned_by_staff(appointment: Appointment, lines: Sequence[Line]) -> Explain | None:
    """Why an appointment staff unassigned by hand stays unlinked, per package covering it."""
    by_invoice: dict[UUID, Line] = {}
    for line in lines:
        if line.fee_id in appointment.fee_ids:
            by_invoice.setdefault(line.invoice_id, line)
    if not by_invoice:
        return None
    reason = (
        "staff unassigned this appointment by hand; book it from the invoice to use this package"
    )
    candidates = tuple(
        Candidate(line, NoMatchCode.UNASSIGNED_BY_STAFF, reason)
        for line in list(by_invoice.values())[:MAX_CANDIDATES]
    )
    return Explain(
        candidates, "Not linked: it was unassigned from its package, so none takes it on its own"
    )


def choose(appointment: Appointment, lines: Sequence[Line], names: Mapping[str, str]) -> Decision:
    covering = [line for line in lines if line.fee_id in appointment.fee_ids]
    fitting = [
        line
        for line in covering
        if line.line_id not in appointment.refused_line_ids
        and problem(appointment, line, names) is None
    ]
    if fitting:
        best = min(fitting, key=preference)
        choices = sum(line.alike for line in fitting)
        return Decision(link=Link(best, _fit(rule(best, choices) + shared_by(best, appointment))))
    if not covering:
        return Decision()  # no package of this patient covers these fees: nothing to say
    return Decision(explain=explain(appointment, covering, names))


def preference(line: Line) -> tuple[date, datetime, int]:
    """R11: earliest expiry, then the oldest invoice, then the line order."""
    return line.valid_until, line.invoice_issued_at, line.line_number


def shared_by(line: Line, appointment: Appointment) -> str:
    """ ", shared by Jane Doe" for a line of another patient's package shared with this one."""
    if line.patient_id is None or line.patient_id == appointment.patient_id:
        return ""
    return f", shared by {line.patient_name or f'patient {line.patient_id}'}"


def rule(line: Line, choices: int) -> str:
    if choices == 1:
        return f"the only line that fits: line {line.line_number} of {line.package_name}"
    return (
        f"earliest expiry ({wording.day(line.valid_until)}), then oldest invoice, then line order:"
        f" line {line.line_number} of {line.package_name} (of {choices} that fit)"
    )


def problem(
    appointment: Appointment, line: Line, names: Mapping[str, str]
) -> tuple[NoMatchCode, str] | None:
    """Why ``line`` cannot take ``appointment``, in the clinic's words (R6, R7)."""
    if line.status == "expired":
        if not line.redeemable and not line.unpaid:
            return NoMatchCode.VOID, "the invoice is void or refunded"
        return NoMatchCode.EXPIRED, (
            f"expired on {wording.day(line.valid_until)}; its unbooked sessions were written off"
        )
    if line.status in ("forfeited", "used") or (
        line.status != "open" and line.appointment_id != appointment.appointment_id
    ):
        return NoMatchCode.ALL_SESSIONS_BOOKED, "this session is booked"
    if not line.redeemable:
        if line.unpaid:
            return NoMatchCode.UNPAID, "unpaid, and this package must be paid first"
        return NoMatchCode.VOID, "the invoice is void or refunded"
    if (
        line.practitioner_ids is not None
        and appointment.practitioner_id not in line.practitioner_ids
    ):
        allowed = " or ".join(names.get(p, p) for p in line.practitioner_ids)
        return NoMatchCode.PRACTITIONER_NOT_ALLOWED, f"covers this fee only with {allowed}"
    if line.location_ids is not None and appointment.location_id not in line.location_ids:
        allowed = " or ".join(names.get(p, p) for p in line.location_ids)
        return NoMatchCode.LOCATION_NOT_ALLOWED, f"covers this fee only at {allowed}"
    day = appointment.day
    if day > line.valid_until:
        return NoMatchCode.EXPIRED, f"expired on {wording.day(line.valid_until)}"
    if day < line.valid_from:
        return NoMatchCode.NOT_YET_VALID, f"valid from {wording.day(line.valid_from)}"
    return None


def explain(
    appointment: Appointment, covering: Sequence[Line], names: Mapping[str, str]
) -> Explain:
    """One reason per package invoice that covers the fee (R7)."""
    by_invoice: dict[UUID, list[Line]] = {}
    for line in covering:
        by_invoice.setdefault(line.invoice_id, []).append(line)
    candidates = []
    for invoice_lines in by_invoice.values():
        # Say the most telling reason: one that is not "booked" when there is one.
        telling = [
            (line, found)
            for line in invoice_lines
            if (found := problem(appointment, line, names)) is not None
            and found[0] != NoMatchCode.ALL_SESSIONS_BOOKED
        ]
        if telling:
            line, (code, reason) = telling[0]
        else:
            line = invoice_lines[0]
            code = NoMatchCode.ALL_SESSIONS_BOOKED
            reason = wording.all_booked(sum(line.alike for line in invoice_lines))
            if any(other.line_id in appointment.refused_line_ids for other in invoice_lines):
                code, reason = (
                    NoMatchCode.LINE_REQUESTED_ELSEWHERE,
                    "its last session was just taken",
                )
        candidates.append(Candidate(line, code, _fit(reason + shared_by(line, appointment))))
    # An explanation must fit its event: at most MAX_CANDIDATES packages named, each reason and
    # the summary within a Reason's length (a patient with many packages, or restrictions naming
    # many practitioners, would otherwise make the event impossible to publish).
    shown = candidates[:MAX_CANDIDATES]
    summary = "; ".join(f"package {c.line.package_name} {c.reason}" for c in shown)
    if len(candidates) > len(shown):
        summary += f"; and {len(candidates) - len(shown)} more package(s)"
    return Explain(tuple(shown), _fit(f"Not linked: {summary}"))


MAX_CANDIDATES = 20
REASON_LENGTH = 500  # packline_contracts.types.Reason


def _fit(text: str) -> str:
    return text if len(text) <= REASON_LENGTH else text[: REASON_LENGTH - 1] + "…"


# Why a linked appointment that is no longer active lets its line go.
ENDED_BECAUSE = {
    AppointmentStatus.DELETED: UnlinkReason.DELETED,
    AppointmentStatus.NO_SHOW: UnlinkReason.NO_SHOW,
}


def forfeits(appointment: Appointment, policy: LateCancelPolicy | None) -> bool:
    """R9: a late cancellation or a no-show uses up the session, if the package says so."""
    if policy is None:
        return False
    if appointment.status == AppointmentStatus.NO_SHOW:
        return policy.no_show_forfeits
    if appointment.status == AppointmentStatus.CANCELLED and policy.forfeit_within_hours:
        cancelled_at = appointment.cancelled_at or appointment.starts_at
        return appointment.starts_at - cancelled_at < timedelta(hours=policy.forfeit_within_hours)
    return False


def forfeit_reason(appointment: Appointment, policy: LateCancelPolicy | None) -> str:
    """Why a session was forfeited, with the times as the location's clocks show them: "a late
    cancellation: cancelled Mon 1 March 2027, 18:00 AEDT, 15 hours before the appointment at
    09:00 (this package forfeits inside 24 hours)"."""
    if appointment.status == AppointmentStatus.NO_SHOW or policy is None:
        return "a no-show under the package's policy"
    cancelled_at = appointment.cancelled_at or appointment.starts_at
    cancelled = clinic_time.local(cancelled_at, appointment.time_zone)
    starts = clinic_time.local(appointment.starts_at, appointment.time_zone)
    ahead = appointment.starts_at - cancelled_at
    hours = int(ahead.total_seconds() // 3600)
    notice = f"{hours} hour{'s' if hours != 1 else ''}" if hours >= 1 else "under an hour"
    return (
        f"a late cancellation: cancelled {wording.moment(cancelled)}, {notice} before the "
        f"appointment at {wording.hour(starts)} (this package forfeits inside "
        f"{policy.forfeit_within_hours} hours)"
    )
