"""Bad input over HTTP: wrong types, malformed JSON, huge bodies and unknown ids each get a clear
answer (422 / 413 / 404) naming what is wrong, and change nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from uuid import uuid4

import httpx
import pytest
from packline_core.service import Service

from tests.conftest import StartService

pytestmark = pytest.mark.infra


def staff(service: Service) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=service.http), base_url="http://x")


async def nothing_written(service: Service) -> None:
    async with service.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM package_invoices") == 0
        assert await conn.fetchval("SELECT count(*) FROM outbox") == 0


async def test_wrong_types_and_malformed_json_are_refused_by_field(
    start_service: StartService,
) -> None:
    invoicing = await start_service("invoicing")
    async with staff(invoicing) as client:
        wrong = await client.post(
            "/invoices",
            json={"patient_id": 7, "package_id": "p", "issued_by": "ann", "invoice_id": "x"},
        )
        malformed = await client.post(
            "/invoices", content=b'{"patient_id": ', headers={"content-type": "application/json"}
        )
        empty = await client.post("/invoices", json={})
    assert wrong.status_code == 422
    fields = {tuple(problem["loc"][1:]) for problem in wrong.json()["detail"]}
    assert fields == {("patient_id",), ("invoice_id",)}
    assert malformed.status_code == 422 and "json" in malformed.text.lower()
    assert empty.status_code == 422
    assert {problem["loc"][-1] for problem in empty.json()["detail"]} == {
        "patient_id",
        "package_id",
        "issued_by",
    }
    await nothing_written(invoicing)


async def test_huge_bodies_are_refused_before_they_are_read(start_service: StartService) -> None:
    invoicing = await start_service("invoicing", http_max_body_bytes=64 * 1024)
    huge = b'{"patient_id": "' + b"x" * (5 * 1024 * 1024) + b'"}'

    async def streamed() -> AsyncIterator[bytes]:  # chunked: no Content-Length to go by
        for start in range(0, len(huge), 16 * 1024):
            yield huge[start : start + 16 * 1024]

    async with staff(invoicing) as client:
        declared = await client.post(
            "/invoices", content=huge, headers={"content-type": "application/json"}
        )
        chunked = await client.post(
            "/invoices", content=streamed(), headers={"content-type": "application/json"}
        )
        lying = await client.post(
            "/invoices", content=b"{}", headers={"content-length": "not-a-number"}
        )
        still_served = await client.get("/health/live")
    assert declared.status_code == 413 and "larger than 65536 bytes" in declared.text
    assert chunked.status_code == 413
    assert lying.status_code == 400 and "Content-Length" in lying.text
    assert still_served.status_code == 200
    await nothing_written(invoicing)


async def test_unknown_and_malformed_ids(start_service: StartService) -> None:
    invoicing = await start_service("invoicing")
    calendar = await start_service("calendar")
    unknown = uuid4()
    async with staff(invoicing) as billing, staff(calendar) as diary:
        answers = {
            "invoice": await billing.get(f"/invoices/{unknown}"),
            "package": await billing.get("/packages/no-such-package"),
            "line booking": await billing.put(
                f"/invoices/{unknown}/lines/{uuid4()}/appointment",
                json={
                    "starts_at": "2030-01-07T10:00:00+00:00",
                    "practitioner_id": "pr",
                    "location_id": "lo",
                    "fee_ids": ["f"],
                },
            ),
            "line unlink": await billing.delete(f"/invoices/{unknown}/lines/{uuid4()}/appointment"),
            "appointment": await diary.get(f"/appointments/{unknown}"),
        }
        not_an_id = await billing.get("/invoices/42")
    for what, answer in answers.items():
        assert answer.status_code in (404, 422), what
        assert (
            str(unknown) in answer.text or "no package" in answer.text or answer.status_code == 422
        ), what
    assert answers["invoice"].status_code == 404 and answers["appointment"].status_code == 404
    assert not_an_id.status_code == 422 and "uuid" in not_an_id.text.lower()
    await nothing_written(invoicing)
