"""Package invoices and their lines: purchases, payments, voids and refunds, and the links between
lines and appointments. Owned by invoicing; every message is keyed by the patient id.

A package invoice has one line per session (a package of 5 massages has 5 lines). A line is
**open** (unassigned), **linked** to one appointment, **used** (the patient arrived for that
appointment: the session is spent, R14), **forfeited** (R9), **expired** (still unbooked when
the invoice's validity and the package's grace ended: written off by ``SessionsExpired``, R18) or
**transferred** (moved unbooked to another patient's new invoice by ``SessionsTransferred``, R18).
Links are made by the matcher's
``LinkAppointment`` and checked again by invoicing, which answers ``LineLinked`` or
``LinkRefused``."""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Annotated, ClassVar
from uuid import UUID

from pydantic import Field, model_validator

from packline_contracts.envelope import Kind, PatientMessage
from packline_contracts.topics import INVOICING_COMMANDS, INVOICING_EVENTS, INVOICING_LINKS
from packline_contracts.types import (
    DEFAULT_TIME_ZONE,
    Actor,
    Appointment,
    Balance,
    Cents,
    Count,
    Currency,
    Day,
    FeeId,
    Instant,
    LateCancelPolicy,
    LocationId,
    Name,
    OneLine,
    PackageId,
    PatientId,
    Reason,
    Restriction,
    TimeZone,
    Value,
    Version,
)

# Why a line was chosen, in words (R11): names the line and its package.
Rule = Annotated[OneLine, Field(max_length=500)]

# R18 household: the family members who may use a patient's package too.
Household = Annotated[
    list[PatientId],
    Field(
        max_length=10,
        description="Family members (patient ids, each once, not the invoice's patient) whose "
        "appointments may redeem this invoice's sessions too, under the same rules (R6, R11).",
    ),
]

# --- commands ---------------------------------------------------------------------------------


class InvoiceCommand(PatientMessage):
    ABSTRACT = True
    TOPIC = INVOICING_COMMANDS
    KIND: ClassVar[Kind] = "command"

    invoice_id: UUID


class PurchaseChannel(StrEnum):
    STAFF = "staff"
    ONLINE = "online"


class IssuePackageInvoice(InvoiceCommand):
    """R2: sell a package to a patient. Restrictions default to the package's; staff may choose
    narrower ones at sale ("linked in the package invoice")."""

    package_id: PackageId
    channel: PurchaseChannel
    issued_by: Actor
    issued_at: Instant
    practitioners: Restriction | None = None
    locations: Restriction | None = None
    location_id: LocationId | None = Field(
        default=None,
        description='Where it was sold (R15): the day of purchase and "N days from purchase" '
        "are that location's local days, ending at its local midnight. Without it: the only "
        "location the invoice allows, if just one; else UTC days.",
    )
    shared_with: Household = Field(default_factory=list)

    @model_validator(mode="after")
    def _household(self) -> IssuePackageInvoice:
        check_household(self.patient_id, self.shared_with)
        return self


def check_household(patient_id: str, shared_with: list[str]) -> None:
    if len(set(shared_with)) != len(shared_with):
        raise ValueError("shared_with: names a patient twice")
    if patient_id in shared_with:
        raise ValueError("shared_with: names the invoice's own patient")


class RecordPayment(InvoiceCommand):
    payment_id: UUID
    amount_cents: Cents = Field(gt=0)
    paid_at: Instant
    recorded_by: Actor


class VoidPackageInvoice(InvoiceCommand):
    """R13: void an invoice; its appointments stay booked but lose their link."""

    voided_by: Actor
    reason: Reason


class RefundPackageInvoice(InvoiceCommand):
    """R13: refund money; a full refund ends the invoice like a void."""

    refund_id: UUID
    amount_cents: Cents = Field(gt=0)
    refunded_by: Actor
    reason: Reason


class LinkAppointment(InvoiceCommand):
    """The matcher's decision: this line redeems this appointment. Invoicing checks it again.
    Only the matcher writes its topic (the broker's ACLs)."""

    TOPIC = INVOICING_LINKS

    line_id: UUID
    appointment: Appointment
    rule: Rule = Field(min_length=1, description="Why this line (R11), shown to staff.")


class UnlinkReason(StrEnum):
    CANCELLED = "cancelled"
    DELETED = "deleted"
    NO_SHOW = "no_show"
    NO_LONGER_FITS = "no_longer_fits"
    UNASSIGNED_BY_STAFF = "unassigned_by_staff"
    INVOICE_VOIDED = "invoice_voided"


class UnlinkAppointment(InvoiceCommand):
    """The matcher's decision: release the line (or forfeit it, R9)."""

    TOPIC = INVOICING_LINKS

    line_id: UUID
    appointment_id: UUID
    appointment_version: Version
    reason: UnlinkReason
    forfeit: bool = Field(default=False, description="Late cancel / no-show: session is used up.")
    forfeit_reason: Reason | None = Field(
        default=None,
        description="Why it is forfeited, in the clinic's words and local time (R9, R15); "
        "LineForfeited carries it.",
    )
    changed_by: Actor | None = Field(
        default=None,
        description="Who cancelled or deleted the appointment in the calendar, when that "
        "released the line (the event's cancelled_by or deleted_by): LineUnlinked's unlinked_by "
        "and the line's history name them. Absent for any other release.",
    )


class UnassignInvoiceLine(InvoiceCommand):
    """R8: staff unlink an appointment from a line ("Unassigned"). The matcher will not link that
    appointment again on its own."""

    line_id: UUID
    unassigned_by: Actor


class ExtendPackageInvoice(InvoiceCommand):
    """R18: staff extend an invoice's validity: every session not yet used, forfeited or written
    off can then be redeemed up to ``valid_until`` (the matcher re-checks the patient's waiting
    appointments, R12). Only later than the current last day; not for a void or refunded
    invoice, nor one with no session left to extend. Answered by PackageInvoiceExtended, or
    InvoiceCommandRefused naming the field."""

    extension_id: UUID = Field(
        description="Chosen by the sender: a retried extension is answered again, not applied "
        "twice."
    )
    valid_until: Day = Field(description="The new last day (the selling location's local day).")
    reason: Reason
    extended_by: Actor


class TopUpPackageInvoice(InvoiceCommand):
    """R18: staff add sessions to an invoice at a price (a top-up). The new lines are for the
    invoice's fee (``fee_id`` when it has several), with its restrictions and its current last
    day; their shares divide ``price_cents`` as a sale's do, the price is added to the invoice's
    and to what it owes (sold). The matcher links the patient's waiting appointments that now
    fit (R12). Not for a void or refunded invoice, nor one whose last day has passed. Answered by
    PackageInvoiceToppedUp, or InvoiceCommandRefused naming the field."""

    topup_id: UUID = Field(
        description="Chosen by the sender: a retried top-up is answered again, not applied twice."
    )
    sessions: int = Field(ge=1, le=100, description="How many sessions to add.")
    price_cents: Cents = Field(description="The price of the added sessions together (0: free).")
    fee_id: FeeId | None = Field(
        default=None,
        description="The fee of the added sessions: one of the invoice's; needed only when the "
        "invoice has several.",
    )
    reason: Reason | None = None
    topped_up_by: Actor


class SharePackageInvoice(InvoiceCommand):
    """R18: staff name the family members who may use this invoice's sessions too (the whole
    list: an empty one shares with nobody). Their appointments link to it under the same rules
    (R6, R11; the matcher re-checks the waiting appointments of those added, R12). Removing a
    member ends new links only: an appointment already linked keeps its session. Not for a void
    or refunded invoice. Answered by PackageInvoiceShared, or InvoiceCommandRefused naming the
    field."""

    sharing_id: UUID = Field(
        description="Chosen by the sender: a retried change is answered again, not applied twice."
    )
    shared_with: Household
    reason: Reason | None = None
    shared_by: Actor

    @model_validator(mode="after")
    def _household(self) -> SharePackageInvoice:
        check_household(self.patient_id, self.shared_with)
        return self


class TransferSessions(InvoiceCommand):
    """R18: staff move unbooked sessions of this invoice (``patient_id``'s) to a new invoice of
    another patient (``to_patient_id``), for the same package, restrictions and validity. The
    old lines become ``transferred`` for good and their shares leave what this invoice owes; the
    new invoice (id derived from ``transfer_id``) is announced by PackageInvoiceIssued to the
    recipient and owes those shares (the matcher links the recipient's waiting appointments, R12).
    The open lines with the highest line numbers go. Not for a void, refunded or unpaid
    (pay-before-use) invoice, nor more sessions than are unbooked. Answered by
    SessionsTransferred, or InvoiceCommandRefused naming the field."""

    transfer_id: UUID = Field(
        description="Chosen by the sender: names the new invoice; a retried transfer is answered "
        "again, not applied twice."
    )
    to_patient_id: PatientId = Field(description="Who receives the sessions.")
    sessions: int = Field(ge=1, le=100, description="How many unbooked sessions to move.")
    reason: Reason
    transferred_by: Actor


# --- events -----------------------------------------------------------------------------------


class LineStatus(StrEnum):
    OPEN = "open"
    BOOKING_REQUESTED = "booking_requested"
    LINKED = "linked"
    USED = "used"
    FORFEITED = "forfeited"
    EXPIRED = "expired"
    TRANSFERRED = "transferred"


class InvoiceStatus(StrEnum):
    ISSUED = "issued"
    PAID = "paid"
    VOID = "void"
    REFUNDED = "refunded"


class InvoiceLine(Value):
    """One session of a package invoice, as invoicing knows it now."""

    line_id: UUID
    line_number: Version = Field(description="Order on the invoice (R11's last tie-break).")
    fee_id: FeeId
    practitioners: Restriction
    locations: Restriction
    valid_from: date
    valid_until: date = Field(description="Last day an appointment can redeem it.")
    status: LineStatus
    appointment_id: UUID | None = None
    appointment_starts_at: Instant | None = None
    appointment_time_zone: TimeZone | None = Field(
        default=None,
        description="The time zone of the appointment's location: show its date and time there.",
    )
    version: Version = Field(description="Increases with every change of this line.")
    share_cents: Cents | None = Field(
        default=None,
        description="This session's share of the invoice's price, fixed at sale: the price "
        "divided by the number of lines, the cents left over going one each to the lowest line "
        "numbers, so the shares add up to the price exactly (docs/revenue.md). Absent from "
        "events before this field existed.",
    )


class PackageInvoice(Value):
    invoice_id: UUID
    patient_id: PatientId
    package_id: PackageId
    package_name: Name
    channel: PurchaseChannel
    issued_at: Instant
    status: InvoiceStatus
    price_cents: Cents
    paid_cents: Cents
    currency: Currency
    pay_before_use: bool
    redeemable: bool = Field(description="Issued or paid, not void or refunded, paid if required.")
    late_cancel_policy: LateCancelPolicy | None = None
    time_zone: TimeZone = Field(
        default=DEFAULT_TIME_ZONE,
        description="The zone of the selling location, in which its validity days were counted "
        "(R15); each appointment's own day is judged in its location's zone.",
    )
    lines: list[InvoiceLine]
    balance: Balance
    location_id: LocationId | None = Field(
        default=None,
        description="Where it was sold (the deferred-revenue report's location); absent when the "
        "sale named none, and from events before this field existed.",
    )
    owed_cents: Cents | None = Field(
        default=None,
        description="Deferred revenue: what the clinic still owes the patient in sessions, in "
        "cents (the price less what was recognised, forfeited, expired, refunded or voided; "
        "docs/revenue.md). Absent from events before this field existed.",
    )
    grace_days: Count | None = Field(
        default=None,
        description="Days after the last valid day before unbooked sessions are written off "
        "(the package's, fixed at sale; R18). Absent from events before this field existed.",
    )
    shared_with: Household = Field(default_factory=list)


# The accounting fields of the events that move money out of what an invoice owes
# (docs/revenue.md), written once.
OwedAfter = Annotated[
    Cents | None,
    Field(
        description="What the invoice still owes after this event (docs/revenue.md); absent "
        "from events before this field existed."
    ),
]
AccountedAt = Annotated[
    Instant | None,
    Field(
        description="When the amount counts (the change's own time: the message that caused "
        "it, or the staff request); the report's month is this instant's month at the selling "
        "location. Absent from events before this field existed."
    ),
]


class InvoiceEvent(PatientMessage):
    ABSTRACT = True
    TOPIC = INVOICING_EVENTS
    KIND: ClassVar[Kind] = "event"

    invoice_id: UUID


class PackageInvoiceIssued(InvoiceEvent):
    """R2: a package invoice with all its lines, restrictions and validity."""

    invoice: PackageInvoice
    issued_by: Actor | None = Field(
        default=None,
        description="Who sold it: the staff member's verified id, or the channel's actor for an "
        "online purchase (absent from events before this field existed).",
    )
    transferred_from: UUID | None = Field(
        default=None,
        description="For an invoice made by a transfer (TransferSessions): the invoice the "
        "sessions came from. Its price is their shares, paid by that invoice.",
    )


class PaymentRecorded(InvoiceEvent):
    payment_id: UUID
    amount_cents: Cents
    paid_cents: Cents = Field(description="Paid so far in total.")
    status: InvoiceStatus
    redeemable: bool
    balance: Balance


class PackageInvoiceVoided(InvoiceEvent):
    """R13: every linked line was released (a LineUnlinked follows for each)."""

    voided_by: Actor
    reason: Reason
    balance: Balance
    voided_cents: Cents | None = Field(
        default=None,
        description="What the invoice still owed when it was voided, no longer owed "
        "(docs/revenue.md); absent from events before this field existed.",
    )
    owed_cents: OwedAfter = None
    accounted_at: AccountedAt = None


class PackageInvoiceRefunded(InvoiceEvent):
    refund_id: UUID
    amount_cents: Cents
    refunded_cents: Cents
    status: InvoiceStatus
    redeemable: bool
    balance: Balance
    refunded_owed_cents: Cents | None = Field(
        default=None,
        description="The part of amount_cents taken off what the invoice still owed (at most "
        "that); docs/revenue.md. Absent from events before this field existed.",
    )
    refunded_recognised_cents: Cents | None = Field(
        default=None,
        description="The rest of amount_cents: revenue already recognised (or forfeited) given "
        "back. Absent from events before this field existed.",
    )
    owed_cents: OwedAfter = None
    accounted_at: AccountedAt = None


class LineEvent(InvoiceEvent):
    """A change of one line; carries the line as it is now and the invoice's balance (R14)."""

    ABSTRACT = True

    package_id: PackageId
    package_name: Name
    line: InvoiceLine
    balance: Balance


class LineLinked(LineEvent):
    """A line now redeems an appointment: the calendar shows the package note (R4), the line
    shows the appointment date."""

    appointment_id: UUID
    appointment_version: Version
    link_version: Version = Field(
        description="Increases with every link change of this appointment; apply a link "
        "event only if it is newer than the last one applied.",
    )
    session_number: Version = Field(description="This is session N of balance.total.")
    rule: Rule = Field(description="Why this line was chosen (R11).")


class LineUnlinked(LineEvent):
    """A line is free again (R8, R9, R10, R13); the appointment stays booked without a note."""

    appointment_id: UUID
    link_version: Version
    reason: UnlinkReason
    unlinked_by: Actor | None = Field(
        default=None,
        description="The staff member who unlinked it (verified id), when staff did: "
        "unassigned_by_staff, and invoice_voided (by the void or the full refund); for cancelled "
        "and deleted, who did that in the calendar; absent for a change that no longer fits.",
    )


class LineForfeited(LineEvent):
    """R9: a late cancellation or no-show used up the session; the line stays consumed."""

    appointment_id: UUID
    link_version: Version
    reason: Reason
    forfeited_cents: Cents | None = Field(
        default=None,
        description="The line's share, now revenue of the forfeited session (at most what the "
        "invoice still owed; docs/revenue.md). Absent from events before this field existed.",
    )
    owed_cents: OwedAfter = None
    accounted_at: AccountedAt = None


class LineUsed(LineEvent):
    """R14: the patient arrived for (or completed) the line's appointment: the session is used.
    A used line keeps its appointment for good: it is never unlinked or released again, even if
    the appointment is later cancelled, deleted or changed."""

    appointment_id: UUID
    appointment_version: Version = Field(description="The version marked arrived or completed.")
    link_version: Version = Field(
        description="Increases with every link change of this appointment; apply a link "
        "event only if it is newer than the last one applied.",
    )
    session_number: Version = Field(description="This is session N of balance.total.")
    recognised_cents: Cents | None = Field(
        default=None,
        description="Revenue recognised by this session: the line's share (at most what the "
        "invoice still owed; docs/revenue.md). Absent from events before this field existed.",
    )
    owed_cents: OwedAfter = None
    accounted_at: AccountedAt = None


class LinkRefusalCode(StrEnum):
    LINE_TAKEN = "line_taken"
    APPOINTMENT_ALREADY_LINKED = "appointment_already_linked"
    WRONG_PATIENT = "wrong_patient"
    FEE_NOT_COVERED = "fee_not_covered"
    PRACTITIONER_NOT_ALLOWED = "practitioner_not_allowed"
    LOCATION_NOT_ALLOWED = "location_not_allowed"
    OUTSIDE_VALIDITY = "outside_validity"
    NOT_REDEEMABLE = "not_redeemable"
    UNKNOWN_LINE = "unknown_line"
    STALE = "stale"


class LinkRefused(InvoiceEvent):
    """A LinkAppointment that invoicing did not apply, and why (the matcher tries another line)."""

    line_id: UUID
    appointment_id: UUID
    appointment_version: Version
    code: LinkRefusalCode
    reason: Reason


class InvoiceCommandRefused(InvoiceEvent):
    """A purchase, payment, void, refund, unlink, unassign, extension, sharing, top-up or transfer
    that could not be applied, and why (e.g. unknown package or invoice, a line of another patient);
    the reason begins with the field it is about where there is one ("valid_until: ...")."""

    command_type: Annotated[OneLine, Field(min_length=1, max_length=100)]
    reason: Reason
    line_id: UUID | None = None


class LineBookingRequested(LineEvent):
    """R3: staff saved a line with "Add appointment: Yes"; the calendar was asked to book."""

    appointment_id: UUID
    starts_at: Instant


class LineBookingRefused(LineEvent):
    """R3: the calendar refused the booking; the reason is shown on the line, which stays open."""

    appointment_id: UUID
    reason: Reason


class PackageExpiringSoon(InvoiceEvent):
    """R18: an invoice with unbooked sessions reaches one of its package's reminder thresholds
    (``expiry_warning_days``) before its last valid day, in the selling location's local days.
    Published once per invoice, expiry date and threshold (an extension brings new reminders for
    the new date); when several thresholds are crossed at once, only the nearest is announced."""

    package_id: PackageId
    package_name: Name
    expires_on: Day = Field(description="The last day an appointment can redeem a session.")
    days_left: Count = Field(description="Days from the local day of the reminder to expires_on.")
    threshold_days: Count = Field(description="The package's reminder this one is.")
    written_off_after: Day = Field(
        description="Unbooked sessions are written off when this local day ends (expires_on plus "
        "the package's grace days)."
    )
    unbooked: Count = Field(description="Sessions still open (neither booked nor used).")
    balance: Balance


class SessionsExpired(InvoiceEvent):
    """R18: the invoice's validity and grace ended with these sessions still unbooked: they are
    written off (status expired, for good) and their share of the price leaves what the invoice
    owes as expired revenue (docs/revenue.md). Sessions booked before then keep their
    appointments."""

    package_id: PackageId
    package_name: Name
    expired_on: Day = Field(description="The last valid day that passed.")
    grace_days: Count
    lines: list[InvoiceLine] = Field(
        min_length=1, max_length=100, description="The lines written off, as they are now."
    )
    sessions: Count = Field(description="How many sessions were written off.")
    expired_cents: Cents = Field(
        description="Their shares, taken off what the invoice still owed (at most that)."
    )
    owed_cents: Cents = Field(description="What the invoice still owes afterwards.")
    accounted_at: Instant = Field(
        description="When the write-off counts: the selling location's midnight that ended the "
        "grace (the report's month is this instant's month there), however late it was made."
    )
    balance: Balance


class PackageInvoiceExtended(InvoiceEvent):
    """R18: staff extended the invoice's validity; the lines named can be redeemed up to the new
    last day (the matcher links waiting appointments that now fit, R12)."""

    extension_id: UUID
    previous_valid_until: Day
    valid_until: Day
    reason: Reason
    extended_by: Actor
    line_ids: list[UUID] = Field(
        min_length=1,
        max_length=100,
        description="The lines extended: every line not used, forfeited or written off.",
    )
    balance: Balance


class PackageInvoiceToppedUp(InvoiceEvent):
    """R18: staff added sessions to the invoice at a price (TopUpPackageInvoice): the new lines
    with their shares, the invoice's new price, and what it owes now (docs/revenue.md: the price
    counts as sold at ``accounted_at``)."""

    topup_id: UUID
    package_id: PackageId
    package_name: Name
    lines: list[InvoiceLine] = Field(
        min_length=1, max_length=100, description="The lines added, as they are now."
    )
    sessions: Count
    sold_cents: Cents = Field(description="The price of the added sessions: their shares' sum.")
    price_cents: Cents = Field(description="The invoice's price now.")
    status: InvoiceStatus
    redeemable: bool
    owed_cents: Cents = Field(description="What the invoice owes afterwards.")
    accounted_at: Instant = Field(description="When the top-up counts (the request's time).")
    reason: Reason | None = None
    topped_up_by: Actor
    balance: Balance


class PackageInvoiceShared(InvoiceEvent):
    """R18: staff changed who may use the invoice's sessions besides its patient
    (SharePackageInvoice): the members now, and who was added and removed."""

    sharing_id: UUID
    shared_with: Household
    added: Household
    removed: Household
    reason: Reason | None = None
    shared_by: Actor
    shared_at: Instant = Field(description="When the change was made (the request's time).")


class SessionsTransferred(InvoiceEvent):
    """R18: unbooked sessions of this invoice moved to another patient's new invoice
    (``to_invoice_id``, announced to that patient by PackageInvoiceIssued): the lines named are
    ``transferred`` for good, never redeemable here again, and their shares left what this
    invoice owes (``transferred_cents``, owed by the new invoice; docs/revenue.md)."""

    transfer_id: UUID
    package_id: PackageId
    package_name: Name
    to_patient_id: PatientId
    to_invoice_id: UUID
    lines: list[InvoiceLine] = Field(
        min_length=1, max_length=100, description="The lines moved, as they are now here."
    )
    sessions: Count
    transferred_cents: Cents = Field(
        description="Their shares, taken off what this invoice owed (at most that), now owed by "
        "the new invoice."
    )
    owed_cents: Cents = Field(description="What this invoice still owes afterwards.")
    accounted_at: Instant = Field(description="When the transfer counts (the request's time).")
    reason: Reason
    transferred_by: Actor
    balance: Balance
