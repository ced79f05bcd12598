"""R3, book from the invoice: staff edit a line (date, time, optional duration, "Add appointment:
Yes"), Check Availability asks the calendar, Save asks the calendar to book it with the line's
practitioner and location. The line shows "booking requested" until the calendar answers; then
the appointment date (the line is linked) or the refusal's reason (the line stays open).

A request the calendar never answers does not hold the line for ever: after
``PACKLINE_BOOKING_REQUEST_TIMEOUT_SECONDS`` a sweep releases it, and staff can release it sooner;
either way the line is open again with the reason on it, announced like a refusal."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, overload
from uuid import UUID

import httpx
import structlog
from fastapi import HTTPException, Query, Request
from packline_contracts import clinic_time, wording
from packline_contracts.appointments import AppointmentBooked, BookAppointment, BookingRefused
from packline_contracts.envelope import Envelope
from packline_contracts.ids import derived_id
from packline_contracts.invoices import (
    LineBookingRefused,
    LineBookingRequested,
    UnassignInvoiceLine,
)
from packline_contracts.types import (
    Actor,
    BookingSource,
    Day,
    Instant,
    InvoiceLineRef,
    LocationId,
    Minutes,
    PractitionerId,
    Reason,
)
from packline_core.auth import acting, caller, needs
from packline_core.consumer import MessageConsumer
from packline_core.http_errors import invalid
from packline_core.openapi import BAD_GATEWAY, CONFLICT, NOT_FOUND
from packline_core.outbox import Transaction
from packline_core.scope import CallerScope, Scope, require_patient
from packline_core.service import Service
from packline_core.tracing import http_headers
from pydantic import BaseModel, Field, SecretStr

from packline_invoicing import commands, directory, history, invoices, lines, rules
from packline_invoicing.responses import (
    Availability,
    BookingRequested,
    LineOpened,
    RequestReleased,
)
from packline_invoicing.sweep import Sweep

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class LineBooking(BaseModel):
    """The Edit Invoice Line pop-up with "Add appointment: Yes": the date and time as the
    location's clocks show them (``date`` and ``time``), or the instant (``starts_at``)."""

    starts_at: Instant | None = Field(
        default=None, description="Date and time of the appointment, with its UTC offset."
    )
    date: Day | None = Field(default=None, description="The local date at the location (R15).")
    time: dt.time | None = Field(default=None, description="The local time on that date.")
    duration_minutes: Minutes | None = None
    practitioner_id: PractitionerId | None = Field(
        default=None, description="Needed when the line allows several."
    )
    location_id: LocationId | None = Field(
        default=None, description="Needed when the line allows several."
    )
    booked_by: Actor | None = Field(
        default=None,
        description="Who books: the verified caller's staff id (leave it out; another value is "
        "refused).",
    )


def when(booking: LineBooking, zone: str | None, location: str, where: str = "body") -> datetime:
    """The instant the line's appointment starts: as given, or the location's local date and
    time (a time the clocks skip on a daylight-saving day is refused, naming it)."""
    if booking.starts_at is not None:
        if booking.date is not None or booking.time is not None:
            raise invalid([where, "starts_at"], "give 'starts_at' or 'date' and 'time', not both")
        return booking.starts_at
    if booking.date is None or booking.time is None:
        raise invalid([where, "starts_at"], "give 'starts_at', or the local 'date' and 'time'")
    if zone is None:
        raise invalid(
            [where, "location_id"],
            f"location {location} is not known here yet: give 'starts_at' with its UTC offset",
        )
    try:
        return clinic_time.at(booking.date, booking.time, zone)
    except clinic_time.NoSuchLocalTime as error:
        raise invalid([where, "time"], str(error)) from None


def outside_validity(field: str, valid_from: date, valid_until: date) -> HTTPException:
    return invalid(
        ["body", field],
        f"outside validity: {wording.day(valid_from)} to {wording.day(valid_until)}",
    )


@overload
def only(allowed: Sequence[str] | None, chosen: str | None, what: str) -> str: ...
@overload
def only(
    allowed: Sequence[str] | None, chosen: str | None, what: str, *, required: bool
) -> str | None: ...
def only(
    allowed: Sequence[str] | None, chosen: str | None, what: str, *, required: bool = True
) -> str | None:
    """The practitioner or location for this line: the one chosen (if the line allows it), or
    the only one the line allows; otherwise a refusal asking to choose (or None if optional)."""
    if chosen is not None:
        if allowed is not None and chosen not in allowed:
            raise invalid([f"{what}_id"], f"this line is only for {what} {', '.join(allowed)}")
        return chosen
    if allowed is not None and len(allowed) == 1:
        return allowed[0]
    if not required:
        return None
    raise invalid(
        [f"{what}_id"],
        f"choose a {what}: the line allows {'any' if allowed is None else ', '.join(allowed)}",
    )


def register_booking(
    service: Service,
    calendar_url: str,
    calendar_token: SecretStr | None,
    *,
    clock: Clock = utc_now,
) -> None:
    headers = (
        {"Authorization": f"Bearer {calendar_token.get_secret_value()}"} if calendar_token else {}
    )

    http = service.http

    async def open_line(
        conn: Any, invoice_id: UUID, line_id: UUID, scope: Scope, *, lock: bool = False
    ) -> Any:
        """The line, if it is on the invoice (404) and its patient is seen at one of the
        caller's clinics (403)."""
        line = await invoices.get_line(conn, line_id, for_update=lock)
        if line is None or line["invoice_id"] != invoice_id:
            raise HTTPException(404, f"no line {line_id} on invoice {invoice_id}")
        require_patient(scope, line["patient_id"], await invoices.seen_at(conn, line["patient_id"]))
        return line

    @http.get(
        "/invoices/{invoice_id}/lines/{line_id}/availability",
        dependencies=[needs("book")],
        tags=["book from the invoice"],
        response_model=Availability,
        # Local times and the clash only when there are: absent, not null, otherwise.
        response_model_exclude_unset=True,
        responses=NOT_FOUND | CONFLICT | BAD_GATEWAY,
    )
    async def check_availability(
        request: Request,
        scope: CallerScope,
        invoice_id: UUID,
        line_id: UUID,
        starts_at: Instant | None = None,
        day: Annotated[Day | None, Query(alias="date", description="Local date (R15).")] = None,
        wall: Annotated[dt.time | None, Query(alias="time", description="Local time.")] = None,
        duration_minutes: Minutes | None = None,
        practitioner_id: PractitionerId | None = None,
        location_id: LocationId | None = None,
    ) -> dict[str, Any]:
        """Check Availability for this line's practitioner (answered by the calendar): at
        ``starts_at``, or at the local ``date`` and ``time`` of the line's location, and
        answered in that location's local time too."""
        async with service.pool.acquire() as conn:
            line = await open_line(conn, invoice_id, line_id, scope)
            duration = duration_minutes or await fee_duration(conn, line["fee_id"])
            location = only(line["location_ids"], location_id, "location", required=False)
            zone = await directory.zone_of(conn, location) if location else None
        practitioner = only(line["practitioner_ids"], practitioner_id, "practitioner")
        asked = LineBooking(starts_at=starts_at, date=day, time=wall, booked_by="availability")
        instant = when(asked, zone, location or "(none given)", "query")
        params: dict[str, Any] = {
            "practitioner_id": practitioner,
            "starts_at": instant.isoformat(),
            "duration_minutes": duration,
        }
        if zone is not None:
            params["location_id"] = location
        # The calendar's own token if one is configured, else the caller's own.
        asking = headers or (
            {"Authorization": request.headers["authorization"]}
            if "authorization" in request.headers
            else {}
        )
        async with httpx.AsyncClient(base_url=calendar_url, headers=asking, timeout=5) as client:
            answer = await client.get("/availability", params=params, headers=http_headers())
        if answer.status_code != 200:
            raise HTTPException(
                502 if answer.status_code >= 500 else answer.status_code, f"calendar: {answer.text}"
            )
        return dict(answer.json())

    @http.put(
        "/invoices/{invoice_id}/lines/{line_id}/appointment",
        dependencies=[needs("book")],
        status_code=202,
        tags=["book from the invoice"],
        response_model=BookingRequested,
        responses=NOT_FOUND | CONFLICT,
    )
    async def book_from_line(
        invoice_id: UUID, line_id: UUID, booking: LineBooking, request: Request, scope: CallerScope
    ) -> dict[str, Any]:
        """Save with "Add appointment: Yes": asks the calendar to book; answers at once. The
        booking is recorded as the verified caller's (``booked_by``)."""
        booked_by = acting(caller(request), booking.booked_by, ["body", "booked_by"])
        async with service.transaction() as tx:
            line = invoices.line_of(await open_line(tx.conn, invoice_id, line_id, scope, lock=True))
            refused = lines.booking_refusal(line)
            if refused is not None:
                raise HTTPException(409, refused.reason)
            invoice = await invoices.get_invoice(tx.conn, invoice_id)
            assert invoice is not None
            if not invoices.is_redeemable(invoice):
                raise HTTPException(409, "the invoice is void, refunded or not paid yet")
            validity = (line.valid_from, line.valid_until)
            if booking.starts_at and not rules.may_be_within(booking.starts_at, *validity):
                raise outside_validity("starts_at", *validity)
            practitioner = only(line.practitioner_ids, booking.practitioner_id, "practitioner")
            location = only(line.location_ids, booking.location_id, "location")
            # R15: the day as the location's clocks show it. A location invoicing has not heard
            # of yet (the directory may lag) can still be booked at an instant: the link that
            # follows judges the day in the zone the calendar's answer carries.
            zone = await directory.zone_of(tx.conn, location)
            starts_at = when(booking, zone, location)
            if zone and not lines.valid_on(line, clinic_time.local_day(starts_at, zone)):
                raise outside_validity(
                    "date" if booking.starts_at is None else "starts_at", *validity
                )
            # Named by the line and its version: saving twice books one appointment.
            at = clock()
            requested = lines.applied(
                lines.request_booking(
                    line, derived_id("booking", line_id, line.version), starts_at, zone, at
                )
            )
            story = history.entry(
                tx, line, requested, by=booked_by, at=at, practitioner_id=practitioner
            )
            await invoices.save_line(tx.conn, requested.line, story=story)
            appointment_id = requested.event.appointment_id
            tx.publish(
                BookAppointment(
                    patient_id=line.patient_id,
                    appointment_id=appointment_id,
                    practitioner_id=practitioner,
                    location_id=location,
                    starts_at=starts_at,
                    duration_minutes=booking.duration_minutes,
                    fee_ids=[line.fee_id],
                    source=BookingSource.INVOICE,
                    invoice_line=InvoiceLineRef(invoice_id=invoice_id, line_id=line_id),
                    booked_by=booked_by,
                )
            )
            tx.publish(
                await invoices.line_event(
                    tx.conn,
                    LineBookingRequested,
                    line_id,
                    now=at,
                    appointment_id=appointment_id,
                    starts_at=requested.event.starts_at,
                )
            )
        return {
            "status": "booking_requested",
            "appointment_id": appointment_id,
            "invoice_id": invoice_id,
            "line_id": line_id,
        }

    @http.delete(
        "/invoices/{invoice_id}/lines/{line_id}/appointment",
        dependencies=[needs("unlink")],
        tags=["book from the invoice"],
        response_model=LineOpened,
        responses=NOT_FOUND | CONFLICT,
    )
    async def unassign_line(
        invoice_id: UUID,
        line_id: UUID,
        request: Request,
        scope: CallerScope,
        given: Annotated[
            Actor | None,
            Query(
                alias="unassigned_by",
                description="The verified caller's staff id (leave it out; another is refused).",
            ),
        ] = None,
    ) -> dict[str, Any]:
        """R8: the X, then "Unassigned", in one action. The appointment stays in the calendar.
        Recorded as the verified caller's (``unassigned_by``)."""
        unassigned_by = acting(caller(request), given, ["query", "unassigned_by"])
        async with service.transaction() as tx:
            line = await open_line(tx.conn, invoice_id, line_id, scope)
            command = UnassignInvoiceLine(
                patient_id=line["patient_id"],
                invoice_id=invoice_id,
                line_id=line_id,
                unassigned_by=unassigned_by,
            )
            if line["status"] == "booking_requested":
                raise HTTPException(
                    409,
                    "the line is booking_requested, not linked: the calendar has not answered;"
                    " release the request with DELETE"
                    f" /invoices/{invoice_id}/lines/{line_id}/booking-request",
                )
            if line["status"] != "linked":
                raise HTTPException(409, f"the line is {line['status']}, not linked")
            # Audit on the line (shown with it until it is linked again): who, and when by the
            # location's clocks.
            staff = caller(request)
            who = f"{staff.name} ({staff.sub})" if staff and staff.name != staff.sub else None
            at = clinic_time.local(clock(), line["appointment_time_zone"])
            note = f"unlinked by {who or unassigned_by} at {wording.moment(at)}"
            await commands.unassign(tx, command, note=note)
        return {"status": "open", "invoice_id": invoice_id, "line_id": line_id}

    @http.delete(
        "/invoices/{invoice_id}/lines/{line_id}/booking-request",
        dependencies=[needs("book")],
        tags=["book from the invoice"],
        response_model=RequestReleased,
        responses=NOT_FOUND | CONFLICT,
        summary="Release a booking request the calendar has not answered: the line is open"
        " again, with who released it and why on the line",
    )
    async def release_booking_request(
        invoice_id: UUID,
        line_id: UUID,
        request: Request,
        scope: CallerScope,
        given: Annotated[
            Actor | None,
            Query(
                alias="released_by",
                description="Who releases it (shown on the line): the verified caller's staff "
                "id (leave it out; another is refused).",
            ),
        ] = None,
        reason: Annotated[
            Reason | None,
            # At most 300: with who released it, the note still fits a Reason (500).
            Query(max_length=300, description="Why, in the staff member's words (on the line)."),
        ] = None,
    ) -> dict[str, Any]:
        """For a line still showing "booking requested" (the calendar has not answered yet):
        the line is open again and can be booked or matched anew. Staff need not wait for the
        automatic timeout. If the calendar books the released request after all, that
        appointment stays in the calendar without the package and is never linked on its own
        (see ``booked`` below). 404: no such line on this invoice; 409: the line holds no
        booking request (open, linked or forfeited)."""
        released_by = acting(caller(request), given, ["query", "released_by"])
        async with service.transaction() as tx:
            line = await open_line(tx.conn, invoice_id, line_id, scope, lock=True)
            if line["status"] == "linked":
                raise HTTPException(
                    409,
                    "the line is linked: the calendar booked it; to free the line, unassign it"
                    f" (DELETE /invoices/{invoice_id}/lines/{line_id}/appointment)",
                )
            if line["status"] != "booking_requested":
                raise HTTPException(
                    409, f"the line is {line['status']}: no booking request is waiting"
                )
            note = f"booking request released by {released_by}" + (f": {reason}" if reason else "")
            await release_request(tx, invoices.line_of(line), line["appointment_id"], note)
        return {
            "status": "open",
            "invoice_id": invoice_id,
            "line_id": line_id,
            "released_appointment_id": line["appointment_id"],
            "note": note,
        }


async def fee_duration(conn: Any, fee_id: str) -> int:
    minutes = await conn.fetchval("SELECT duration_minutes FROM fees WHERE fee_id = $1", fee_id)
    if minutes is None:
        raise HTTPException(409, f"fee {fee_id} is not in the catalogue")
    return int(minutes)


def register_booking_results(consumer: MessageConsumer) -> None:
    @consumer.handles(AppointmentBooked)
    async def booked(tx: Transaction, envelope: Envelope[AppointmentBooked]) -> None:
        appointment = envelope.payload.appointment
        ref = appointment.invoice_line
        if ref is None:
            return  # booked in the calendar or online: the matcher decides
        line = await invoices.get_line(tx.conn, ref.line_id, for_update=True)
        if line is None or line["appointment_id"] != appointment.appointment_id:
            # A late answer: the request was released (timeout or staff) before the calendar
            # booked it. The appointment stays in the calendar without the package, and neither
            # this line nor the matcher takes it on its own (the matcher treats it like an
            # appointment staff unlinked, R8). Staff were shown the release on the line and may
            # have booked the session again, sold it on, or told the patient: linking now would
            # change the invoice behind their back. Deleting the appointment would be worse (the
            # patient may have been told the time). So the released line is final; staff see the
            # appointment in the calendar without a package note and decide.
            return
        await commands.apply_link(
            tx, ref.invoice_id, ref.line_id, appointment, "booked from this invoice line"
        )

    @consumer.handles(BookingRefused)
    async def refused(tx: Transaction, envelope: Envelope[BookingRefused]) -> None:
        event = envelope.payload
        ref = event.invoice_line
        if ref is None:
            return
        line = await invoices.get_line(tx.conn, ref.line_id, for_update=True)
        if line is not None:
            # A refusal of a request released meanwhile leaves nothing to undo (refused).
            await release_request(tx, invoices.line_of(line), event.appointment_id, event.reason)


async def release_request(
    tx: Transaction, line: lines.Line, appointment_id: UUID, reason: str
) -> bool:
    """The line's booking request ends without an appointment (the calendar refused it, it
    timed out, or staff released it): open again, with the reason on the line. Announced as
    LineBookingRefused in every case, so the matcher frees the line and remembers the request's
    appointment as not to be linked on its own. False (nothing changed) when the line no longer
    holds that appointment, or is final."""
    released = lines.release(line, appointment_id, note=reason)
    if isinstance(released, lines.Refused):
        return False
    await invoices.save_line(tx.conn, released.line, story=history.entry(tx, line, released))
    tx.publish(
        await invoices.line_event(
            tx.conn,
            LineBookingRefused,
            line.line_id,
            now=invoices.moment(tx),
            appointment_id=released.event.appointment_id,
            reason=reason,
        )
    )
    return True


class BookingRequestSweep(Sweep):
    """Releases booking requests the calendar has not answered within the timeout.

    Every replica runs one; ``FOR UPDATE SKIP LOCKED`` gives each overdue line to one of them, and
    a line locked by the calendar's answer being applied is left to that answer (whichever
    commits first wins; the other then finds the line no longer waiting)."""

    BATCH = 100
    name, task = "booking request sweep", "booking-sweep"

    def __init__(self, service: Service, timeout: timedelta, clock: Clock = utc_now) -> None:
        # Often enough that a request is released soon after its time, never a busy loop.
        super().__init__(service, min(max(timeout.total_seconds() / 4, 0.1), 5.0))
        self.timeout = timeout
        self.clock = clock

    async def round(self) -> bool:
        return await self.sweep_once() == self.BATCH

    async def sweep_once(self) -> int:
        """Release up to BATCH overdue requests in one transaction; returns how many."""
        now = self.clock()
        note = rules.unanswered_note(self.timeout)
        async with self.service.transaction() as tx:
            rows = await tx.conn.fetch(
                f"SELECT {invoices.LINE_COLUMNS} FROM invoice_lines"
                " WHERE status = 'booking_requested' AND booking_requested_at <= $1"
                " ORDER BY booking_requested_at LIMIT $2 FOR UPDATE SKIP LOCKED",
                rules.overdue_before(now, self.timeout),
                self.BATCH,
            )
            overdue = set(
                rules.overdue_requests(
                    ((row["line_id"], row["booking_requested_at"]) for row in rows),
                    now,
                    self.timeout,
                )
            )
            for row in rows:
                if row["line_id"] in overdue:
                    line = invoices.line_of(row)
                    await release_request(tx, line, row["appointment_id"], note)
        if overdue:
            log.info("booking requests released", count=len(overdue), reason=note)
        return len(rows)


def register_booking_request_sweep(
    service: Service, timeout_seconds: float, clock: Clock = utc_now
) -> BookingRequestSweep:
    sweep = BookingRequestSweep(service, timedelta(seconds=timeout_seconds), clock)
    service.on_started(sweep.start)
    service.on_stopping(sweep.stop)
    return sweep
