"""``GET /links`` on every service: the links it knows (appointment, invoice, line, state), which
``packline-admin reconcile`` compares (packline_core.reconcile). One route for all three: each
service gives only the query of its own table; the order (appointment, then line), the page and
its cursor are the same everywhere (packline_core.paging)."""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response

from packline_core.auth import needs
from packline_core.openapi import Link
from packline_core.paging import Cursor, Limit, page, read_cursor
from packline_core.service import Service


def register_links(service: Service, known: str, what: str) -> None:
    """``known``: a SELECT of the service's links (columns appointment_id, invoice_id, line_id,
    state; appointment_id never null), read a page at a time in (appointment_id, line_id)
    order, on an index that leads with appointment_id. ``what``: the route's description."""

    @service.http.get(
        "/links",
        dependencies=[needs("operations")],
        tags=["operations"],
        response_model=list[Link],
        description=f"{what} In appointment order, a page at a time (Link rel=next).",
    )
    async def links(
        request: Request, response: Response, limit: Limit = 2000, cursor: Cursor = None
    ) -> list[dict[str, Any]]:
        after = read_cursor(cursor, 2)
        rows = await service.pool.fetch(
            f"SELECT appointment_id, invoice_id, line_id, state FROM ({known}) AS known"
            " WHERE ($1::uuid IS NULL OR (appointment_id, line_id) > ($1::uuid, $2::uuid))"
            " ORDER BY appointment_id, line_id LIMIT $3",
            after[0] if after else None,
            after[1] if after else None,
            limit + 1,
        )
        shown = page(
            rows, limit, request, response, lambda r: [str(r["appointment_id"]), str(r["line_id"])]
        )
        return [dict(row) for row in shown]
