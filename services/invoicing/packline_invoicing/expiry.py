"""A package's whole life at its end (R18, issue #22 point 1): reminders before expiry, staff
extending an invoice's validity, and the write-off of sessions still unbooked when validity and
the package's grace have ended (docs/revenue.md).

- **Reminders**: an invoice with unbooked (open) sessions whose last valid day is within one of
  its package's ``expiry_warning_days`` (the selling location's local days, R15) is announced
  with ``PackageExpiringSoon``, once per invoice, expiry date and threshold.
- **Write-off**: when the local day after ``valid_until + grace_days`` begins, the invoice's open
  lines become ``expired`` for good and ``SessionsExpired`` carries them and their shares, taken
  off what the invoice owes as ``expired`` revenue. Lines holding an appointment or a booking
  request keep it (they were booked in time); one released later is written off by the next
  sweep. Validity (R6) does not grow with the grace: the grace is time to extend before the
  sessions are lost.
- **Extension**: ``ExtendPackageInvoice`` (topic) or ``PUT /invoices/{invoice_id}/validity``
  (staff): every line not used, forfeited or written off gets the new last day, the change is
  recorded (who, why, from and to) and announced by ``PackageInvoiceExtended``; the matcher then
  links the patient's waiting appointments that now fit (R12).

The sweep runs in every replica with an injected clock (I10): each invoice is handled in its own
transaction, its open lines (write-off) or its row (reminder) taken with ``FOR UPDATE SKIP
LOCKED`` so one replica does it, and every message id is derived from what it announces, so a
sweep repeated publishes nothing new."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import structlog
from fastapi import Request
from packline_contracts import clinic_time
from packline_contracts.envelope import Envelope
from packline_contracts.ids import derived_id
from packline_contracts.invoices import (
    ExtendPackageInvoice,
    InvoiceStatus,
    LineStatus,
    PackageExpiringSoon,
    PackageInvoiceExtended,
    SessionsExpired,
)
from packline_contracts.types import Actor, Day, Reason
from packline_core.auth import acting, caller, needs
from packline_core.consumer import MessageConsumer
from packline_core.openapi import NOT_FOUND
from packline_core.outbox import Transaction
from packline_core.scope import CallerScope
from packline_core.service import Service
from pydantic import BaseModel, Field

from packline_invoicing import commands, history, invoices, lines, revenue, rules
from packline_invoicing.booking import Clock, utc_now
from packline_invoicing.http import refused_over_http, shown_with_notes, staff_change
from packline_invoicing.responses import InvoiceShown
from packline_invoicing.sweep import Sweep

log = structlog.get_logger(__name__)


# --- extension ------------------------------------------------------------------------------------


def register_expiry_commands(consumer: MessageConsumer) -> None:
    consumer.handles(ExtendPackageInvoice)(extend_package_invoice)


async def extend_package_invoice(tx: Transaction, envelope: Envelope[ExtendPackageInvoice]) -> None:
    await extend(tx, envelope.payload)


async def extend(tx: Transaction, command: ExtendPackageInvoice) -> tuple[str, str] | None:
    """Give every line of the invoice not used, forfeited or written off the new last day, and
    say so. Returns why it was refused, as (field, reason), also published as
    InvoiceCommandRefused; or None."""

    def refused(field: str, reason: str) -> tuple[str, str]:
        commands.refuse(tx, command, f"{field}: {reason}")
        return field, reason

    # Only the lines are locked (in line order, as every writer of lines takes them): the
    # invoice's row is not, so a session used meanwhile (line, then invoice) cannot deadlock with
    # this. A void racing it finds the lines extended, which a void invoice ignores.
    invoice = await invoices.get_invoice(tx.conn, command.invoice_id)
    if invoice is None or invoice["patient_id"] != command.patient_id:
        return refused("invoice_id", f"no package invoice {command.invoice_id} of this patient")
    earlier = await tx.conn.fetchval(
        "SELECT invoice_id FROM invoice_extensions WHERE extension_id = $1", command.extension_id
    )
    if earlier is not None:
        if earlier != command.invoice_id:
            return refused("extension_id", f"{command.extension_id} extended another invoice")
        # A retried extension (a new message id, the same extension): its answer again.
        await tx.resend(commands.answer_id("extended", command.extension_id))
        return None
    rows = await invoices.lines_of(tx.conn, command.invoice_id, for_update=True)
    all_lines = [invoices.line_of(row) for row in rows]
    extendable = [line for line in all_lines if line.status not in lines.FINAL]
    current = max(line.valid_until for line in extendable or all_lines)
    refusal = rules.extension_refusal(
        InvoiceStatus(invoice["status"]), current, command.valid_until, len(extendable)
    )
    if refusal is not None:
        return refused(*refusal)
    extended = []
    for line in extendable:
        outcome = lines.extend(line, command.valid_until)
        if isinstance(outcome, lines.Changed):
            story = history.entry(tx, line, outcome, reason=command.reason, by=command.extended_by)
            await invoices.save_line(tx.conn, outcome.line, story=story)
            extended.append(line.line_id)
    # The new last day has reminders of its own.
    await tx.conn.execute(
        "UPDATE package_invoices SET next_reminder_on = $2 WHERE invoice_id = $1",
        command.invoice_id,
        rules.first_reminder_on(command.valid_until, invoice["expiry_warning_days"]),
    )
    now = invoices.moment(tx)
    await tx.conn.execute(
        "INSERT INTO invoice_extensions (extension_id, invoice_id, previous_valid_until,"
        " valid_until, reason, extended_by, extended_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        command.extension_id,
        command.invoice_id,
        current,
        command.valid_until,
        command.reason,
        command.extended_by,
        now,
    )
    tx.publish(
        PackageInvoiceExtended(
            patient_id=command.patient_id,
            invoice_id=command.invoice_id,
            extension_id=command.extension_id,
            previous_valid_until=current,
            valid_until=command.valid_until,
            reason=command.reason,
            extended_by=command.extended_by,
            line_ids=extended,
            balance=await invoices.balance(tx.conn, command.invoice_id, now),
        ),
        message_id=commands.answer_id("extended", command.extension_id),
    )
    return None


class Extension(BaseModel):
    """Staff extend a package invoice's validity (R18)."""

    valid_until: Day = Field(description="The new last day (the selling location's local day).")
    reason: Reason = Field(description="Why, in the staff member's words (kept with the change).")
    extension_id: UUID = Field(default_factory=uuid4, description="Send your own to retry safely.")
    extended_by: Actor | None = Field(
        default=None,
        description="Who extends: the verified caller's staff id (leave it out; another value is "
        "refused).",
    )


def register_expiry_http(service: Service) -> None:
    @service.http.put(
        "/invoices/{invoice_id}/validity",
        dependencies=[needs("sell")],
        tags=["package invoices"],
        response_model=InvoiceShown,
        responses=NOT_FOUND,
    )
    async def extend_validity(
        invoice_id: UUID, extension: Extension, request: Request, scope: CallerScope
    ) -> dict[str, Any]:
        """Extend the invoice's validity to ``valid_until``: every session not used, forfeited or
        written off can then be redeemed until that day, and appointments waiting for it are
        linked (R12). Recorded as the verified caller's (``extended_by``) with the reason. 422
        naming the field: a day not after the current last one, a void or refunded invoice, or
        one with no session left to extend."""
        extended_by = acting(caller(request), extension.extended_by, ["body", "extended_by"])
        async with staff_change(service, scope, invoice_id) as (tx, invoice):
            patient = invoice["patient_id"]
            refused = await extend(
                tx,
                ExtendPackageInvoice(
                    patient_id=patient,
                    invoice_id=invoice_id,
                    extension_id=extension.extension_id,
                    valid_until=extension.valid_until,
                    reason=extension.reason,
                    extended_by=extended_by,
                ),
            )
            if refused:
                raise refused_over_http(refused)
            return await shown_with_notes(tx.conn, invoice_id)


# --- the sweep: reminders and write-offs ---------------------------------------------------------

# Invoices with open lines whose grace has ended on the selling location's day. The bound (no
# local day is more than a day ahead of UTC's) lets the partial index of open lines by
# writes_off_after answer; the exact rule is rules.write_off_due, checked again under the
# invoice's lock. A void or refunded invoice's open lines expire too (it owes nothing: 0 cents),
# so that no line waits in the index for ever.
WRITE_OFF_CANDIDATES = (
    "SELECT DISTINCT l.invoice_id FROM invoice_lines l JOIN package_invoices i USING (invoice_id)"
    " WHERE l.status = 'open' AND l.writes_off_after < $2::date"
    " AND l.writes_off_after < ($1::timestamptz AT TIME ZONE i.time_zone)::date"
    " LIMIT $3"
)
# Invoices whose next reminder's day has come (by the index of that day, ordered so the oldest
# come first); rules.warning_due decides under the invoice's lock, in its location's day.
REMINDER_CANDIDATES = (
    "SELECT invoice_id FROM package_invoices WHERE next_reminder_on <= $1::date"
    " ORDER BY next_reminder_on LIMIT $2"
)
# Reminders take the invoice's row, so one replica sends each (the warnings' key and the derived
# message id make a second one harmless anyway).
LOCK_INVOICE = (
    "SELECT invoice_id, patient_id, package_id, package_name, status, time_zone, grace_days,"
    " expiry_warning_days, next_reminder_on FROM package_invoices WHERE invoice_id = $1"
    " FOR UPDATE SKIP LOCKED"
)


class ExpirySweep(Sweep):
    """Reminds of expiry and writes off what expired, every ``interval`` seconds, at the time
    its clock says."""

    BATCH = 100
    name, task = "expiry sweep", "expiry-sweep"

    def __init__(self, service: Service, interval: float, clock: Clock = utc_now) -> None:
        super().__init__(service, interval)
        self.clock = clock
        self.more = False  # the last round found a full batch: another may follow at once

    async def round(self) -> bool:
        await self.sweep_once()
        return self.more

    async def sweep_once(self) -> tuple[int, int]:
        """Write off what is due, then send the reminders due, at this clock's now: returns for
        how many invoices it wrote sessions off and sent a reminder."""
        now = self.clock()
        bound = now.astimezone(UTC).date() + timedelta(days=1)
        async with self.service.pool.acquire() as conn:
            due = await conn.fetch(WRITE_OFF_CANDIDATES, now, bound, self.BATCH)
        written_off = 0
        for row in due:
            async with self.service.transaction() as tx:
                written_off += await write_off(tx, row["invoice_id"], now)
        async with self.service.pool.acquire() as conn:
            near = await conn.fetch(REMINDER_CANDIDATES, bound, self.BATCH)
        reminded = moved_on = 0
        for row in near:
            async with self.service.transaction() as tx:
                sent, moved = await remind(tx, row["invoice_id"], now)
            reminded += sent
            moved_on += moved
        if written_off or reminded:
            log.info("expiry sweep", written_off=written_off, reminded=reminded)
        # Another round at once only when a full batch was found and changed something (a
        # batch of invoices whose day has not come yet in their zone waits for the next one).
        self.more = (len(due) == self.BATCH and written_off > 0) or (
            len(near) == self.BATCH and moved_on > 0
        )
        return written_off, reminded


async def write_off(tx: Transaction, invoice_id: UUID, now: datetime) -> int:
    """The invoice's open lines whose grace has ended at ``now`` become expired, their shares
    leave what is owed, and SessionsExpired says so. 1 if it wrote any off, else 0 (another
    replica has its lines, or nothing is due any more).

    The open lines are locked first and the invoice's row after them (by revenue.take), in the
    order a session used or forfeited takes them; a line locked by someone else (being linked
    right now) is skipped, and written off by a later sweep if it is still open then."""
    invoice = await tx.conn.fetchrow(
        "SELECT patient_id, package_id, package_name, time_zone, grace_days"
        " FROM package_invoices WHERE invoice_id = $1",
        invoice_id,
    )
    if invoice is None:
        return 0
    zone, grace = invoice["time_zone"], invoice["grace_days"]
    today = clinic_time.local_day(now, zone)
    rows = await tx.conn.fetch(
        f"SELECT {invoices.LINE_COLUMNS}, grace_days AS line_grace_days FROM invoice_lines"
        " WHERE invoice_id = $1 AND status = 'open' ORDER BY line_number"
        " FOR UPDATE SKIP LOCKED",
        invoice_id,
    )
    due = [
        (invoices.line_of(row), row["share_cents"])
        for row in rows
        # Sold before write-offs existed (no grace on the line): never written off on its own.
        if row["line_grace_days"] is not None
        and rules.write_off_due(row["valid_until"], row["line_grace_days"], today)
    ]
    if not due:
        return 0
    for line, _ in due:
        expired = lines.applied(lines.expire(line, line.valid_until))
        # At the write-off's own moment (the day after validity and grace), like its revenue.
        at = rules.write_off_at(line.valid_until, grace, zone)
        story = history.entry(tx, line, expired, at=at)
        await invoices.save_line(tx.conn, expired.line, story=story)
    expired_on = max(line.valid_until for line, _ in due)
    at = rules.write_off_at(expired_on, grace, zone)
    taken, owed = await revenue.expired(
        tx, invoice_id, [(line.line_id, share) for line, share in due], at
    )
    ids = sorted(line.line_id for line, _ in due)
    now_lines = {row["line_id"]: row for row in await invoices.lines_of(tx.conn, invoice_id)}
    tx.publish(
        SessionsExpired(
            patient_id=invoice["patient_id"],
            invoice_id=invoice_id,
            package_id=invoice["package_id"],
            package_name=invoice["package_name"],
            expired_on=expired_on,
            grace_days=grace,
            lines=[invoices.to_line(now_lines[line.line_id]) for line, _ in due],  # line order
            sessions=len(ids),
            expired_cents=taken,
            owed_cents=owed,
            accounted_at=at,
            balance=invoices.balance_of(list(now_lines.values()), now),
        ),
        message_id=derived_id("sessions-expired", invoice_id, *ids),
    )
    return 1


async def remind(tx: Transaction, invoice_id: UUID, now: datetime) -> tuple[int, int]:
    """PackageExpiringSoon for the nearest threshold crossed and not yet announced for the
    invoice's current last day, if sessions are unbooked; then the day of its next reminder.
    Returns (1 if one was sent, 1 if the invoice's next reminder moved)."""
    invoice = await tx.conn.fetchrow(LOCK_INVOICE, invoice_id)
    if invoice is None:
        return 0, 0  # another replica has it
    today = clinic_time.local_day(now, invoice["time_zone"])
    if invoice["next_reminder_on"] is None or today < invoice["next_reminder_on"]:
        return 0, 0  # its day has not come yet in the selling location's zone
    rows = await invoices.lines_of(tx.conn, invoice_id)
    alive = [row["valid_until"] for row in rows if LineStatus(row["status"]) not in lines.FINAL]
    sent, following = 0, None
    if alive and invoice["status"] not in ("void", "refunded"):
        expires_on = max(alive)
        days_left = (expires_on - today).days
        if any(row["status"] == LineStatus.OPEN.value for row in rows):
            sent = await announce(tx, invoice, rows, expires_on, days_left, now)
        # Sent, or skipped with every session booked then: on to the next threshold ahead (none
        # once the last day has passed, or all spent, void or refunded).
        following = rules.next_reminder_on(expires_on, invoice["expiry_warning_days"], days_left)
    await tx.conn.execute(
        "UPDATE package_invoices SET next_reminder_on = $2 WHERE invoice_id = $1",
        invoice_id,
        following,
    )
    return sent, 1


async def announce(
    tx: Transaction,
    invoice: Any,
    rows: list[Any],
    expires_on: date,
    days_left: int,
    now: datetime,
) -> int:
    """Publish the reminder due ``days_left`` days before ``expires_on``, if one is; 1 if so."""
    warned = await tx.conn.fetch(
        "SELECT threshold_days FROM expiry_warnings WHERE invoice_id = $1 AND expires_on = $2",
        invoice["invoice_id"],
        expires_on,
    )
    due = rules.warning_due(
        invoice["expiry_warning_days"], [row["threshold_days"] for row in warned], days_left
    )
    if due is None:
        return 0
    threshold, settled = due
    await tx.conn.executemany(
        "INSERT INTO expiry_warnings (invoice_id, expires_on, threshold_days, warned_at)"
        " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        [(invoice["invoice_id"], expires_on, days, now) for days in settled],
    )
    tx.publish(
        PackageExpiringSoon(
            patient_id=invoice["patient_id"],
            invoice_id=invoice["invoice_id"],
            package_id=invoice["package_id"],
            package_name=invoice["package_name"],
            expires_on=expires_on,
            days_left=days_left,
            threshold_days=threshold,
            written_off_after=rules.written_off_after(expires_on, invoice["grace_days"]),
            unbooked=sum(row["status"] == LineStatus.OPEN.value for row in rows),
            balance=invoices.balance_of(rows, now),
        ),
        message_id=derived_id("expiring-soon", invoice["invoice_id"], expires_on, threshold),
    )
    return 1


def register_expiry_sweep(
    service: Service, interval_seconds: float, clock: Clock = utc_now
) -> ExpirySweep:
    sweep = ExpirySweep(service, interval_seconds, clock)
    service.on_started(sweep.start)
    service.on_stopping(sweep.stop)
    return sweep
