"""The calendar's HTTP API for staff front ends: the appointment panel, a patient's appointments
and Check Availability (R3)."""

from __future__ import annotations

import json
from datetime import date, datetime, time, timedelta
from typing import Annotated, Any
from uuid import UUID

from fastapi import HTTPException, Query, Request, Response
from packline_contracts import clinic_time
from packline_contracts.types import Day, Instant, LocationId, Minutes, PatientId, PractitionerId
from packline_core.auth import needs
from packline_core.http_errors import invalid
from packline_core.links import register_links
from packline_core.openapi import NOT_FOUND
from packline_core.paging import Cursor, Limit, instant_of, page, read_cursor
from packline_core.scope import (
    CallerScope,
    require_location,
    require_patient,
    require_practitioner,
)
from packline_core.service import Service

from packline_calendar import appointments
from packline_calendar.patients import patient_names, seen_at
from packline_calendar.responses import AppointmentShown, Availability, Directory, FeeShown


def register_http(service: Service) -> None:
    http = service.http
    register_links(
        service,
        "SELECT appointment_id, invoice_id, line_id, state FROM package_notes"
        " WHERE state IN ('linked', 'used', 'forfeited')",
        "Every package note that says an appointment redeems a line.",
    )

    @http.get(
        "/appointments/{appointment_id}",
        dependencies=[needs("read calendar")],
        tags=["appointments"],
        response_model=AppointmentShown,
        responses=NOT_FOUND,
    )
    async def appointment_panel(appointment_id: UUID, scope: CallerScope) -> dict[str, Any]:
        """The appointment as the panel shows it, with the package it redeems (R4). 403 when its
        patient is seen only at other clinics, or for another practitioner's appointment."""
        async with service.pool.acquire() as conn:
            appointment = await appointments.get(conn, appointment_id)
            if appointment is None:
                raise HTTPException(404, f"no appointment {appointment_id}")
            require_practitioner(scope, appointment.practitioner_id)
            require_patient(
                scope, appointment.patient_id, await seen_at(conn, appointment.patient_id)
            )
            note = await conn.fetchrow(
                "SELECT * FROM package_notes WHERE appointment_id = $1", appointment_id
            )
            names = await patient_names(conn, [appointment.patient_id])
        return {
            **appointments.as_json(appointment),
            "patient_name": names.get(appointment.patient_id),  # null until the directory has it
            "package": package_note(note),
        }

    @http.get(
        "/fees",
        dependencies=[needs("read reference")],
        tags=["appointments"],
        response_model=list[FeeShown],
    )
    async def fees() -> list[dict[str, Any]]:
        """The fees an appointment can have (from invoicing's catalogue), with their durations."""
        rows = await service.pool.fetch(
            "SELECT fee_id, name, duration_minutes FROM fees ORDER BY name"
        )
        return [dict(row) for row in rows]

    @http.get(
        "/patients/{patient_id}/appointments",
        dependencies=[needs("read calendar")],
        tags=["appointments"],
        response_model=list[AppointmentShown],
    )
    async def patient_appointments(
        scope: CallerScope,
        patient_id: PatientId,
        request: Request,
        response: Response,
        limit: Limit = 100,
        cursor: Cursor = None,
    ) -> list[dict[str, Any]]:
        """The patient's appointments in time order, a page at a time (a practitioner: only
        theirs). 403 for a patient seen only at other clinics."""
        async with service.pool.acquire() as conn:
            require_patient(scope, patient_id, await seen_at(conn, patient_id))
        after = read_cursor(cursor, 2)
        return await with_notes(
            "patient_id = $1 AND status <> 'deleted'"
            " AND ($2::text IS NULL OR practitioner_id = $2)",
            [patient_id, scope.practitioner_id],
            after,
            limit,
            request,
            response,
        )

    @http.get(
        "/appointments",
        dependencies=[needs("read calendar")],
        tags=["appointments"],
        response_model=list[AppointmentShown],
        responses=NOT_FOUND,
    )
    async def calendar_view(
        scope: CallerScope,
        request: Request,
        response: Response,
        starts_from: Annotated[Instant | None, Query(alias="from")] = None,
        until: Annotated[Instant | None, Query(alias="to")] = None,
        day: Annotated[
            Day | None,
            Query(
                alias="date",
                description="A local day at the location (with location_id): its day view, "
                "or with days=7 its week, from local midnight to local midnight (R15).",
            ),
        ] = None,
        days: Annotated[int, Query(ge=1, le=31)] = 1,
        practitioner_id: PractitionerId | None = None,
        location_id: LocationId | None = None,
        limit: Limit = 500,
        cursor: Cursor = None,
    ) -> list[dict[str, Any]]:
        """The calendar's day or week, each appointment with its package note and its local
        start and end: either the location's local ``date`` (and ``days``), or the instants
        [from, to), of one practitioner and / or location; in time order, a page at a time.
        Only the caller's clinics (403 for another location); a practitioner sees only their
        own appointments."""
        if location_id is not None:
            require_location(scope, location_id)
        if practitioner_id is not None:
            require_practitioner(scope, practitioner_id)
        if day is not None:
            if location_id is None:
                raise invalid(["query", "location_id"], "a local date needs its location")
            async with service.pool.acquire() as conn:
                zone = await appointments.location_zone(conn, location_id)
            if zone is None:
                raise HTTPException(404, f"unknown location {location_id}")
            starts_from, until = clinic_time.days_span(day, days, zone)
        elif starts_from is None or until is None:
            raise invalid(["query", "date"], "give a local date, or both 'from' and 'to'")
        elif until <= starts_from or until - starts_from > timedelta(days=31):
            raise invalid(["query", "to"], "must be after 'from', and at most 31 days later")
        return await with_notes(
            "starts_at >= $1 AND starts_at < $2 AND status <> 'deleted'"
            " AND ($3::text IS NULL OR practitioner_id = $3)"
            " AND ($4::text IS NULL OR location_id = $4)"
            " AND ($5::text[] IS NULL OR location_id = ANY($5::text[]))",
            [
                starts_from,
                until,
                practitioner_id or scope.practitioner_id,
                location_id,
                scope.location_list(),
            ],
            read_cursor(cursor, 2),
            limit,
            request,
            response,
        )

    @http.get(
        "/directory",
        dependencies=[needs("read reference")],
        tags=["appointments"],
        response_model=Directory,
    )
    async def directory() -> dict[str, list[dict[str, Any]]]:
        """The practitioners and locations a calendar can show and book."""
        async with service.pool.acquire() as conn:
            practitioners = await conn.fetch(
                "SELECT practitioner_id, name FROM practitioners ORDER BY name"
            )
            locations = await conn.fetch(
                "SELECT location_id, name, time_zone FROM locations ORDER BY name"
            )
        return {
            "practitioners": [dict(row) for row in practitioners],
            "locations": [dict(row) for row in locations],
        }

    async def with_notes(
        where: str,
        args: list[Any],
        after: list[str] | None,
        limit: int,
        request: Request,
        response: Response,
    ) -> list[dict[str, Any]]:
        """The appointments ``where`` holds, in time order, one page (after the cursor's
        ``after``), each with its package note and patient name."""
        n = len(args)
        if after is not None:
            where += f" AND (starts_at, appointment_id) > (${n + 1}, ${n + 2}::uuid)"
            args = [*args, instant_of(after[0]), after[1]]
        async with service.pool.acquire() as conn:
            fetched = await conn.fetch(
                f"SELECT {appointments.COLUMNS} FROM appointments WHERE {where}"
                f" ORDER BY starts_at, appointment_id LIMIT {limit + 1}",
                *args,
            )
            rows = page(
                fetched,
                limit,
                request,
                response,
                lambda r: [r["starts_at"].isoformat(), str(r["appointment_id"])],
            )
            notes = await conn.fetch(
                "SELECT * FROM package_notes WHERE appointment_id = ANY($1::uuid[])",
                [row["appointment_id"] for row in rows],
            )
            names = await patient_names(conn, (row["patient_id"] for row in rows))
        by_id = {note["appointment_id"]: note for note in notes}
        return [
            {
                **appointments.as_json(appointments.to_appointment(row)),
                "patient_name": names.get(row["patient_id"]),
                "package": package_note(by_id.get(row["appointment_id"])),
            }
            for row in rows
        ]

    @http.get(
        "/availability",
        dependencies=[needs("read calendar")],
        tags=["appointments"],
        response_model=Availability,
        # Local times and the clash only when there are: absent, not null, otherwise.
        response_model_exclude_unset=True,
        responses=NOT_FOUND,
    )
    async def check_availability(
        scope: CallerScope,
        practitioner_id: PractitionerId,
        duration_minutes: Minutes,
        starts_at: Instant | None = None,
        location_id: Annotated[
            LocationId | None,
            Query(description="Words the answer in this location's local time (R15)."),
        ] = None,
        day: Annotated[Day | None, Query(alias="date", description="Local date.")] = None,
        wall: Annotated[
            time | None, Query(alias="time", description="Local time on that date.")
        ] = None,
        ignoring: UUID | None = None,
    ) -> dict[str, Any]:
        """Check Availability: is the practitioner free for that time? Answers the clashing
        appointment when not. The time is ``starts_at``, or the location's local ``date`` and
        ``time`` (with ``location_id``). (Saving can still lose a race; the booking's answer is
        final.)"""
        async with service.pool.acquire() as conn:
            if not await appointments.known(
                conn, "practitioners", "practitioner_id", practitioner_id
            ):
                raise HTTPException(404, f"unknown practitioner {practitioner_id}")
            zone = None
            if location_id is not None:
                require_location(scope, location_id)
                zone = await appointments.location_zone(conn, location_id)
                if zone is None:
                    raise HTTPException(404, f"unknown location {location_id}")
            starts_at = local_or_instant(starts_at, day, wall, zone)
            ends_at = starts_at + timedelta(minutes=duration_minutes)
            clash = await appointments.clashing(conn, practitioner_id, starts_at, ends_at, ignoring)
        answer: dict[str, Any] = {
            "available": clash is None,
            "practitioner_id": practitioner_id,
            "starts_at": starts_at,
            "ends_at": ends_at,
        }
        if zone is not None:
            answer["local_starts_at"] = clinic_time.local(starts_at, zone).isoformat()
            answer["local_ends_at"] = clinic_time.local(ends_at, zone).isoformat()
        if clash is not None:
            answer["clash"] = {
                "appointment_id": clash["appointment_id"],
                "starts_at": clash["starts_at"],
                "ends_at": clash["ends_at"],
            }
            if zone is not None:
                answer["clash"]["local_starts_at"] = clinic_time.local(
                    clash["starts_at"], zone
                ).isoformat()
        return answer


def local_or_instant(
    starts_at: datetime | None, day: date | None, wall: time | None, zone: str | None
) -> datetime:
    """The instant asked about: given as such, or as a local date and time at the location."""
    if starts_at is not None:
        if day is not None or wall is not None:
            raise invalid(["query", "starts_at"], "give 'starts_at' or 'date' and 'time', not both")
        return starts_at
    if day is None or wall is None:
        raise invalid(["query", "starts_at"], "give 'starts_at', or a local 'date' and 'time'")
    if zone is None:
        raise invalid(["query", "location_id"], "a local date and time need their location")
    try:
        return clinic_time.at(day, wall, zone)
    except clinic_time.NoSuchLocalTime as error:
        raise invalid(["query", "time"], str(error)) from None


def package_note(note: Any) -> dict[str, Any] | None:
    """The panel's package note: only while the appointment redeems a line, used it (the
    patient attended) or forfeited it."""
    if note is None or note["state"] == "unlinked":
        return None
    balance = json.loads(note["balance"])
    session = f"{note['package_name']}: session {note['session_number']} of {balance['total']}"
    if note["state"] == "linked":
        text = f"{session}, {balance['remaining']} left"
    elif note["state"] == "used":
        text = f"{session} used, {balance['remaining']} left"
    else:
        number = f" {note['session_number']}" if note["session_number"] is not None else ""
        text = f"{note['package_name']}: session{number} forfeited ({note['detail']})"
    return {
        "state": note["state"],
        "invoice_id": note["invoice_id"],
        "line_id": note["line_id"],
        "package_id": note["package_id"],
        "package_name": note["package_name"],
        "session_number": note["session_number"],
        "balance": balance,
        "text": text,
    }
