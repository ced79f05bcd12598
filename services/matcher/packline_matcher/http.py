"""The matcher's HTTP API: why an appointment was not matched (R7), and its read model of a
patient (for staff front ends and for checking that the services agree)."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

from fastapi import HTTPException
from packline_contracts.types import PatientId
from packline_core.auth import needs
from packline_core.openapi import NOT_FOUND, Link
from packline_core.service import Service

from packline_matcher.responses import AppointmentSeen, Explanation, PatientLines


def register_http(service: Service) -> None:
    @service.http.get(
        "/appointments/{appointment_id}/explanation",
        dependencies=[needs("read calendar")],
        tags=["matching"],
        response_model=Explanation,
        responses=NOT_FOUND,
    )
    async def explanation(appointment_id: UUID) -> dict[str, Any]:
        row = await service.pool.fetchrow(
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
        "/links", dependencies=[needs("operations")], tags=["operations"], response_model=list[Link]
    )
    async def all_links() -> list[dict[str, Any]]:
        """The read model's links, and the links it is waiting to hear about (for reconcile)."""
        rows = await service.pool.fetch(
            "SELECT appointment_id, invoice_id, line_id,"
            " CASE status WHEN 'requested' THEN 'pending' ELSE status END AS state"
            " FROM lines WHERE status IN ('linked', 'used', 'forfeited', 'requested')"
            " AND appointment_id IS NOT NULL"
        )
        return [dict(row) for row in rows]

    @service.http.get(
        "/patients/{patient_id}/appointments",
        dependencies=[needs("read calendar")],
        tags=["matching"],
        response_model=list[AppointmentSeen],
    )
    async def appointments(patient_id: PatientId) -> list[dict[str, Any]]:
        """The appointments the matcher has seen for a patient, as it knows them."""
        rows = await service.pool.fetch(
            "SELECT appointment_id, version, starts_at, status, hand_unlinked FROM appointments"
            " WHERE patient_id = $1 ORDER BY starts_at",
            patient_id,
        )
        return [dict(row) for row in rows]

    @service.http.get(
        "/patients/{patient_id}/links",
        dependencies=[needs("read invoices")],
        tags=["matching"],
        response_model=PatientLines,
    )
    async def links(patient_id: PatientId) -> dict[str, Any]:
        """The read model's view of which line holds which appointment."""
        rows = await service.pool.fetch(
            "SELECT line_id, invoice_id, status, appointment_id FROM lines"
            " WHERE patient_id = $1 ORDER BY invoice_id, line_number",
            patient_id,
        )
        return {"patient_id": patient_id, "lines": [dict(row) for row in rows]}
