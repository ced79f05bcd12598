"""The staff console's server: the static page, a pass-through to the three services' HTTP APIs,
and the calendar commands staff give (book, reschedule, cancel, delete), published on the
calendar's command topic like any front end's. It has no database and no secret of its own: each
request carries the staff member's token, which the services check; before publishing a command
the console asks the calendar who the token's staff member is (``GET /whoami``) and records the
command as theirs (``booked_by``, ``requested_by``, ``cancelled_by``, ``deleted_by``). The
calendar grid's script (FullCalendar) is served from the console's own npm installation
(``/vendor/…``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import quote
from uuid import UUID, uuid4

import httpx
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from packline_contracts import clinic_time
from packline_contracts.appointments import (
    BookAppointment,
    CancelAppointment,
    DeleteAppointment,
    RescheduleAppointment,
)
from packline_contracts.client import PacklineProducer
from packline_contracts.types import (
    BookingSource,
    Day,
    FeeId,
    Instant,
    LocationId,
    Minutes,
    PatientId,
    PractitionerId,
)
from packline_core import openapi
from packline_core.body_limit import BodyLimit
from packline_core.http_errors import install_error_answers, invalid
from packline_core.openapi import BAD_GATEWAY, NOT_FOUND
from pydantic import BaseModel, Field

from packline_console.live import LIVE_EVENTS, LiveFeed, Viewer
from packline_console.responses import CommandSent, ConsoleAlive
from packline_console.security import CredentialsFirst, SecurityHeaders
from packline_console.settings import ConsoleSettings

STATIC = Path(__file__).parent / "static"
# The browser assets installed from services/console/package-lock.json (``npm ci --prefix
# services/console --ignore-scripts``), or PACKLINE_CONSOLE_ASSETS_DIR where an installation keeps
# that node_modules elsewhere (the image does). Only these files are served, at /vendor/<name>.
ASSETS = Path(
    os.environ.get("PACKLINE_CONSOLE_ASSETS_DIR")
    or Path(__file__).resolve().parents[1] / "node_modules"
)
VENDOR_FILES = {
    f"fullcalendar/{name}.js": f"@fullcalendar/{name}/index.global.min.js"
    for name in ("core", "daygrid", "timegrid", "interaction")
}
SERVICES = ("calendar", "invoicing", "matcher")
COMMANDS: list[str | Enum] = ["calendar commands"]
DESCRIPTION = """The staff console's own routes: the calendar commands staff give, published on
the calendar's command topic as the caller the calendar verifies from the token (its `/whoami`).

Not listed here: `/api/{service}/{path}` (GET, PUT, POST, DELETE) passes a request on unchanged,
with the caller's token, to `service` (calendar, invoicing or matcher) at `/{path}`, and answers
what that service answers: see each service's own document at its `/docs`. 404 for another
`service`, 502 when the service does not answer."""


class Booking(BaseModel):
    """New appointment, from the calendar screen."""

    patient_id: PatientId
    practitioner_id: PractitionerId
    location_id: LocationId
    starts_at: Instant | None = Field(default=None, description="Or the local date and time.")
    date: Day | None = Field(default=None, description="The location's local date (R15).")
    time: dt.time | None = Field(default=None, description="The local time on that date.")
    duration_minutes: Minutes | None = None
    fee_ids: list[FeeId] = Field(min_length=1, max_length=20)

    def instant(self, zone: str | None) -> datetime:
        """When it starts: as given, or the location's wall-clock date and time."""
        if self.starts_at is not None:
            return self.starts_at
        if self.date is None or self.time is None:
            raise invalid(["body", "starts_at"], "give 'starts_at', or the local 'date' and 'time'")
        if zone is None:
            raise invalid(["body", "location_id"], f"unknown location {self.location_id}")
        try:
            return clinic_time.at(self.date, self.time, zone)
        except clinic_time.NoSuchLocalTime as error:
            raise invalid(["body", "time"], str(error)) from None


class Change(BaseModel):
    patient_id: PatientId


class Move(BaseModel):
    """A new time for an appointment, from the calendar grid (drag and drop)."""

    patient_id: PatientId
    location_id: LocationId | None = Field(
        default=None, description="The appointment's location, whose clocks 'date' and 'time' are."
    )
    starts_at: Instant | None = Field(default=None, description="Or the local date and time.")
    date: Day | None = Field(default=None, description="The location's local date (R15).")
    time: dt.time | None = Field(default=None, description="The local time on that date.")
    duration_minutes: Minutes | None = None

    def instant(self, zone: str | None) -> datetime:
        """When it starts now: as given, or the location's wall-clock date and time."""
        if self.starts_at is not None:
            return self.starts_at
        if self.date is None or self.time is None:
            raise invalid(["body", "starts_at"], "give 'starts_at', or the local 'date' and 'time'")
        if zone is None:
            raise invalid(["body", "location_id"], f"unknown location {self.location_id}")
        try:
            return clinic_time.at(self.date, self.time, zone)
        except clinic_time.NoSuchLocalTime as error:
            raise invalid(["body", "time"], str(error)) from None


def create_app(settings: ConsoleSettings) -> FastAPI:
    state: dict[str, Any] = {}
    feed = LiveFeed(settings.client_options(), settings.topic_prefix)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        options = settings.client_options()
        bootstrap = options.pop("bootstrap_servers")
        async with (
            httpx.AsyncClient(timeout=15) as client,
            PacklineProducer(
                bootstrap, producer="staff-console", topic_prefix=settings.topic_prefix, **options
            ) as producer,
        ):
            state["http"], state["producer"] = client, producer
            reading = asyncio.create_task(feed.run(), name="console-live-feed")
            try:
                yield
            finally:
                reading.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reading

    app = FastAPI(
        title="Packline staff console",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    # The commands need the staff token (the calendar checks it); /docs from local assets.
    openapi.install(app, protected=lambda path: path.startswith(("/commands/", "/live")))
    install_error_answers(app)
    # Added last, runs first: no bearer token, 401 before the body is read; then its ceiling.
    app.add_middleware(BodyLimit, max_bytes=settings.http_max_body_bytes)
    app.add_middleware(CredentialsFirst)
    # Around everything, even the answer to an unexpected error: the security headers.
    build_stack = app.build_middleware_stack
    app.build_middleware_stack = lambda: SecurityHeaders(build_stack())  # type: ignore[method-assign]
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/vendor/{name:path}", include_in_schema=False)
    async def vendor(name: str) -> FileResponse:
        """The calendar grid's script, from the console's npm installation."""
        if name not in VENDOR_FILES:
            raise HTTPException(404, f"no asset {name}")
        path = ASSETS / VENDOR_FILES[name]
        if not path.is_file():
            raise HTTPException(
                404, f"{name} is not installed (npm ci --prefix services/console --ignore-scripts)"
            )
        return FileResponse(path, media_type="text/javascript")

    @app.get(
        "/live",
        tags=["live updates"],
        response_class=StreamingResponse,
        responses={
            **BAD_GATEWAY,
            200: {
                "content": {
                    "text/event-stream": {
                        "schema": {
                            "description": "One Server-Sent Event (see above).",
                            "type": "object",
                            "properties": {
                                "event": {"enum": [*LIVE_EVENTS]},
                                "data": {"type": "string", "description": "A JSON object."},
                                "retry": {"type": "integer"},
                            },
                        }
                    }
                }
            },
        },
    )
    async def live_updates(request: Request) -> StreamingResponse:
        """What happens in the clinic, as Server-Sent Events, for the caller's page: `appointment`
        (booked, moved, changed, cancelled, deleted, attended), `package` (its package note
        changed), `not_matched` (with the matcher's summary), `refused` (the calendar's code and
        reason; only to whoever gave the command) and `reload` (notices were missed: show
        everything afresh). Each event's data is a JSON object naming the appointment; only
        appointments at the caller's clinics are told (docs/console.md)."""
        who = await ask_calendar(request, "/whoami")
        actor = str(who["sub"]) if who.get("authenticated") else "staff-console"
        return StreamingResponse(
            feed.stream(Viewer.of(who, actor)),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    @app.get("/health/live", tags=["operations"], response_model=ConsoleAlive)
    async def live() -> dict[str, str]:
        return {"status": "live"}

    # Not in this document: each service's own document describes what passes through.
    @app.api_route(
        "/api/{service}/{path:path}",
        methods=["GET", "PUT", "POST", "DELETE"],
        include_in_schema=False,
    )
    async def pass_through(service: str, path: str, request: Request) -> Response:
        """The services' own APIs, unchanged, with the staff member's own token."""
        if service not in SERVICES:
            raise HTTPException(404, f"no service {service}")
        client: httpx.AsyncClient = state["http"]
        try:
            # The path arrives decoded; sent on as it came, encoded again.
            answer = await client.request(
                request.method,
                f"{settings.service_url(service)}/{quote(path, safe='/:@')}",
                params=list(request.query_params.multi_items()),
                content=await request.body(),
                headers=_forwarded(request),
            )
        except httpx.TransportError as error:
            raise HTTPException(502, f"the {service} service does not answer") from error
        # A paged list's next page (docs/identity.md), as a path of this pass-through.
        link = answer.headers.get("link")
        return Response(
            answer.content,
            status_code=answer.status_code,
            media_type=answer.headers.get("content-type"),
            headers={"link": link.replace("</", f"</api/{service}/")} if link else None,
        )

    async def staff_only(request: Request, permission: str) -> dict[str, Any]:
        """Who gives a calendar command: the caller the calendar verifies from the forwarded
        token (``GET /whoami``; 401 / 403 otherwise); their role must allow ``permission``
        (403). The answer's ``actor`` is recorded as the command's: their ``sub``, or with the
        calendar's API open (development, no verified caller) ``staff-console``."""
        who: dict[str, Any] = await ask_calendar(request, "/whoami")
        if not who.get("authenticated"):
            return who | {"actor": "staff-console"}
        if permission not in who.get("permissions", []):
            raise HTTPException(403, f"role {who.get('role')} may not {permission}")
        return who | {"actor": str(who["sub"])}

    async def in_scope(request: Request, who: dict[str, Any], path: str) -> Any:
        """Clinic scope before a command (docs/identity.md): the calendar answers ``path`` for
        the caller only if its patient is seen at their clinics (its 403 / 404 passed on).
        Callers of every clinic (a static token, the open API) are not asked: a command may
        follow its booking before the calendar has applied it."""
        if who.get("clinics") is None and who.get("practitioner_id") is None:
            return None
        return await ask_calendar(request, path, missing_is=404)

    async def same_patient(
        request: Request, who: dict[str, Any], appointment_id: UUID, patient_id: str
    ) -> None:
        """Cancel and delete only an appointment the caller may read, of the patient named."""
        shown = await in_scope(request, who, f"/appointments/{appointment_id}")
        if shown is not None and shown.get("patient_id") != patient_id:
            raise invalid(["body", "patient_id"], f"appointment {appointment_id} is not theirs")

    async def calendar_directory(request: Request) -> dict[str, Any]:
        """The calendar's directory, asked with the caller's credentials (so it also says
        whether the calendar accepts them: 401 / 403 otherwise)."""
        return dict(await ask_calendar(request, "/directory"))

    async def ask_calendar(request: Request, path: str, *, missing_is: int = 502) -> Any:
        """GET ``path`` from the calendar with the caller's credentials: its 401 / 403 passed
        on (and 404 with ``missing_is=404``), anything else but 200 (or no answer) a 502."""
        client: httpx.AsyncClient = state["http"]
        try:
            answer = await client.get(f"{settings.calendar_url}{path}", headers=_forwarded(request))
        except httpx.TransportError as error:
            raise HTTPException(502, "the calendar service does not answer") from error
        if answer.status_code in (401, 403):
            raise HTTPException(answer.status_code, _detail(answer))
        if answer.status_code == 404 and missing_is == 404:
            raise HTTPException(404, _detail(answer))
        if answer.status_code != 200:
            raise HTTPException(502, f"the calendar service answered {answer.status_code}")
        return answer.json()

    @app.post(
        "/commands/appointments",
        status_code=202,
        tags=COMMANDS,
        response_model=CommandSent,
        responses=BAD_GATEWAY,
    )
    async def book(booking: Booking, request: Request) -> dict[str, Any]:
        """New appointment in the calendar (R4): the matcher links it to a package line."""
        who = await staff_only(request, "book")
        clinics = who.get("clinics")
        if clinics is not None and booking.location_id not in clinics:
            raise HTTPException(
                403,
                f"location {booking.location_id} is not one of your clinics"
                f" ({', '.join(clinics) or 'none'})",
            )
        await in_scope(
            request, who, f"/patients/{quote(booking.patient_id, safe='')}/appointments?limit=1"
        )
        directory = await calendar_directory(request)
        zones = {loc["location_id"]: loc.get("time_zone") for loc in directory["locations"]}
        starts_at = booking.instant(zones.get(booking.location_id))
        appointment_id = uuid4()
        feed.asked(appointment_id, who["actor"])
        await state["producer"].send(
            BookAppointment(
                patient_id=booking.patient_id,
                appointment_id=appointment_id,
                practitioner_id=booking.practitioner_id,
                location_id=booking.location_id,
                starts_at=starts_at,
                duration_minutes=booking.duration_minutes,
                fee_ids=booking.fee_ids,
                source=BookingSource.STAFF,
                booked_by=who["actor"],
            )
        )
        return {"appointment_id": appointment_id, "status": "requested"}

    @app.post(
        "/commands/appointments/{appointment_id}/reschedule",
        status_code=202,
        tags=COMMANDS,
        response_model=CommandSent,
        responses=BAD_GATEWAY | NOT_FOUND,
    )
    async def reschedule(appointment_id: UUID, move: Move, request: Request) -> dict[str, Any]:
        """Move to another time, same practitioner and location (R10: it keeps its package
        link while the line still allows it). The calendar refuses a time that clashes."""
        who = await staff_only(request, "book")
        await same_patient(request, who, appointment_id, move.patient_id)
        zone = None
        if move.starts_at is None:
            directory = await calendar_directory(request)
            zones = {loc["location_id"]: loc.get("time_zone") for loc in directory["locations"]}
            zone = zones.get(move.location_id or "")
        feed.asked(appointment_id, who["actor"])
        await state["producer"].send(
            RescheduleAppointment(
                patient_id=move.patient_id,
                appointment_id=appointment_id,
                starts_at=move.instant(zone),
                duration_minutes=move.duration_minutes,
                requested_by=who["actor"],
            )
        )
        return {"appointment_id": appointment_id, "status": "requested"}

    @app.post(
        "/commands/appointments/{appointment_id}/cancel",
        status_code=202,
        tags=COMMANDS,
        response_model=CommandSent,
        responses=BAD_GATEWAY | NOT_FOUND,
    )
    async def cancel(appointment_id: UUID, change: Change, request: Request) -> dict[str, Any]:
        """Cancel (R9): its package line is released."""
        who = await staff_only(request, "cancel")
        await same_patient(request, who, appointment_id, change.patient_id)
        actor = who["actor"]
        feed.asked(appointment_id, actor)
        await state["producer"].send(
            CancelAppointment(
                patient_id=change.patient_id,
                appointment_id=appointment_id,
                cancelled_by=actor,
                cancelled_at=datetime.now(UTC),
            )
        )
        return {"appointment_id": appointment_id, "status": "cancel requested"}

    @app.post(
        "/commands/appointments/{appointment_id}/delete",
        status_code=202,
        tags=COMMANDS,
        response_model=CommandSent,
        responses=BAD_GATEWAY | NOT_FOUND,
    )
    async def delete(appointment_id: UUID, change: Change, request: Request) -> dict[str, Any]:
        """Delete (R9): its package line is released."""
        who = await staff_only(request, "cancel")
        await same_patient(request, who, appointment_id, change.patient_id)
        actor = who["actor"]
        feed.asked(appointment_id, actor)
        await state["producer"].send(
            DeleteAppointment(
                patient_id=change.patient_id, appointment_id=appointment_id, deleted_by=actor
            )
        )
        return {"appointment_id": appointment_id, "status": "delete requested"}

    return app


def _detail(answer: httpx.Response) -> Any:
    try:
        return answer.json().get("detail")
    except (ValueError, AttributeError):
        return answer.text


def _forwarded(request: Request) -> dict[str, str]:
    headers = {"content-type": request.headers.get("content-type", "application/json")}
    if "authorization" in request.headers:
        headers["authorization"] = request.headers["authorization"]
    return headers
