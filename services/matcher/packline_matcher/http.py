"""The matcher's HTTP API: why an appointment was not matched (R7), and its read model of a
patient (for staff front ends and for checking that the services agree)."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

from fastapi import HTTPException, Request, Response
from packline_contracts.types import PatientId
from packline_core.auth import needs
from packline_core.http_errors import invalid
from packline_core.links import register_links
from packline_core.openapi import NOT_FOUND
from packline_core.paging import Cursor, Limit, instant_of, page, read_cursor
from packline_core.scope import CallerScope, require_patient, require_practitioner
from packline_core.service import Service

from packline_matcher import readmodel
from packline_matcher.responses import AppointmentSeen, Explanation, PatientLines


def register_http(service: Service) -> None:
    register_links(
        service,
        "SELECT appointment_id, invoice_id, line_id,"
        " CASE status WHEN 'requested' THEN 'pending' ELSE status END AS state"
        " FROM lines WHERE status IN ('linked', 'used', 'forfeited', 'requested')"
        " AND appointment_id IS NOT NULL",
        "The read model's links, and the links it is waiting to hear about ('pending').",
    )

    @service.http.get(
        "/appointments/{appointment_id}/explanation",
        dependencies=[needs("read calendar")],
        tags=["matching"],
        response_model=Explanation,
        responses=NOT_FOUND,
    )
    async def explanation(appointment_id: UUID, scope: CallerScope) -> dict[str, Any]:
        """Why the appointment redeems no package. 403 when its patient is seen only at other
        clinics, or for another practitioner's appointment."""
        async with service.pool.acquire() as conn:
            seen = await conn.fetchrow(
                "SELECT patient_id, practitioner_id FROM appointments WHERE appointment_id = $1",
                appointment_id,
            )
            if seen is not None:
                require_practitioner(scope, seen["practitioner_id"])
                patient = seen["patient_id"]
                require_patient(scope, patient, await readmodel.seen_at(conn, patient))
            elif not scope.everywhere:
                raise HTTPException(404, f"no appointment {appointment_id} seen yet")
            row = await conn.fetchrow(
                "SELECT * FROM explanations WHERE appointment_id = $1", appointment_id
            )
        if row is None:
            raise HTTPException(
                404,
                f"no explanation for {appointment_id}: linked, or no "
                "package of the patient covers its fees",
            )
        return {
            "appointment_id": appointment_id,
            "appointment_version": row["appointment_version"],
            "summary": row["summary"],
            "candidates": json.loads(row["candidates"]),
            "explained_at": row["explained_at"],
        }

    @service.http.get(
        "/patients/{patient_id}/appointments",
        dependencies=[needs("read calendar")],
        tags=["matching"],
        response_model=list[AppointmentSeen],
    )
    async def appointments(
        patient_id: PatientId,
        scope: CallerScope,
        request: Request,
        response: Response,
        limit: Limit = 100,
        cursor: Cursor = None,
    ) -> list[dict[str, Any]]:
        """The appointments the matcher has seen for a patient, as it knows them, in time
        order, a page at a time (a practitioner: only theirs)."""
        after = read_cursor(cursor, 2)
        async with service.pool.acquire() as conn:
            require_patient(scope, patient_id, await readmodel.seen_at(conn, patient_id))
            rows = await conn.fetch(
                "SELECT appointment_id, version, starts_at, status, hand_unlinked"
                " FROM appointments WHERE patient_id = $1"
                " AND ($2::text IS NULL OR practitioner_id = $2)"
                " AND ($3::timestamptz IS NULL OR (starts_at, appointment_id) > ($3, $4::uuid))"
                " ORDER BY starts_at, appointment_id LIMIT $5",
                patient_id,
                scope.practitioner_id,
                instant_of(after[0]) if after else None,
                after[1] if after else None,
                limit + 1,
            )
        shown = page(
            rows,
            limit,
            request,
            response,
            lambda r: [r["starts_at"].isoformat(), str(r["appointment_id"])],
        )
        return [dict(row) for row in shown]

    @service.http.get(
        "/patients/{patient_id}/links",
        dependencies=[needs("read invoices")],
        tags=["matching"],
        response_model=PatientLines,
    )
    async def links(
        patient_id: PatientId,
        scope: CallerScope,
        request: Request,
        response: Response,
        limit: Limit = 500,
        cursor: Cursor = None,
    ) -> dict[str, Any]:
        """The read model's view of which line holds which appointment, a page at a time."""
        after = read_cursor(cursor, 2)
        if after is not None and not after[1].isdigit():
            raise invalid(["query", "cursor"], "not a cursor this list answered")
        async with service.pool.acquire() as conn:
            require_patient(scope, patient_id, await readmodel.seen_at(conn, patient_id))
            rows = await conn.fetch(
                "SELECT line_id, invoice_id, line_number, status, appointment_id FROM lines"
                " WHERE patient_id = $1"
                " AND ($2::uuid IS NULL OR (invoice_id, line_number) > ($2::uuid, $3::int))"
                " ORDER BY invoice_id, line_number LIMIT $4",
                patient_id,
                after[0] if after else None,
                int(after[1]) if after else None,
                limit + 1,
            )
        shown = page(
            rows, limit, request, response, lambda r: [str(r["invoice_id"]), str(r["line_number"])]
        )
        return {
            "patient_id": patient_id,
            "lines": [{k: v for k, v in row.items() if k != "line_number"} for row in shown],
        }
