"""An invoice line's life, without I/O: a booking requested from it (R3), the appointment it
redeems (a link, R4 to R6), released again (R8, R9, R10, R13), used when the patient attends (R14),
or forfeited under the package's late-cancel policy (R9); written off unbooked at expiry, given
a later last day by staff, or moved unbooked to another patient's invoice (R18). Besides the
invoice's patient, the members of its household (R18) may redeem it.

Each transition takes the line as it was read and returns either what changed — the line as it
is afterwards, its version one higher, and what happened (the event's kind and fields) — or a
refusal with a code and a reason, the line left as it was. Any instant comes in as an argument
(I10). The handlers load the line, call a transition, save the new line in one write
(packline_invoicing.invoices.save_line) and publish what happened.

A line holds an appointment exactly while it is booking_requested, linked, used or forfeited
(the database checks the same). Used, forfeited, expired and transferred are final: the session
is spent (or written off, or moved), and the line never changes again.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime
from enum import StrEnum
from typing import Any, Generic, TypeVar
from uuid import UUID

from packline_contracts import clinic_time, wording
from packline_contracts.invoices import LineStatus, LinkRefusalCode
from packline_contracts.types import Appointment

FINAL = frozenset(
    {LineStatus.USED, LineStatus.FORFEITED, LineStatus.EXPIRED, LineStatus.TRANSFERRED}
)


@dataclass(frozen=True)
class Line:
    """One session of a package invoice: what it is for (fixed at sale, R2; what R6 checks an
    appointment against) and where it stands now."""

    line_id: UUID
    invoice_id: UUID
    line_number: int
    patient_id: str
    fee_id: str
    practitioner_ids: tuple[str, ...] | None  # None: any practitioner
    location_ids: tuple[str, ...] | None  # None: any location
    valid_from: date
    valid_until: date
    status: LineStatus = LineStatus.OPEN
    appointment_id: UUID | None = None
    appointment_starts_at: datetime | None = None
    appointment_version: int | None = None
    appointment_time_zone: str | None = None
    booking_requested_at: datetime | None = None  # set exactly while booking_requested
    note: str | None = None  # why the line was last released (R3, R8); none while it holds one
    version: int = 1
    # R18: the invoice's household when the line was read with its invoice (for a link,
    # packline_invoicing.invoices.line_and_invoice): who besides ``patient_id`` may redeem it.
    # Empty when read without it; never written with the line.
    shared_with: frozenset[str] = frozenset()


# --- what happened -------------------------------------------------------------------------------


@dataclass(frozen=True)
class BookingRequested:
    """The calendar is asked to book this appointment for the line (LineBookingRequested)."""

    appointment_id: UUID
    starts_at: datetime


@dataclass(frozen=True)
class Linked:
    """The line redeems the appointment (LineLinked)."""

    appointment_id: UUID
    appointment_version: int


@dataclass(frozen=True)
class Released:
    """The line is open again. From booking_requested, the request ended without an appointment
    (LineBookingRefused, or LineUnlinked when a void releases it); from linked, the appointment
    was unlinked (LineUnlinked)."""

    appointment_id: UUID
    was: LineStatus
    note: str | None


@dataclass(frozen=True)
class Used:
    """The patient attended: the session is spent (LineUsed)."""

    appointment_id: UUID
    appointment_version: int


@dataclass(frozen=True)
class Forfeited:
    """A late cancellation or a no-show spent the session (LineForfeited)."""

    appointment_id: UUID
    reason: str


@dataclass(frozen=True)
class Expired:
    """Still unbooked when validity and grace ended: written off (SessionsExpired)."""

    expired_on: date


@dataclass(frozen=True)
class Extended:
    """Staff gave the line a later last day (PackageInvoiceExtended)."""

    previous_valid_until: date
    valid_until: date


@dataclass(frozen=True)
class Transferred:
    """Moved unbooked to ``to_line_id`` of another patient's invoice (SessionsTransferred)."""

    to_line_id: UUID


E = TypeVar(
    "E", BookingRequested, Linked, Released, Used, Forfeited, Expired, Extended, Transferred
)


@dataclass(frozen=True)
class Changed(Generic[E]):
    line: Line
    event: E


class Refusal(StrEnum):
    """Why a transition other than a link was refused (a link says it with LinkRefusalCode)."""

    FINAL = "final"  # used, forfeited or expired: the line never changes again
    NOT_DUE = "not_due"  # an extension to a day not later than the line's last day
    NOT_HELD = "not_held"  # the line does not hold that appointment
    WRONG_STATUS = "wrong_status"  # the transition does not start from the line's status


@dataclass(frozen=True)
class Refused:
    code: LinkRefusalCode | Refusal
    reason: str


class RefusedTransition(Exception):
    """A transition the handler had already checked was refused after all: a bug, not input."""


def applied(outcome: Changed[E] | Refused) -> Changed[E]:
    """The change, where the caller has ruled out every refusal before."""
    if isinstance(outcome, Refused):
        raise RefusedTransition(f"{outcome.code.value}: {outcome.reason}")
    return outcome


def _changed(line: Line, event: E, **state: Any) -> Changed[E]:
    return Changed(replace(line, version=line.version + 1, **state), event)


# --- R6 -----------------------------------------------------------------------------------------


def valid_on(line: Line, day: date) -> bool:
    """Whether ``day`` (the location's local day, R15) is within the line's validity."""
    return line.valid_from <= day <= line.valid_until


def may_redeem(line: Line, patient_id: str) -> bool:
    """Whether ``patient_id``'s appointments may redeem ``line``: the invoice's patient, or a
    member of its household now (R18)."""
    return patient_id == line.patient_id or patient_id in line.shared_with


def link_refusal(line: Line, appointment: Appointment, invoice_redeemable: bool) -> Refused | None:
    """Why ``line`` cannot redeem ``appointment`` now, or None (R6, and I1 for this line)."""
    # The line's own appointment may link again: booked from the line, or moved (R10: the
    # line keeps it and shows the new date), even if its patient has left the household since
    # (removing a member ends new links only).
    own = (
        line.status in (LineStatus.BOOKING_REQUESTED, LineStatus.LINKED)
        and line.appointment_id == appointment.appointment_id
    )
    if not own and not may_redeem(line, appointment.patient_id):
        return Refused(
            LinkRefusalCode.WRONG_PATIENT,
            "the line belongs to another patient, and they are not in its household",
        )
    taken_by_other = line.status != LineStatus.OPEN and not own
    if taken_by_other:
        return Refused(LinkRefusalCode.LINE_TAKEN, f"the line is {line.status.value}")
    if line.fee_id not in appointment.fee_ids:
        return Refused(LinkRefusalCode.FEE_NOT_COVERED, f"the line is for fee {line.fee_id}")
    if (
        line.practitioner_ids is not None
        and appointment.practitioner_id not in line.practitioner_ids
    ):
        return Refused(
            LinkRefusalCode.PRACTITIONER_NOT_ALLOWED,
            f"the line is only for {', '.join(line.practitioner_ids)}",
        )
    if line.location_ids is not None and appointment.location_id not in line.location_ids:
        return Refused(
            LinkRefusalCode.LOCATION_NOT_ALLOWED,
            f"the line is only for {', '.join(line.location_ids)}",
        )
    if not valid_on(line, clinic_time.local_day(appointment.starts_at, appointment.time_zone)):
        return Refused(
            LinkRefusalCode.OUTSIDE_VALIDITY,
            f"valid {wording.day(line.valid_from)} to {wording.day(line.valid_until)}",
        )
    if not invoice_redeemable:
        return Refused(
            LinkRefusalCode.NOT_REDEEMABLE, "the invoice is void, refunded or not paid yet"
        )
    return None


# --- transitions ---------------------------------------------------------------------------------


def booking_refusal(line: Line) -> Refused | None:
    """Why no booking can be requested from ``line`` now (R3: only from an open line), or None."""
    if line.status == LineStatus.OPEN:
        return None
    code = Refusal.FINAL if line.status in FINAL else Refusal.WRONG_STATUS
    return Refused(code, f"the line is {line.status.value}")


def request_booking(
    line: Line, appointment_id: UUID, starts_at: datetime, time_zone: str | None, at: datetime
) -> Changed[BookingRequested] | Refused:
    """R3, Save with "Add appointment: Yes" at ``at``: the line holds the appointment the
    calendar is asked to book until the calendar answers (or the request is released)."""
    refused = booking_refusal(line)
    if refused is not None:
        return refused
    return _changed(
        line,
        BookingRequested(appointment_id, starts_at),
        status=LineStatus.BOOKING_REQUESTED,
        appointment_id=appointment_id,
        appointment_starts_at=starts_at,
        appointment_version=None,
        appointment_time_zone=time_zone,
        booking_requested_at=at,
        note=None,
    )


def link(
    line: Line, appointment: Appointment, invoice_redeemable: bool
) -> Changed[Linked] | Refused:
    """The line redeems ``appointment`` (R4, R5; or the calendar booked the line's request, R3;
    or its appointment moved, R10), if R6 allows it."""
    refused = link_refusal(line, appointment, invoice_redeemable)
    if refused is not None:
        return refused
    return _changed(
        line,
        Linked(appointment.appointment_id, appointment.version),
        status=LineStatus.LINKED,
        appointment_id=appointment.appointment_id,
        appointment_starts_at=appointment.starts_at,
        appointment_version=appointment.version,
        appointment_time_zone=appointment.time_zone,
        booking_requested_at=None,
        note=None,
    )


def _holding_refusal(
    line: Line, appointment_id: UUID, allowed: tuple[LineStatus, ...], done: str
) -> Refused | None:
    """Why ``line`` cannot be ``done`` for ``appointment_id`` from its status, or None."""
    if line.status in FINAL:
        return Refused(
            Refusal.FINAL, f"the line is {line.status.value}: its session is spent for good"
        )
    if line.appointment_id is None:
        return Refused(Refusal.NOT_HELD, "the line holds no appointment")
    if line.appointment_id != appointment_id:
        return Refused(Refusal.NOT_HELD, "the line does not hold that appointment")
    if line.status not in allowed:
        only = " or ".join(status.value for status in allowed)
        return Refused(
            Refusal.WRONG_STATUS,
            f"the line is {line.status.value}: only a {only} line can be {done}",
        )
    return None


def release(
    line: Line, appointment_id: UUID, *, note: str | None = None
) -> Changed[Released] | Refused:
    """The line lets go of ``appointment_id`` and is open again (credit restored), showing
    ``note``: a booking request that ended without an appointment (R3), an appointment unlinked
    (R8, R9, R10) or an invoice voided (R13)."""
    refused = _holding_refusal(
        line, appointment_id, (LineStatus.BOOKING_REQUESTED, LineStatus.LINKED), "released"
    )
    if refused is not None:
        return refused
    return _changed(
        line,
        Released(appointment_id, line.status, note),
        status=LineStatus.OPEN,
        appointment_id=None,
        appointment_starts_at=None,
        appointment_version=None,
        appointment_time_zone=None,
        booking_requested_at=None,
        note=note,
    )


def use(
    line: Line, appointment_id: UUID, appointment_version: int | None = None
) -> Changed[Used] | Refused:
    """R14: the patient arrived for (or completed) the linked appointment, as of
    ``appointment_version`` if given: the session is spent, for good."""
    refused = _holding_refusal(line, appointment_id, (LineStatus.LINKED,), "used")
    if refused is not None:
        return refused
    # Attendance may name an older version than the link holds (a move crossed it): keep the newer.
    versions = (line.appointment_version, appointment_version)
    version = max((v for v in versions if v is not None), default=1)
    return _changed(
        line,
        Used(appointment_id, version),
        status=LineStatus.USED,
        appointment_version=version,
    )


def forfeit(line: Line, appointment_id: UUID, reason: str) -> Changed[Forfeited] | Refused:
    """R9: a late cancellation or no-show under the package's policy spends the session; the
    line keeps the appointment, for good."""
    refused = _holding_refusal(line, appointment_id, (LineStatus.LINKED,), "forfeited")
    if refused is not None:
        return refused
    return _changed(
        line,
        Forfeited(appointment_id, reason),
        status=LineStatus.FORFEITED,
        booking_requested_at=None,
    )


def expire(line: Line, expired_on: date) -> Changed[Expired] | Refused:
    """R18: the line was still open when its validity (and the package's grace) ended: it is
    written off, for good. A line holding an appointment or a booking request keeps it (booked
    in time); only an open line expires."""
    if line.status in FINAL:
        return Refused(Refusal.FINAL, f"the line is {line.status.value}")
    if line.status != LineStatus.OPEN:
        return Refused(
            Refusal.WRONG_STATUS, f"the line is {line.status.value}: only an open line expires"
        )
    return _changed(line, Expired(expired_on), status=LineStatus.EXPIRED, note=None)


def extend(line: Line, valid_until: date) -> Changed[Extended] | Refused:
    """R18: staff give the line a later last day. A line whose session is spent or written off
    stays as it is; so does one already valid that long."""
    if line.status in FINAL:
        return Refused(Refusal.FINAL, f"the line is {line.status.value}")
    if valid_until <= line.valid_until:
        return Refused(
            Refusal.NOT_DUE, f"the line is already valid until {wording.day(line.valid_until)}"
        )
    return _changed(line, Extended(line.valid_until, valid_until), valid_until=valid_until)


def transfer(line: Line, to_line_id: UUID) -> Changed[Transferred] | Refused:
    """R18: staff move the line's session, unbooked, to another patient's invoice (the line
    ``to_line_id`` takes its place there): the line is never redeemable again. Only an open line
    moves; one holding an appointment or a booking request keeps it."""
    if line.status in FINAL:
        return Refused(Refusal.FINAL, f"the line is {line.status.value}")
    if line.status != LineStatus.OPEN:
        return Refused(
            Refusal.WRONG_STATUS, f"the line is {line.status.value}: only an open line moves"
        )
    return _changed(line, Transferred(to_line_id), status=LineStatus.TRANSFERRED, note=None)
