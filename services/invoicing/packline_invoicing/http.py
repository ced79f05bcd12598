"""Invoicing's HTTP API for staff: sell a package, and read package invoices with their lines
("booked appointment date or Unassigned") and balances (R14)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal
from uuid import UUID, uuid4

from fastapi import HTTPException, Path, Query, Request, Response
from packline_contracts import clinic_time, wording
from packline_contracts.catalogue import Package
from packline_contracts.invoices import (
    Household,
    IssuePackageInvoice,
    PackageInvoice,
    PurchaseChannel,
    check_household,
)
from packline_contracts.types import (
    MAX_INT32,
    Actor,
    LocationId,
    PackageId,
    PatientId,
    Restriction,
)
from packline_core.auth import acting, caller, needs
from packline_core.http_errors import invalid
from packline_core.links import register_links
from packline_core.openapi import NOT_FOUND
from packline_core.outbox import Transaction
from packline_core.paging import Cursor, Limit, instant_of, page, read_cursor
from packline_core.scope import CallerScope, Scope, require_location, require_patient
from packline_core.service import Service
from pydantic import BaseModel, Field

from packline_invoicing import commands, history, invoices, report, revenue
from packline_invoicing.responses import InvoiceShown, LineHistoryEntry


class Sale(BaseModel):
    """Staff sell a package to a patient (R2)."""

    patient_id: PatientId
    package_id: PackageId
    issued_by: Actor | None = Field(
        default=None,
        description="Who sells: the verified caller's staff id (leave it out; another value is "
        "refused).",
    )
    invoice_id: UUID = Field(default_factory=uuid4, description="Send your own to retry safely.")
    practitioners: Restriction | None = None
    locations: Restriction | None = None
    location_id: LocationId | None = Field(
        default=None,
        description="Where it is sold: 'N days from purchase' counts that location's local days "
        "(R15). Without it, the only location the invoice allows, else UTC days.",
    )
    shared_with: Household = Field(
        default_factory=list,
        description="The household (R18): family members whose appointments may redeem its "
        "sessions too (each once, not the patient; each seen at your clinics).",
    )


def register_http(service: Service) -> None:
    http = service.http
    register_links(
        service,
        "SELECT appointment_id, invoice_id, line_id, status AS state FROM invoice_lines"
        " WHERE status IN ('linked', 'used', 'forfeited')"
        # Always so for these statuses (a CHECK says so), and it lets the pages walk the
        # partial index of lines by appointment instead of sorting every line (issue #20).
        " AND appointment_id IS NOT NULL",
        "Every line holding an appointment: the authority for packline-admin reconcile.",
    )

    @http.post(
        "/invoices",
        dependencies=[needs("sell")],
        status_code=201,
        tags=["package invoices"],
        response_model=InvoiceShown,
    )
    async def sell_package(sale: Sale, request: Request, scope: CallerScope) -> dict[str, Any]:
        """Sell a package to a patient. A caller limited to some clinics sells at one of them
        (``location_id``, by default their only clinic), to a patient seen at one of them."""
        issued_by = acting(caller(request), sale.issued_by, ["body", "issued_by"])
        location_id = selling_location(scope, sale.location_id)
        try:
            check_household(sale.patient_id, sale.shared_with)
        except ValueError as error:
            raise invalid(["body", "shared_with"], str(error).partition(": ")[2]) from None
        command = IssuePackageInvoice(
            patient_id=sale.patient_id,
            invoice_id=sale.invoice_id,
            package_id=sale.package_id,
            channel=PurchaseChannel.STAFF,
            issued_by=issued_by,
            issued_at=datetime.now(UTC),
            practitioners=sale.practitioners,
            locations=sale.locations,
            location_id=location_id,
            shared_with=sale.shared_with,
        )
        async with service.transaction() as tx:
            require_patient(
                scope, sale.patient_id, await invoices.seen_at(tx.conn, sale.patient_id)
            )
            for member in sale.shared_with:
                require_patient(scope, member, await invoices.seen_at(tx.conn, member))
            refused = await commands.issue(tx, command)
            if refused:
                field, reason = refused
                raise invalid(["body", field], reason)
            invoice = await invoices.snapshot(tx.conn, sale.invoice_id, command.issued_at)
            number = await invoice_number(tx.conn, sale.invoice_id)
        return shown(invoice, number=number)

    @http.get(
        "/invoices/{invoice_id}",
        dependencies=[needs("read invoices")],
        tags=["package invoices"],
        response_model=InvoiceShown,
        responses=NOT_FOUND,
    )
    async def package_invoice(invoice_id: UUID, scope: CallerScope) -> dict[str, Any]:
        async with service.pool.acquire() as conn:
            invoice = await invoices.get_invoice(conn, invoice_id)
            if invoice is None:
                raise HTTPException(404, f"no package invoice {invoice_id}")
            patient = invoice["patient_id"]
            require_patient(scope, patient, await invoices.seen_at(conn, patient))
            return await shown_with_notes(conn, invoice_id)

    @http.get(
        "/invoices/{invoice_id}/lines/{line_number}/history",
        dependencies=[needs("read invoices")],
        tags=["package invoices"],
        response_model=list[LineHistoryEntry],
        responses=NOT_FOUND,
    )
    async def line_history(
        invoice_id: UUID,
        line_number: Annotated[int, Path(ge=1, le=MAX_INT32)],
        scope: CallerScope,
        request: Request,
        response: Response,
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> list[dict[str, Any]]:
        """The whole story of a package line, in the order it happened, a page at a time:
        booking requested, booked, linked, moved, unlinked (why, by whom), used, forfeited,
        written off, extended; each at the time of the message that did it, with its
        location's local time. 403 for a patient seen only at other clinics."""
        after = read_cursor(cursor, 1)
        if after is not None and not after[0].isdigit():
            raise invalid(["query", "cursor"], "not a cursor this list answered")
        async with service.pool.acquire() as conn:
            line = await conn.fetchrow(
                "SELECT l.line_id, i.patient_id, i.time_zone FROM invoice_lines l"
                " JOIN package_invoices i USING (invoice_id)"
                " WHERE l.invoice_id = $1 AND l.line_number = $2",
                invoice_id,
                line_number,
            )
            if line is None:
                raise HTTPException(404, f"no line {line_number} on package invoice {invoice_id}")
            patient = line["patient_id"]
            require_patient(scope, patient, await invoices.seen_at(conn, patient))
            rows = await history.page_of(
                conn, line["line_id"], int(after[0]) if after else None, limit
            )
        shown = page(rows, limit, request, response, lambda r: [str(r["version"])])
        return [history_shown(row, line["time_zone"]) for row in shown]

    @http.get(
        "/packages/{package_id}",
        dependencies=[needs("read reference")],
        tags=["catalogue"],
        response_model=Package,
        responses=NOT_FOUND,
    )
    async def package_terms(package_id: PackageId) -> dict[str, Any]:
        terms = await service.pool.fetchval(
            "SELECT terms FROM packages WHERE package_id = $1", package_id
        )
        if terms is None:
            raise HTTPException(404, f"no package {package_id}")
        return dict(json.loads(terms))

    @http.get(
        "/patients/{patient_id}/invoices",
        dependencies=[needs("read invoices")],
        tags=["package invoices"],
        response_model=list[InvoiceShown],
    )
    async def patient_invoices(
        patient_id: PatientId,
        scope: CallerScope,
        request: Request,
        response: Response,
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> list[dict[str, Any]]:
        """The patient's package invoices, oldest first, a page at a time. 403 for a patient
        seen only at other clinics."""
        after = read_cursor(cursor, 2)
        async with service.pool.acquire() as conn:
            require_patient(scope, patient_id, await invoices.seen_at(conn, patient_id))
            ids = await conn.fetch(
                "SELECT invoice_id, issued_at FROM package_invoices WHERE patient_id = $1"
                " AND ($2::timestamptz IS NULL OR (issued_at, invoice_id) > ($2, $3::uuid))"
                " ORDER BY issued_at, invoice_id LIMIT $4",
                patient_id,
                instant_of(after[0]) if after else None,
                after[1] if after else None,
                limit + 1,
            )
            shown = page(
                ids,
                limit,
                request,
                response,
                lambda r: [r["issued_at"].isoformat(), str(r["invoice_id"])],
            )
            return [await shown_with_notes(conn, row["invoice_id"]) for row in shown]

    @http.get(
        "/reports/deferred-revenue",
        dependencies=[needs("read reports")],
        tags=["reports"],
        response_model=report.DeferredRevenue,
        responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}},
    )
    async def deferred_revenue(
        scope: CallerScope,
        first: Annotated[date, Query(alias="from", description="The first day (local).")],
        last: Annotated[date, Query(alias="to", description="The last day (local), inclusive.")],
        location_id: Annotated[
            LocationId | None,
            Query(description="Only invoices sold there (default: all you may see)."),
        ] = None,
        format: Literal["json", "csv"] = "json",
    ) -> Any:
        """Deferred revenue (docs/revenue.md): for invoices sold at ``location_id`` (or at any
        of the caller's clinics), what was owed when the period began, and by package, currency
        and month what was sold, recognised (sessions used), forfeited, expired, refunded and
        voided, and what is still owed at each month's end; all in cents. Months and days are
        the selling location's. At most 60 months; answered whole (one row per package and
        month), as JSON or CSV."""
        refused = report.period_refusal(first, last)
        if refused:
            raise invalid(["query", "to"], refused)
        if location_id is not None:
            require_location(scope, location_id)
        async with service.pool.acquire() as conn:
            moved = await revenue.movements(conn, first, last, location_id, scope)
        rows = report.report_rows(moved, first, last)
        if format == "csv":
            return Response(report.csv_text(rows), media_type="text/csv; charset=utf-8")
        return {
            "from": first,
            "to": last,
            "location_id": location_id,
            "rows": rows,
            "totals": report.report_totals(rows),
        }


def selling_location(scope: Scope, given: str | None) -> str | None:
    """Where a sale happens: as given; for a caller limited to clinics, one of theirs (their
    only one when not given; 422 naming ``location_id`` when they have several)."""
    if scope.locations is None:
        return given
    if given is None:
        if len(scope.locations) != 1:
            raise invalid(["body", "location_id"], "say at which of your clinics it is sold")
        return next(iter(scope.locations))
    require_location(scope, given)
    return given


@contextlib.asynccontextmanager
async def staff_change(
    service: Service, scope: CallerScope, invoice_id: UUID
) -> AsyncIterator[tuple[Transaction, Any]]:
    """A staff change of an invoice over HTTP (an extension, a top-up, a transfer, a household):
    one transaction, with the invoice, 404 when there is none, 403 when the caller's clinics do
    not see its patient (R17)."""
    async with service.transaction() as tx:
        invoice = await invoices.get_invoice(tx.conn, invoice_id)
        if invoice is None:
            raise HTTPException(404, f"no package invoice {invoice_id}")
        patient = invoice["patient_id"]
        require_patient(scope, patient, await invoices.seen_at(tx.conn, patient))
        yield tx, invoice


def refused_over_http(refused: tuple[str, str]) -> HTTPException:
    """A staff change's refusal, (field, reason), as a 422 naming that field."""
    field, reason = refused
    return invalid(["path" if field == "invoice_id" else "body", field], reason)


async def shown_with_notes(conn: Any, invoice_id: UUID) -> dict[str, Any]:
    """The invoice with each line's note (why its last booking was refused, say), and its
    balance as of this request."""
    invoice = await invoices.snapshot(conn, invoice_id, invoices.request_clock())
    notes = {row["line_id"]: row["note"] for row in await invoices.lines_of(conn, invoice_id)}
    return shown(invoice, notes, number=await invoice_number(conn, invoice_id))


def history_shown(row: Any, invoice_zone: str) -> dict[str, Any]:
    """A history row with its moments as the location's clocks show them (R15): the
    appointment's location, else where the invoice was sold."""
    zone = row["appointment_time_zone"] or invoice_zone

    def local(moment: datetime | None) -> str | None:
        return None if moment is None else clinic_time.local(moment, zone).isoformat()

    body = dict(row)
    del body["appointment_time_zone"]
    body["local_at"] = local(row["at"])
    body["local_starts_at"] = local(row["appointment_starts_at"])
    body["local_previous_starts_at"] = local(row["previous_starts_at"])
    return body


async def invoice_number(conn: Any, invoice_id: UUID) -> int:
    """The number invoicing gave the invoice when it was issued."""
    number: int = await conn.fetchval(
        "SELECT invoice_number FROM package_invoices WHERE invoice_id = $1", invoice_id
    )
    return number


def number_shown(number: int) -> str:
    """An invoice's number as people say it: "INV-000123"."""
    return f"INV-{number:06d}"


def shown(
    invoice: PackageInvoice, notes: dict[UUID, str | None] | None = None, *, number: int
) -> dict[str, Any]:
    """The invoice as staff see it: each line with its appointment date or "Unassigned", and
    its number."""
    body = invoice.model_dump(mode="json")
    body["invoice_number"] = number_shown(number)
    for line, raw in zip(body["lines"], invoice.lines, strict=True):
        # The appointment's date and time as its location's clocks show them (R15).
        starts = raw.appointment_starts_at
        local = clinic_time.local(starts, raw.appointment_time_zone) if starts else None
        line["local_starts_at"] = local.isoformat() if local else None
        line["shows"] = (
            "Unassigned"
            if raw.status.value == "open"
            else f"{raw.status.value.replace('_', ' ')}: {wording.moment(local)}"
            if local
            else raw.status.value
        )
        line["note"] = (notes or {}).get(raw.line_id)
    b = invoice.balance
    body["balance_text"] = (
        f"{b.remaining} of {b.total} left"
        + (f", expires {wording.day(b.expires_on)}" if b.expires_on else "")
        + (f", {wording.sessions(b.expired)} written off" if b.expired else "")
    )
    return body
