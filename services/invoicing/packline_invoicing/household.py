"""A package's household (R18, issue #22 point 4; docs/household.md): the family members whose
appointments may redeem an invoice's sessions besides its patient.

- **At sale**: ``IssuePackageInvoice.shared_with`` (or ``shared_with`` in ``POST /invoices``).
- **Later**: ``SharePackageInvoice`` (topic) or ``PUT /invoices/{invoice_id}/household`` (staff)
  replaces the whole list. The change is recorded (who, why, before and after, in
  ``invoice_sharings``) and announced by ``PackageInvoiceShared`` with who was added and who
  removed; a retry (the same ``sharing_id``) is answered again and applies nothing twice. Refused,
  naming the field (422 over HTTP, ``InvoiceCommandRefused`` on the topic): an unknown invoice, a
  void or refunded one, a list naming the invoice's own patient or someone twice.
- **Links**: a line may redeem an appointment of the invoice's patient or of a member of its
  household at the moment of the link (``lines.link_refusal``), under the same rules (R6, R11).
  Removing a member ends new links only: an appointment already linked keeps its session (and
  keeps it when it moves, R10). Booking from an invoice line (R3) stays the invoice's patient's.

Every ``PackageInvoice`` invoicing publishes carries ``shared_with`` (invoices.snapshot)."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

from fastapi import Request
from packline_contracts.envelope import Envelope
from packline_contracts.invoices import (
    Household,
    InvoiceStatus,
    PackageInvoiceShared,
    SharePackageInvoice,
    check_household,
)
from packline_contracts.types import Actor, Reason
from packline_core.auth import acting, caller, needs
from packline_core.consumer import MessageConsumer
from packline_core.http_errors import invalid
from packline_core.openapi import NOT_FOUND
from packline_core.outbox import Transaction
from packline_core.scope import CallerScope, require_patient
from packline_core.service import Service
from pydantic import BaseModel, Field

from packline_invoicing import commands, invoices
from packline_invoicing.http import refused_over_http, shown_with_notes, staff_change
from packline_invoicing.responses import InvoiceShown

Refusal = tuple[str, str]


# --- the rules, without I/O -----------------------------------------------------------------------


def household_change(previous: list[str], shared_with: list[str]) -> tuple[list[str], list[str]]:
    """Who a new household list adds (in its order) and removes (in the old list's order)."""
    before, after = set(previous), set(shared_with)
    return (
        [member for member in shared_with if member not in before],
        [member for member in previous if member not in after],
    )


def sharing_refusal(status: InvoiceStatus) -> Refusal | None:
    """Why an invoice's household cannot change now, as (field, reason), or None."""
    if status in (InvoiceStatus.VOID, InvoiceStatus.REFUNDED):
        return "invoice_id", f"the invoice is {status.value}: its household cannot change"
    return None


def household_refusal(patient_id: str, shared_with: list[str]) -> Refusal | None:
    """The contracts' rule of a household (each member once, never the invoice's own patient),
    as (field, reason), or None."""
    try:
        check_household(patient_id, shared_with)
    except ValueError as error:
        field, _, reason = str(error).partition(": ")
        return field, reason
    return None


# --- the command ----------------------------------------------------------------------------------


def register_household_commands(consumer: MessageConsumer) -> None:
    consumer.handles(SharePackageInvoice)(share_package_invoice)


async def share_package_invoice(tx: Transaction, envelope: Envelope[SharePackageInvoice]) -> None:
    await share(tx, envelope.payload)


async def share(tx: Transaction, command: SharePackageInvoice) -> Refusal | None:
    """Make ``command.shared_with`` the invoice's household and say so. Returns why it was
    refused, as (field, reason), also published as InvoiceCommandRefused; or None."""

    def refused(field: str, reason: str) -> Refusal:
        commands.refuse(tx, command, f"{field}: {reason}")
        return field, reason

    # The invoice's row only (no line): changes of one household apply one at a time. A link
    # reads the household without locking the row, so it sees it as it was before or after.
    invoice = await invoices.get_invoice(tx.conn, command.invoice_id, for_update=True)
    if invoice is None or invoice["patient_id"] != command.patient_id:
        return refused("invoice_id", f"no package invoice {command.invoice_id} of this patient")
    earlier = await tx.conn.fetchval(
        "SELECT invoice_id FROM invoice_sharings WHERE sharing_id = $1", command.sharing_id
    )
    if earlier is not None:
        if earlier != command.invoice_id:
            why = f"{command.sharing_id} changed another invoice's household"
            return refused("sharing_id", why)
        # A retried change (a new message id, the same sharing): its answer again.
        await tx.resend(commands.answer_id("shared", command.sharing_id))
        return None
    refusal = sharing_refusal(InvoiceStatus(invoice["status"])) or household_refusal(
        invoice["patient_id"], command.shared_with
    )
    if refusal is not None:
        return refused(*refusal)
    previous = list(invoice["shared_with"])
    added, removed = household_change(previous, command.shared_with)
    now = invoices.moment(tx)
    await tx.conn.execute(
        "UPDATE package_invoices SET shared_with = $2 WHERE invoice_id = $1",
        command.invoice_id,
        command.shared_with,
    )
    await tx.conn.execute(
        "INSERT INTO invoice_sharings (sharing_id, invoice_id, previous, shared_with, added,"
        " removed, reason, shared_by, shared_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        command.sharing_id,
        command.invoice_id,
        previous,
        command.shared_with,
        added,
        removed,
        command.reason,
        command.shared_by,
        now,
    )
    tx.publish(
        PackageInvoiceShared(
            patient_id=command.patient_id,
            invoice_id=command.invoice_id,
            sharing_id=command.sharing_id,
            shared_with=command.shared_with,
            added=added,
            removed=removed,
            reason=command.reason,
            shared_by=command.shared_by,
            shared_at=now,
        ),
        message_id=commands.answer_id("shared", command.sharing_id),
    )
    return None


# --- HTTP -----------------------------------------------------------------------------------------


class Sharing(BaseModel):
    """Staff name the family members who may use a package invoice's sessions too (R18)."""

    shared_with: Household = Field(
        description="The whole household from now on (patient ids, each once, not the "
        "invoice's own patient; empty: shared with nobody). Removing a member ends new links "
        "only: an appointment already linked keeps its session."
    )
    reason: Reason | None = Field(default=None, description="Why, kept with the change.")
    sharing_id: UUID = Field(default_factory=uuid4, description="Send your own to retry safely.")
    shared_by: Actor | None = Field(
        default=None,
        description="Who changes it: the verified caller's staff id (leave it out; another value "
        "is refused).",
    )


def register_household_http(service: Service) -> None:
    @service.http.put(
        "/invoices/{invoice_id}/household",
        dependencies=[needs("sell")],
        tags=["package invoices"],
        response_model=InvoiceShown,
        responses=NOT_FOUND,
    )
    async def share_invoice(
        invoice_id: UUID, body: Sharing, request: Request, scope: CallerScope
    ) -> dict[str, Any]:
        """Make ``shared_with`` the invoice's household: their appointments may redeem its
        sessions under the same rules as the patient's (R6, R11), and those waiting that now
        fit are linked (R12). Answered: the invoice, with ``shared_with``. Recorded as the
        verified caller's (``shared_by``) with the reason; the same ``sharing_id`` again
        changes nothing more. 403: the invoice's patient, or a member added, seen only at other
        clinics. 422 naming the field: a void or refunded invoice, a list naming the invoice's
        own patient or someone twice."""
        shared_by = acting(caller(request), body.shared_by, ["body", "shared_by"])
        async with staff_change(service, scope, invoice_id) as (tx, invoice):
            patient = invoice["patient_id"]
            refusal = household_refusal(patient, body.shared_with)
            if refusal is not None:
                raise invalid(["body", refusal[0]], refusal[1])
            added, _ = household_change(list(invoice["shared_with"]), body.shared_with)
            for member in added:
                require_patient(scope, member, await invoices.seen_at(tx.conn, member))
            refused = await share(
                tx,
                SharePackageInvoice(
                    patient_id=patient,
                    invoice_id=invoice_id,
                    sharing_id=body.sharing_id,
                    shared_with=body.shared_with,
                    reason=body.reason,
                    shared_by=shared_by,
                ),
            )
            if refused:
                raise refused_over_http(refused)
            return await shown_with_notes(tx.conn, invoice_id)
