"""Invoicing's command handlers: the catalogue, purchases, payments, voids and refunds, and the
matcher's link and unlink commands — each checked against the invoice as it is now."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg
from packline_contracts import clinic_time, wording
from packline_contracts.catalogue import (
    DefineFee,
    DefinePackage,
    FeeDefined,
    Package,
    PackageDefined,
)
from packline_contracts.envelope import MESSAGE_TYPES, Envelope
from packline_contracts.ids import derived_id
from packline_contracts.invoices import (
    InvoiceCommand,
    InvoiceCommandRefused,
    InvoiceStatus,
    IssuePackageInvoice,
    LineForfeited,
    LineLinked,
    LineStatus,
    LineUnlinked,
    LinkAppointment,
    LinkRefusalCode,
    LinkRefused,
    PackageInvoiceIssued,
    PackageInvoiceRefunded,
    PackageInvoiceVoided,
    PaymentRecorded,
    RecordPayment,
    RefundPackageInvoice,
    UnassignInvoiceLine,
    UnlinkAppointment,
    UnlinkReason,
    VoidPackageInvoice,
)
from packline_contracts.topics import INVOICING_COMMANDS, INVOICING_LINKS
from packline_contracts.types import DEFAULT_TIME_ZONE, MAX_INT32, Appointment, PatientId
from packline_core.consumer import MessageConsumer
from packline_core.errors import Rejected
from packline_core.outbox import Transaction
from pydantic import TypeAdapter, ValidationError

from packline_invoicing import (
    attendance,
    directory,
    history,
    invoices,
    known,
    lines,
    revenue,
    rules,
)


def register_commands(consumer: MessageConsumer) -> None:
    consumer.handles(DefineFee)(define_fee)
    consumer.handles(DefinePackage)(define_package)
    consumer.handles(IssuePackageInvoice)(issue_package_invoice)
    consumer.handles(RecordPayment)(record_payment)
    consumer.handles(VoidPackageInvoice)(void)
    consumer.handles(RefundPackageInvoice)(refund)
    consumer.handles(LinkAppointment)(link)
    consumer.handles(UnlinkAppointment)(unlink)
    consumer.handles(UnassignInvoiceLine)(unassign_invoice_line)
    consumer.answer_refused = answer_refused_command


async def issue_package_invoice(tx: Transaction, envelope: Envelope[IssuePackageInvoice]) -> None:
    await issue(tx, envelope.payload)


async def unassign_invoice_line(tx: Transaction, envelope: Envelope[UnassignInvoiceLine]) -> None:
    await unassign(tx, envelope.payload)


def refuse(
    tx: Transaction, command: InvoiceCommand, reason: str, line_id: UUID | None = None
) -> None:
    tx.publish(
        InvoiceCommandRefused(
            patient_id=command.patient_id,
            invoice_id=command.invoice_id,
            command_type=command.MESSAGE_TYPE,
            reason=reason,
            line_id=line_id,
        )
    )


def refuse_sale(
    tx: Transaction, command: IssuePackageInvoice, field: str, reason: str
) -> tuple[str, str]:
    refuse(tx, command, f"{field}: {reason}")
    return field, reason


# --- catalogue --------------------------------------------------------------------------------


async def define_fee(tx: Transaction, envelope: Envelope[DefineFee]) -> None:
    fee = envelope.payload
    await tx.conn.execute(
        "INSERT INTO fees (fee_id, name, duration_minutes, price_cents, currency)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (fee_id) DO UPDATE SET name = $2,"
        " duration_minutes = $3, price_cents = $4, currency = $5, updated_at = now()",
        fee.fee_id,
        fee.name,
        fee.duration_minutes,
        fee.price_cents,
        fee.currency,
    )
    tx.publish(FeeDefined(**fee.model_dump()))


async def define_package(tx: Transaction, envelope: Envelope[DefinePackage]) -> None:
    package = envelope.payload
    fee_ids = [item.fee_id for item in package.items]
    known = await tx.conn.fetch("SELECT fee_id FROM fees WHERE fee_id = ANY($1::text[])", fee_ids)
    unknown = set(fee_ids) - {row["fee_id"] for row in known}
    if unknown:
        # A catalogue command has no patient to answer: the reason goes to the dead letters.
        raise Rejected(f"package {package.package_id} names unknown fee(s): {sorted(unknown)}")
    terms = Package.model_validate(package.model_dump()).model_dump_json()
    await tx.conn.execute(
        "INSERT INTO packages (package_id, terms) VALUES ($1, $2)"
        " ON CONFLICT (package_id) DO UPDATE SET terms = $2, updated_at = now()",
        package.package_id,
        terms,
    )
    tx.publish(PackageDefined(**package.model_dump()))


# --- purchase and money -----------------------------------------------------------------------


def answer_id(kind: str, business_id: UUID) -> UUID:
    """The message id of the event that answers a purchase, payment or refund: named by its own
    id, so a command retried under a new message id is answered by the same event, sent again."""
    return derived_id("answer", kind, business_id)


async def answered_again(
    tx: Transaction, table: str, column: str, business_id: UUID, kind: str
) -> bool:
    """Whether this payment or refund was recorded before; if so its answer is sent again."""
    assert (table, column) in {("payments", "payment_id"), ("refunds", "refund_id")}
    if not await tx.conn.fetchval(f"SELECT 1 FROM {table} WHERE {column} = $1", business_id):
        return False
    await tx.resend(answer_id(kind, business_id))
    return True


async def issue(tx: Transaction, command: IssuePackageInvoice) -> tuple[str, str] | None:
    """R2: one line per session, restrictions from the package or chosen at sale. Returns why
    it was refused, as (field, reason), also published as InvoiceCommandRefused; or None."""
    existing = await invoices.get_invoice(tx.conn, command.invoice_id)
    if existing is not None:
        if (existing["patient_id"], existing["package_id"]) != (
            command.patient_id,
            command.package_id,
        ):
            why = f"invoice id {command.invoice_id} is another sale's"
            return refuse_sale(tx, command, "invoice_id", why)
        # A retried purchase (a new message id, the same invoice): its answer again.
        await tx.resend(answer_id("issued", command.invoice_id))
        return None
    terms = await tx.conn.fetchval(
        "SELECT terms FROM packages WHERE package_id = $1", command.package_id
    )
    if terms is None:
        return refuse_sale(tx, command, "package_id", f"unknown package {command.package_id}")
    package = Package.model_validate_json(terms)
    refused = rules.sale_refusal(package, command.channel, command.practitioners, command.locations)
    if refused:
        return refuse_sale(tx, command, *refused)
    practitioners = command.practitioners or package.practitioners
    locations = command.locations or package.locations
    selling = rules.selling_location(command.location_id, locations)
    zone = await directory.zone_of(tx.conn, selling) if selling else None
    if command.location_id and zone is None:
        why = f"unknown location {command.location_id}: define it in the calendar first"
        return refuse_sale(tx, command, "location_id", why)
    zone = zone or DEFAULT_TIME_ZONE
    # R15: bought at 23:00 in Sydney is that Sydney day, whatever the date in UTC.
    issued_on = clinic_time.local_day(command.issued_at, zone)
    until = rules.valid_until(package, issued_on)
    if until < issued_on:
        why = f"package {command.package_id} ended on {wording.day(until)}: no longer for sale"
        return refuse_sale(tx, command, "package_id", why)
    await tx.conn.execute(
        "INSERT INTO package_invoices (invoice_id, patient_id, package_id, package_name, channel,"
        " issued_at, issued_by, status, price_cents, currency, pay_before_use,"
        " late_cancel_policy, location_id, time_zone, owed_cents, grace_days,"
        " expiry_warning_days, next_reminder_on, shared_with) VALUES ($1, $2, $3, $4, $5, $6,"
        " $7, 'issued', $8, $9, $10, $11, $12, $13, $8, $14, $15, $16, $17)",
        command.invoice_id,
        command.patient_id,
        package.package_id,
        package.name,
        command.channel.value,
        command.issued_at,
        command.issued_by,
        package.price_cents,
        package.currency,
        package.pay_before_use,
        package.late_cancel_policy.model_dump_json() if package.late_cancel_policy else None,
        selling,
        zone,
        package.grace_days,
        package.expiry_warning_days,
        rules.first_reminder_on(until, package.expiry_warning_days),
        command.shared_with,  # R18: the household chosen at sale
    )
    rows = []
    number = 0
    # Each session's share of the price, adding up to it exactly (docs/revenue.md).
    shares = rules.session_shares(package.price_cents, sum(item.count for item in package.items))
    for item in package.items:
        for _ in range(item.count):
            number += 1
            rows.append(
                (
                    derived_id("line", command.invoice_id, number),
                    command.invoice_id,
                    number,
                    command.patient_id,
                    item.fee_id,
                    practitioners.ids,
                    locations.ids,
                    issued_on,
                    until,
                    shares[number - 1],
                    package.grace_days,
                )
            )
    await tx.conn.executemany(
        "INSERT INTO invoice_lines (line_id, invoice_id, line_number, patient_id, fee_id,"
        " practitioner_ids, location_ids, valid_from, valid_until, status, version, share_cents,"
        " grace_days) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'open', 1, $10, $11)",
        rows,
    )
    await revenue.enter(
        tx,
        command.invoice_id,
        "sold",
        package.price_cents,
        command.issued_at,
        cause=command.invoice_id,
    )
    tx.publish(
        PackageInvoiceIssued(
            patient_id=command.patient_id,
            invoice_id=command.invoice_id,
            invoice=await invoices.snapshot(tx.conn, command.invoice_id, invoices.moment(tx)),
            issued_by=command.issued_by,
        ),
        message_id=answer_id("issued", command.invoice_id),
    )
    return None


async def invoice_of(tx: Transaction, command: InvoiceCommand) -> asyncpg.Record | None:
    invoice = await invoices.get_invoice(tx.conn, command.invoice_id, for_update=True)
    if invoice is None or invoice["patient_id"] != command.patient_id:
        refuse(tx, command, f"no package invoice {command.invoice_id} of this patient")
        return None
    return invoice


async def record_payment(tx: Transaction, envelope: Envelope[RecordPayment]) -> None:
    command = envelope.payload
    invoice = await invoice_of(tx, command)
    if invoice is None:
        return
    if await answered_again(tx, "payments", "payment_id", command.payment_id, "payment"):
        return
    if invoice["status"] in ("void", "refunded"):
        return refuse(tx, command, f"the invoice is {invoice['status']}")
    if invoice["paid_cents"] + command.amount_cents > MAX_INT32:
        return refuse(
            tx,
            command,
            f"amount_cents: payments would total {invoice['paid_cents'] + command.amount_cents}"
            f" cents, more than an invoice can record ({MAX_INT32})",
        )
    inserted = await tx.conn.fetchval(
        "INSERT INTO payments (payment_id, invoice_id, amount_cents, paid_at, recorded_by)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (payment_id) DO NOTHING RETURNING 1",
        command.payment_id,
        command.invoice_id,
        command.amount_cents,
        command.paid_at,
        command.recorded_by,
    )
    if not inserted:
        return  # this payment was recorded before
    paid = invoice["paid_cents"] + command.amount_cents
    status = InvoiceStatus.PAID if paid >= invoice["price_cents"] else InvoiceStatus.ISSUED
    await tx.conn.execute(
        "UPDATE package_invoices SET paid_cents = $2, status = $3 WHERE invoice_id = $1",
        command.invoice_id,
        paid,
        status.value,
    )
    tx.publish(
        PaymentRecorded(
            patient_id=command.patient_id,
            invoice_id=command.invoice_id,
            payment_id=command.payment_id,
            amount_cents=command.amount_cents,
            paid_cents=paid,
            status=status,
            redeemable=rules.redeemable(
                status, invoice["pay_before_use"], paid, invoice["price_cents"]
            ),
            balance=await invoices.balance(tx.conn, command.invoice_id, invoices.moment(tx)),
        ),
        message_id=answer_id("payment", command.payment_id),
    )


async def void(tx: Transaction, envelope: Envelope[VoidPackageInvoice]) -> None:
    command = envelope.payload
    invoice = await invoice_of(tx, command)
    if invoice is None:
        return
    if invoice["status"] in ("void", "refunded"):
        return refuse(tx, command, f"the invoice is already {invoice['status']}")
    await tx.conn.execute(
        "UPDATE package_invoices SET status = 'void' WHERE invoice_id = $1", command.invoice_id
    )
    await release_all(tx, command.invoice_id, by=command.voided_by)
    now = invoices.moment(tx)
    tx.publish(
        PackageInvoiceVoided(
            patient_id=command.patient_id,
            invoice_id=command.invoice_id,
            voided_by=command.voided_by,
            reason=command.reason,
            balance=await invoices.balance(tx.conn, command.invoice_id, now),
            **await revenue.voided(tx, command.invoice_id, now),
        )
    )


async def refund(tx: Transaction, envelope: Envelope[RefundPackageInvoice]) -> None:
    command = envelope.payload
    invoice = await invoice_of(tx, command)
    if invoice is None:
        return
    if await answered_again(tx, "refunds", "refund_id", command.refund_id, "refund"):
        return
    refunded = invoice["refunded_cents"] + command.amount_cents
    if refunded > invoice["paid_cents"]:
        return refuse(
            tx,
            command,
            f"only {invoice['paid_cents'] - invoice['refunded_cents']} cents are left to refund",
        )
    inserted = await tx.conn.fetchval(
        "INSERT INTO refunds (refund_id, invoice_id, amount_cents, reason, refunded_by)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (refund_id) DO NOTHING RETURNING 1",
        command.refund_id,
        command.invoice_id,
        command.amount_cents,
        command.reason,
        command.refunded_by,
    )
    if not inserted:
        return
    full = refunded >= invoice["price_cents"]
    status = InvoiceStatus.REFUNDED if full else InvoiceStatus(invoice["status"])
    await tx.conn.execute(
        "UPDATE package_invoices SET refunded_cents = $2, status = $3 WHERE invoice_id = $1",
        command.invoice_id,
        refunded,
        status.value,
    )
    if full:
        await release_all(tx, command.invoice_id, by=command.refunded_by)
    now = invoices.moment(tx)
    accounting = await revenue.refunded(
        tx, command.invoice_id, command.refund_id, command.amount_cents, now
    )
    tx.publish(
        PackageInvoiceRefunded(
            patient_id=command.patient_id,
            invoice_id=command.invoice_id,
            refund_id=command.refund_id,
            amount_cents=command.amount_cents,
            refunded_cents=refunded,
            status=status,
            redeemable=rules.redeemable(
                status, invoice["pay_before_use"], invoice["paid_cents"], invoice["price_cents"]
            ),
            balance=await invoices.balance(tx.conn, command.invoice_id, now),
            **accounting,
        ),
        message_id=answer_id("refund", command.refund_id),
    )


async def release_all(tx: Transaction, invoice_id: UUID, *, by: str) -> None:
    """R13: every line holding an appointment is released (by whoever voided or refunded the
    invoice); the appointments stay booked. The lines are locked before their status is read:
    a session used at the same moment (attendance, another consumer) is then seen used and
    stays used, never opened again by the void."""
    for row in await invoices.lines_of(tx.conn, invoice_id, for_update=True):
        line = invoices.line_of(row)
        if line.status in (LineStatus.LINKED, LineStatus.BOOKING_REQUESTED):
            await release(tx, line, UnlinkReason.INVOICE_VOIDED, by=by)


# --- links ------------------------------------------------------------------------------------


async def link(tx: Transaction, envelope: Envelope[LinkAppointment]) -> None:
    await apply_checked_link(tx, envelope.payload)


async def apply_checked_link(tx: Transaction, command: LinkAppointment) -> None:
    """The matcher's link, checked first against the appointment invoicing knows (it may wait
    for the calendar's event, see packline_invoicing.known), then against the line."""
    if await known.check_link(tx, command):
        await apply_link(tx, command.invoice_id, command.line_id, command.appointment, command.rule)


async def apply_link(
    tx: Transaction, invoice_id: UUID, line_id: UUID, appointment: Appointment, rule: str
) -> bool:
    """Link if the line can take the appointment now; otherwise publish LinkRefused."""

    def refused(code: LinkRefusalCode, reason: str) -> bool:
        tx.publish(
            LinkRefused(
                patient_id=appointment.patient_id,
                invoice_id=invoice_id,
                line_id=line_id,
                appointment_id=appointment.appointment_id,
                appointment_version=appointment.version,
                code=code,
                reason=reason,
            )
        )
        return False

    # Locking the line serialises every link racing for it (I8): the losers see it taken.
    row = await invoices.line_and_invoice(tx.conn, line_id)
    if row is None or row["invoice_id"] != invoice_id:
        return refused(LinkRefusalCode.UNKNOWN_LINE, f"no line {line_id} on invoice {invoice_id}")
    before = invoices.line_of(row)
    outcome = lines.link(
        before, appointment, invoices.is_redeemable(row, status_column="invoice_status")
    )
    if isinstance(outcome, lines.Refused):
        return refused(LinkRefusalCode(outcome.code), outcome.reason)
    story = history.entry(tx, before, outcome, reason=rule)
    if not await invoices.save_line(tx.conn, outcome.line, taking_appointment=True, story=story):
        return refused(
            LinkRefusalCode.APPOINTMENT_ALREADY_LINKED, "the appointment redeems another line"
        )
    link_version, attended = await invoices.next_link_version_and_attendance(
        tx.conn, appointment.appointment_id
    )
    tx.publish(
        await invoices.line_event(
            tx.conn,
            LineLinked,
            line_id,
            now=invoices.moment(tx),
            appointment_id=outcome.event.appointment_id,
            appointment_version=outcome.event.appointment_version,
            link_version=link_version,
            session_number=outcome.line.line_number,
            rule=rule,
        )
    )
    if attended:
        # Attendance recorded before this link arrived (a walk-in) uses the session at once.
        await attendance.use_attended(tx, outcome.line, appointment.appointment_id)
    return True


async def release(
    tx: Transaction,
    line: lines.Line,
    reason: UnlinkReason,
    *,
    forfeit_reason: str | None = None,
    by: str | None = None,
    note: str | None = None,
) -> None:
    """Free a line, showing ``note`` (or, under the late-cancel policy, forfeit its session)
    and say so."""
    assert line.appointment_id is not None, f"line {line.line_id} holds no appointment"
    appointment_id = line.appointment_id
    event_type: Any
    detail: dict[str, Any]
    if forfeit_reason:
        forfeited = lines.applied(lines.forfeit(line, appointment_id, forfeit_reason))
        story = history.entry(tx, line, forfeited, by=by)
        await invoices.save_line(tx.conn, forfeited.line, story=story)
        event_type = LineForfeited
        detail = {
            "reason": forfeited.event.reason,
            **await revenue.line_spent(tx, line.line_id, "forfeited", invoices.moment(tx)),
        }
    else:
        released = lines.applied(lines.release(line, appointment_id, note=note))
        story = history.entry(tx, line, released, reason=reason.value, by=by)
        await invoices.save_line(tx.conn, released.line, story=story)
        event_type, detail = LineUnlinked, {"reason": reason, "unlinked_by": by}
    tx.publish(
        await invoices.line_event(
            tx.conn,
            event_type,
            line.line_id,
            now=invoices.moment(tx),
            appointment_id=appointment_id,
            link_version=await invoices.next_link_version(tx.conn, appointment_id),
            **detail,
        )
    )


async def unlink(tx: Transaction, envelope: Envelope[UnlinkAppointment]) -> None:
    command = envelope.payload
    row = await invoices.get_line(tx.conn, command.line_id, for_update=True)
    if row is None or row["invoice_id"] != command.invoice_id:
        return refuse(tx, command, f"no line {command.line_id} on this invoice", command.line_id)
    line = invoices.line_of(row)
    if line.appointment_id == command.appointment_id and line.status == LineStatus.USED:
        return refuse(tx, command, attendance.USED_STAYS, command.line_id)
    if line.appointment_id != command.appointment_id or line.status != LineStatus.LINKED:
        if await known.withdraw(tx, command.line_id, command.appointment_id):
            return None  # its link was still waiting for the calendar's event: withdrawn
        return refuse(tx, command, "the line does not hold that appointment", command.line_id)
    forfeit = None
    if command.forfeit:
        forfeit = command.forfeit_reason or (
            ("a no-show" if command.reason == UnlinkReason.NO_SHOW else "a late cancellation")
            + " under the package's policy"
        )
    await release(tx, line, command.reason, forfeit_reason=forfeit, by=command.changed_by)


async def unassign(
    tx: Transaction, command: UnassignInvoiceLine, *, note: str | None = None
) -> bool:
    """R8: staff unlink an appointment from a line; the line is free again, showing ``note``."""
    row = await invoices.get_line(tx.conn, command.line_id, for_update=True)
    if (
        row is None
        or row["invoice_id"] != command.invoice_id
        or row["patient_id"] != command.patient_id
    ):
        refuse(tx, command, f"no line {command.line_id} on this patient's invoice", command.line_id)
        return False
    line = invoices.line_of(row)
    if line.status != LineStatus.LINKED:
        refuse(tx, command, f"the line is {line.status.value}, not linked", command.line_id)
        return False
    await release(tx, line, UnlinkReason.UNASSIGNED_BY_STAFF, by=command.unassigned_by, note=note)
    return True


async def answer_refused_command(tx: Transaction, outline: dict[str, Any], why: str) -> None:
    """A command that cannot be applied (malformed, or holding a value the database cannot
    store) is answered with InvoiceCommandRefused when it names its patient and invoice, so its
    sender is not left waiting. (It is also dead-lettered.)"""
    payload = outline.get("payload")
    message_type = outline.get("message_type")
    if not isinstance(payload, dict) or message_type not in INVOICE_COMMANDS:
        return
    try:
        patient_id = TypeAdapter(PatientId).validate_python(payload.get("patient_id"))
        invoice_id = UUID(str(payload.get("invoice_id")))
    except (ValidationError, ValueError):
        return
    tx.publish(
        InvoiceCommandRefused(
            patient_id=patient_id,
            invoice_id=invoice_id,
            command_type=str(message_type),
            reason=f"{message_type} {why}"[:500],
        )
    )


INVOICE_COMMANDS = {
    name
    for name, cls in MESSAGE_TYPES.items()
    if issubclass(cls, InvoiceCommand) and cls.TOPIC in (INVOICING_COMMANDS, INVOICING_LINKS)
}
