"""Top-up and transfer (R18, issue #22 point 5; docs/revenue.md).

- **Top-up**: ``TopUpPackageInvoice`` (topic) or ``POST /invoices/{invoice_id}/top-ups`` (staff)
  adds sessions to an invoice at a price: new open lines after the last one, for the invoice's
  fee, restrictions and current last day, their shares dividing the price as a sale's do
  (rules.session_shares); the price is added to the invoice's and to what it owes (a ``sold``
  entry), and ``PackageInvoiceToppedUp`` says so. The matcher then links the patient's waiting
  appointments that now fit (R12).
- **Transfer**: ``TransferSessions`` (topic) or ``POST /invoices/{invoice_id}/transfers``
  (staff) moves N unbooked (open) sessions to a new invoice of another patient, named by the
  transfer (``derived_id("transfer", transfer_id)``), for the same package, restrictions,
  validity and shares. The old lines become ``transferred`` for good (each naming the line that
  took its place), their shares leave what the old invoice owes (``transferred_out``) and the
  new invoice owes the same cents (``transferred_in``). ``SessionsTransferred`` tells the old
  invoice's patient; ``PackageInvoiceIssued`` (with ``transferred_from``) tells the recipient's,
  and the matcher links the recipient's waiting appointments (R12). The open lines with the
  highest line numbers move, so the patient keeps the ones R11 would use next.

Both record who and why (``invoice_topups``, ``session_transfers``), and answer a retry (the same
``topup_id`` / ``transfer_id``) with the same events again, applying nothing twice. A refusal
names the field (422 over HTTP, ``InvoiceCommandRefused`` on the topic)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from uuid import UUID, uuid4

import asyncpg
from fastapi import Request
from packline_contracts import clinic_time, wording
from packline_contracts.envelope import Envelope
from packline_contracts.ids import derived_id
from packline_contracts.invoices import (
    InvoiceStatus,
    LineStatus,
    PackageInvoiceIssued,
    PackageInvoiceToppedUp,
    SessionsTransferred,
    TopUpPackageInvoice,
    TransferSessions,
)
from packline_contracts.types import MAX_INT32, Actor, Cents, FeeId, PatientId, Reason
from packline_core.auth import acting, caller, needs
from packline_core.consumer import MessageConsumer
from packline_core.openapi import NOT_FOUND
from packline_core.outbox import Transaction
from packline_core.scope import CallerScope, require_patient
from packline_core.service import Service
from pydantic import BaseModel, Field

from packline_invoicing import commands, history, invoices, lines, revenue, rules
from packline_invoicing.http import refused_over_http, shown_with_notes, staff_change
from packline_invoicing.responses import InvoiceShown

Refusal = tuple[str, str]


def register_transfer_commands(consumer: MessageConsumer) -> None:
    consumer.handles(TopUpPackageInvoice)(top_up_package_invoice)
    consumer.handles(TransferSessions)(transfer_sessions)


async def top_up_package_invoice(tx: Transaction, envelope: Envelope[TopUpPackageInvoice]) -> None:
    await top_up(tx, envelope.payload)


async def transfer_sessions(tx: Transaction, envelope: Envelope[TransferSessions]) -> None:
    await transfer(tx, envelope.payload)


def new_invoice_id(transfer_id: UUID) -> UUID:
    """The invoice a transfer makes: named by the transfer, so a replay makes no second one."""
    return derived_id("transfer", transfer_id)


# --- the rules, without I/O -----------------------------------------------------------------------


def top_up_refusal(
    status: InvoiceStatus,
    fees: list[str],
    fee_id: str | None,
    last_day: date,
    today: date,
    price_cents: int,
    added_cents: int,
) -> Refusal | None:
    """Why a top-up cannot be made, as (field, reason), or None. ``fees``: the invoice's fees in
    line order; ``last_day``: its current last valid day; ``today``: the selling location's."""
    if status in (InvoiceStatus.VOID, InvoiceStatus.REFUNDED):
        return "invoice_id", f"the invoice is {status.value}"
    if fee_id is None and len(set(fees)) > 1:
        return "fee_id", f"the invoice has several fees ({', '.join(sorted(set(fees)))}): say which"
    if fee_id is not None and fee_id not in fees:
        return "fee_id", f"the invoice has no sessions of fee {fee_id}"
    if last_day < today:
        return "invoice_id", (
            f"the invoice expired on {wording.day(last_day)}: extend its validity first"
        )
    if price_cents + added_cents > MAX_INT32:
        return "price_cents", f"the invoice's price would be more than {MAX_INT32} cents"
    return None


def transfer_refusal(
    status: InvoiceStatus,
    redeemable: bool,
    patient_id: str,
    to_patient_id: str,
    unbooked: int,
    sessions: int,
) -> Refusal | None:
    """Why a transfer cannot be made, as (field, reason), or None."""
    if status in (InvoiceStatus.VOID, InvoiceStatus.REFUNDED):
        return "invoice_id", f"the invoice is {status.value}"
    if not redeemable:
        return "invoice_id", "the invoice is not paid, and its package must be paid first"
    if to_patient_id == patient_id:
        return "to_patient_id", "the sessions are already this patient's"
    if unbooked < sessions:
        return "sessions", (
            f"only {wording.sessions(unbooked)} unbooked (not booked, used, forfeited, expired "
            "or transferred)"
        )
    return None


def moving(open_lines: list[lines.Line], sessions: int) -> list[lines.Line]:
    """The open lines a transfer of ``sessions`` moves: those with the highest line numbers (the
    patient keeps the ones R11 would use next), in line order."""
    ordered = sorted(open_lines, key=lambda line: line.line_number)
    return ordered[len(ordered) - sessions :] if sessions else []


# --- top-up ---------------------------------------------------------------------------------------


async def top_up(tx: Transaction, command: TopUpPackageInvoice) -> Refusal | None:
    """Add the sessions and say so. Returns why it was refused, as (field, reason), also
    published as InvoiceCommandRefused; or None."""

    def refused(field: str, reason: str) -> Refusal:
        commands.refuse(tx, command, f"{field}: {reason}")
        return field, reason

    # The invoice's row first (as a void or refund takes it): top-ups of one invoice, and its
    # price and what it owes, change one at a time. Its existing lines are only read.
    invoice = await invoices.get_invoice(tx.conn, command.invoice_id, for_update=True)
    if invoice is None or invoice["patient_id"] != command.patient_id:
        return refused("invoice_id", f"no package invoice {command.invoice_id} of this patient")
    earlier = await tx.conn.fetchval(
        "SELECT invoice_id FROM invoice_topups WHERE topup_id = $1", command.topup_id
    )
    if earlier is not None:
        if earlier != command.invoice_id:
            return refused("topup_id", f"{command.topup_id} topped up another invoice")
        await tx.resend(commands.answer_id("topped-up", command.topup_id))
        return None
    rows = await tx.conn.fetch(
        f"SELECT {invoices.LINE_COLUMNS}, grace_days AS line_grace_days FROM invoice_lines"
        " WHERE invoice_id = $1 ORDER BY line_number",
        command.invoice_id,
    )
    now = invoices.moment(tx)
    zone = invoice["time_zone"]
    fees = [row["fee_id"] for row in rows]
    last_day = max(row["valid_until"] for row in rows)
    refusal = top_up_refusal(
        InvoiceStatus(invoice["status"]),
        fees,
        command.fee_id,
        last_day,
        clinic_time.local_day(now, zone),
        invoice["price_cents"],
        command.price_cents,
    )
    if refusal is not None:
        return refused(*refusal)
    fee_id = command.fee_id or fees[0]
    model = next(row for row in rows if row["fee_id"] == fee_id)
    first = max(row["line_number"] for row in rows) + 1
    shares = rules.session_shares(command.price_cents, command.sessions)
    added = [
        (
            derived_id("line", command.invoice_id, number),
            command.invoice_id,
            number,
            command.patient_id,
            fee_id,
            model["practitioner_ids"],
            model["location_ids"],
            min(row["valid_from"] for row in rows),
            last_day,
            share,
            # Written off like the invoice's own sessions (none for one sold before write-offs).
            model["line_grace_days"],
        )
        for number, share in zip(range(first, first + command.sessions), shares, strict=True)
    ]
    await tx.conn.executemany(
        "INSERT INTO invoice_lines (line_id, invoice_id, line_number, patient_id, fee_id,"
        " practitioner_ids, location_ids, valid_from, valid_until, status, version, share_cents,"
        " grace_days) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'open', 1, $10, $11)",
        added,
    )
    price = invoice["price_cents"] + command.price_cents
    status = InvoiceStatus.PAID if invoice["paid_cents"] >= price else InvoiceStatus.ISSUED
    owed = invoice["owed_cents"] + command.price_cents
    await tx.conn.execute(
        "UPDATE package_invoices SET price_cents = $2, status = $3, owed_cents = $4"
        " WHERE invoice_id = $1",
        command.invoice_id,
        price,
        status.value,
        owed,
    )
    await revenue.enter(
        tx, command.invoice_id, "sold", command.price_cents, now, cause=command.topup_id
    )
    await tx.conn.execute(
        "INSERT INTO invoice_topups (topup_id, invoice_id, sessions, price_cents,"
        " first_line_number, reason, topped_up_by, topped_up_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        command.topup_id,
        command.invoice_id,
        command.sessions,
        command.price_cents,
        first,
        command.reason,
        command.topped_up_by,
        now,
    )
    all_lines = await invoices.lines_of(tx.conn, command.invoice_id)
    new_ids = {row[0] for row in added}
    tx.publish(
        PackageInvoiceToppedUp(
            patient_id=command.patient_id,
            invoice_id=command.invoice_id,
            topup_id=command.topup_id,
            package_id=invoice["package_id"],
            package_name=invoice["package_name"],
            lines=[invoices.to_line(row) for row in all_lines if row["line_id"] in new_ids],
            sessions=command.sessions,
            sold_cents=command.price_cents,
            price_cents=price,
            status=status,
            redeemable=rules.redeemable(
                status, invoice["pay_before_use"], invoice["paid_cents"], price
            ),
            owed_cents=owed,
            accounted_at=now,
            reason=command.reason,
            topped_up_by=command.topped_up_by,
            balance=invoices.balance_of(all_lines, now),
        ),
        message_id=commands.answer_id("topped-up", command.topup_id),
    )
    return None


# --- transfer -------------------------------------------------------------------------------------


async def transfer(tx: Transaction, command: TransferSessions) -> Refusal | None:
    """Move the sessions and say so to both patients. Returns why it was refused, as (field,
    reason), also published as InvoiceCommandRefused; or None."""

    def refused(field: str, reason: str) -> Refusal:
        commands.refuse(tx, command, f"{field}: {reason}")
        return field, reason

    invoice = await invoices.get_invoice(tx.conn, command.invoice_id)
    if invoice is None or invoice["patient_id"] != command.patient_id:
        return refused("invoice_id", f"no package invoice {command.invoice_id} of this patient")
    to_invoice_id = new_invoice_id(command.transfer_id)
    earlier = await tx.conn.fetchval(
        "SELECT from_invoice_id FROM session_transfers WHERE transfer_id = $1",
        command.transfer_id,
    )
    if earlier is not None:
        if earlier != command.invoice_id:
            return refused("transfer_id", f"{command.transfer_id} moved another invoice's sessions")
        # A retried transfer (a new message id, the same transfer): its answers again.
        await tx.resend(commands.answer_id("transferred", command.transfer_id))
        await tx.resend(commands.answer_id("issued", to_invoice_id))
        return None
    # The lines first, in line order, and the invoice's row after them (revenue.take), in the
    # order a session used or forfeited takes them.
    rows = await tx.conn.fetch(
        f"SELECT {invoices.LINE_COLUMNS}, grace_days AS line_grace_days FROM invoice_lines"
        " WHERE invoice_id = $1 ORDER BY line_number FOR UPDATE",
        command.invoice_id,
    )
    # Read again under the lines' lock: a void or refund that committed meanwhile is seen (one
    # still under way waits for these lines, or meets this transfer at the invoice's row, where
    # PostgreSQL picks one to retry).
    invoice = await invoices.get_invoice(tx.conn, command.invoice_id)
    assert invoice is not None
    by_id = {row["line_id"]: row for row in rows}
    open_lines = [line for line in map(invoices.line_of, rows) if line.status == LineStatus.OPEN]
    refusal = transfer_refusal(
        InvoiceStatus(invoice["status"]),
        invoices.is_redeemable(invoice),
        command.patient_id,
        command.to_patient_id,
        len(open_lines),
        command.sessions,
    )
    if refusal is not None:
        return refused(*refusal)
    moved = moving(open_lines, command.sessions)
    now = invoices.moment(tx)
    price = sum(by_id[line.line_id]["share_cents"] for line in moved)
    await create_invoice(tx, invoice, command, to_invoice_id, price, now)
    await tx.conn.executemany(
        "INSERT INTO invoice_lines (line_id, invoice_id, line_number, patient_id, fee_id,"
        " practitioner_ids, location_ids, valid_from, valid_until, status, version, share_cents,"
        " grace_days) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'open', 1, $10, $11)",
        [
            (
                derived_id("line", to_invoice_id, number),
                to_invoice_id,
                number,
                command.to_patient_id,
                line.fee_id,
                by_id[line.line_id]["practitioner_ids"],
                by_id[line.line_id]["location_ids"],
                line.valid_from,
                line.valid_until,
                by_id[line.line_id]["share_cents"],
                by_id[line.line_id]["line_grace_days"],
            )
            for number, line in enumerate(moved, start=1)
        ],
    )
    taken_in_all, owed = 0, invoice["owed_cents"]
    for number, line in enumerate(moved, start=1):
        to_line_id = derived_id("line", to_invoice_id, number)
        changed = lines.applied(lines.transfer(line, to_line_id))
        saved = await tx.conn.fetchval(
            "UPDATE invoice_lines SET status = 'transferred', transferred_to = $2, note = NULL,"
            " version = $3 WHERE line_id = $1 AND version = $3 - 1 AND status = 'open'"
            " RETURNING 1",
            line.line_id,
            to_line_id,
            changed.line.version,
        )
        if not saved:
            raise invoices.LineChanged(f"line {line.line_id} changed while it was locked")
        story = history.entry(
            tx, line, changed, reason=command.reason, by=command.transferred_by, at=now
        )
        await history.write(tx.conn, changed.line, story)
        # The share leaves what the old invoice owes and the new one owes the same cents.
        taken, owed = await revenue.take(
            tx,
            command.invoice_id,
            "transferred_out",
            by_id[line.line_id]["share_cents"],
            now,
            cause=line.line_id,
            line_id=line.line_id,
        )
        await revenue.enter(
            tx, to_invoice_id, "transferred_in", taken, now, cause=to_line_id, line_id=to_line_id
        )
        taken_in_all += taken
    await tx.conn.execute(
        "UPDATE package_invoices SET owed_cents = $2 WHERE invoice_id = $1",
        to_invoice_id,
        taken_in_all,
    )
    await tx.conn.execute(
        "INSERT INTO session_transfers (transfer_id, from_invoice_id, to_invoice_id,"
        " to_patient_id, sessions, transferred_cents, reason, transferred_by, transferred_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        command.transfer_id,
        command.invoice_id,
        to_invoice_id,
        command.to_patient_id,
        command.sessions,
        taken_in_all,
        command.reason,
        command.transferred_by,
        now,
    )
    after = await invoices.lines_of(tx.conn, command.invoice_id)
    moved_ids = {line.line_id for line in moved}
    tx.publish(
        SessionsTransferred(
            patient_id=command.patient_id,
            invoice_id=command.invoice_id,
            transfer_id=command.transfer_id,
            package_id=invoice["package_id"],
            package_name=invoice["package_name"],
            to_patient_id=command.to_patient_id,
            to_invoice_id=to_invoice_id,
            lines=[invoices.to_line(row) for row in after if row["line_id"] in moved_ids],
            sessions=len(moved),
            transferred_cents=taken_in_all,
            owed_cents=owed,
            accounted_at=now,
            reason=command.reason,
            transferred_by=command.transferred_by,
            balance=invoices.balance_of(after, now),
        ),
        message_id=commands.answer_id("transferred", command.transfer_id),
    )
    tx.publish(
        PackageInvoiceIssued(
            patient_id=command.to_patient_id,
            invoice_id=to_invoice_id,
            invoice=await invoices.snapshot(tx.conn, to_invoice_id, now),
            issued_by=command.transferred_by,
            transferred_from=command.invoice_id,
        ),
        message_id=commands.answer_id("issued", to_invoice_id),
    )
    return None


async def create_invoice(
    tx: Transaction,
    source: asyncpg.Record,
    command: TransferSessions,
    invoice_id: UUID,
    price_cents: int,
    now: datetime,
) -> None:
    """The recipient's invoice: the source's package and terms, sold where the source was (its
    validity days are that location's), its price the moved sessions' shares, paid by the
    source. What it owes is set once the shares have been taken off the source."""
    await tx.conn.execute(
        "INSERT INTO package_invoices (invoice_id, patient_id, package_id, package_name, channel,"
        " issued_at, issued_by, status, price_cents, paid_cents, currency, pay_before_use,"
        " late_cancel_policy, location_id, time_zone, owed_cents, grace_days,"
        " expiry_warning_days, next_reminder_on, transferred_from) VALUES ($1, $2, $3, $4,"
        " 'staff', $5, $6, 'paid', $7, $7, $8, $9, $10, $11, $12, 0, $13, $14, $15, $16)",
        invoice_id,
        command.to_patient_id,
        source["package_id"],
        source["package_name"],
        now,
        command.transferred_by,
        price_cents,
        source["currency"],
        source["pay_before_use"],
        source["late_cancel_policy"],
        source["location_id"],
        source["time_zone"],
        source["grace_days"],
        source["expiry_warning_days"],
        source["next_reminder_on"],
        command.invoice_id,
    )


# --- HTTP -----------------------------------------------------------------------------------------


class TopUp(BaseModel):
    """Staff add sessions to a package invoice at a price (R18)."""

    sessions: int = Field(ge=1, le=100, description="How many sessions to add.")
    price_cents: Cents = Field(description="The price of the added sessions together (0: free).")
    fee_id: FeeId | None = Field(
        default=None, description="Their fee: needed only when the invoice has several."
    )
    reason: Reason | None = Field(default=None, description="Why, kept with the change.")
    topup_id: UUID = Field(default_factory=uuid4, description="Send your own to retry safely.")
    topped_up_by: Actor | None = Field(
        default=None,
        description="Who tops up: the verified caller's staff id (leave it out; another value is "
        "refused).",
    )


class Transfer(BaseModel):
    """Staff move unbooked sessions to a new invoice of another patient (R18)."""

    to_patient_id: PatientId = Field(description="Who receives the sessions.")
    sessions: int = Field(ge=1, le=100, description="How many unbooked sessions to move.")
    reason: Reason = Field(description="Why, in the staff member's words (kept with the change).")
    transfer_id: UUID = Field(
        default_factory=uuid4,
        description="Send your own to retry safely; it names the new invoice.",
    )
    transferred_by: Actor | None = Field(
        default=None,
        description="Who transfers: the verified caller's staff id (leave it out; another value "
        "is refused).",
    )


def register_transfer_http(service: Service) -> None:
    @service.http.post(
        "/invoices/{invoice_id}/top-ups",
        dependencies=[needs("sell")],
        status_code=201,
        tags=["package invoices"],
        response_model=InvoiceShown,
        responses=NOT_FOUND,
    )
    async def top_up_invoice(
        invoice_id: UUID, body: TopUp, request: Request, scope: CallerScope
    ) -> dict[str, Any]:
        """Add ``sessions`` to the invoice for ``price_cents`` (together): new lines for its fee,
        restrictions and current last day, each with its share of that price; the invoice's
        price and what it owes grow by it (sold, docs/revenue.md), and waiting appointments of
        the patient that now fit are linked (R12). Recorded as the verified caller's
        (``topped_up_by``) with the reason. 422 naming the field: a void or refunded invoice,
        one whose last day has passed, a fee not on the invoice."""
        topped_up_by = acting(caller(request), body.topped_up_by, ["body", "topped_up_by"])
        async with staff_change(service, scope, invoice_id) as (tx, invoice):
            patient = invoice["patient_id"]
            refused = await top_up(
                tx,
                TopUpPackageInvoice(
                    patient_id=patient,
                    invoice_id=invoice_id,
                    topup_id=body.topup_id,
                    sessions=body.sessions,
                    price_cents=body.price_cents,
                    fee_id=body.fee_id,
                    reason=body.reason,
                    topped_up_by=topped_up_by,
                ),
            )
            if refused:
                raise refused_over_http(refused)
            return await shown_with_notes(tx.conn, invoice_id)

    @service.http.post(
        "/invoices/{invoice_id}/transfers",
        dependencies=[needs("sell")],
        status_code=201,
        tags=["package invoices"],
        response_model=InvoiceShown,
        responses=NOT_FOUND,
    )
    async def transfer_from_invoice(
        invoice_id: UUID, body: Transfer, request: Request, scope: CallerScope
    ) -> dict[str, Any]:
        """Move ``sessions`` unbooked sessions of the invoice to a new invoice of
        ``to_patient_id`` (answered: that new invoice). The old lines are never redeemable
        again; the new invoice has the same package, restrictions, validity and shares, paid by
        the old one, which owes those shares less (docs/revenue.md); the recipient's waiting
        appointments that fit are linked (R12). Both patients must be seen at the caller's
        clinics (403). Recorded as the verified caller's (``transferred_by``) with the reason.
        422 naming the field: a void, refunded or unpaid invoice, the same patient, fewer
        unbooked sessions than asked."""
        transferred_by = acting(caller(request), body.transferred_by, ["body", "transferred_by"])
        async with staff_change(service, scope, invoice_id) as (tx, invoice):
            patient = invoice["patient_id"]
            require_patient(
                scope, body.to_patient_id, await invoices.seen_at(tx.conn, body.to_patient_id)
            )
            refused = await transfer(
                tx,
                TransferSessions(
                    patient_id=patient,
                    invoice_id=invoice_id,
                    transfer_id=body.transfer_id,
                    to_patient_id=body.to_patient_id,
                    sessions=body.sessions,
                    reason=body.reason,
                    transferred_by=transferred_by,
                ),
            )
            if refused:
                raise refused_over_http(refused)
            return await shown_with_notes(tx.conn, new_invoice_id(body.transfer_id))
