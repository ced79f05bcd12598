"""The console's live updates (issue #21 point 4): ``GET /live`` streams Server-Sent Events fed
from the services' event topics, each page only what its staff member may see. Through the real
broker, the services' HTTP APIs with tokens of the local issuer, and the console's own process:
a refused booking reaches the receptionist who gave it, with the calendar's reason, and nobody
else; a booking and its package note reach the staff of its clinic only."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
from packline_contracts.catalogue import DefineLocation, DefinePractitioner
from packline_contracts.invoices import IssuePackageInvoice, PurchaseChannel
from packline_core import issuer

from tests.clinic import (
    DR_A,
    DR_B,
    MASSAGE_60,
    NORTHSIDE,
    SETUP,
    SOUTHSIDE,
    booking,
    days_ahead,
    fee_commands,
    package,
    patient,
)
from tests.conftest import Infrastructure, StartService
from tests.e2e.console_process import console_process
from tests.helpers import eventually
from tests.integration.test_identity import AUDIENCE, local_issuer
from tests.integration.test_invoicing import _has_package, serving

pytestmark = [pytest.mark.infra, pytest.mark.timeout(240)]


class Page:
    """A page's stream: every event it was told, as (event, data)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def told(self, kind: str, **fields: str) -> bool:
        return any(
            event == kind and all(data.get(k) == v for k, v in fields.items())
            for event, data in self.events
        )

    def about(self, appointment_id: object) -> list[str]:
        return [e for e, data in self.events if data.get("appointment_id") == str(appointment_id)]


@contextlib.asynccontextmanager
async def live_page(console: str, token: str) -> AsyncIterator[Page]:
    page = Page()

    async def read() -> None:
        async with (
            httpx.AsyncClient(base_url=console, timeout=None) as client,
            client.stream("GET", "/live", headers={"Authorization": f"Bearer {token}"}) as answer,
        ):
            assert answer.status_code == 200, await answer.aread()
            assert answer.headers["content-type"].startswith("text/event-stream")
            event = ""
            async for line in answer.aiter_lines():
                if line.startswith("event: "):
                    event = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    page.events.append((event, json.loads(line.removeprefix("data: "))))

    reading = asyncio.create_task(read())
    try:
        await eventually(
            lambda: _ready(page, reading), within=30, what="the live feed to be reading"
        )
        yield page
    finally:
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading


async def _ready(page: Page, reading: asyncio.Task[None]) -> bool:
    if reading.done():
        reading.result()  # the stream's failure, if it failed
    return page.told("ready") and page.events[0][1] == {"reading": True}


async def test_each_page_is_told_what_its_staff_member_may_see(
    start_service: StartService,
    producer: Any,
    tmp_path: Path,
    infrastructure: Infrastructure,
    topic_prefix: str,
) -> None:
    keys = issuer.Keys(tmp_path / "issuer-keys.json")
    async with local_issuer(keys) as issuer_url:
        oidc: dict[str, Any] = {
            "oidc_issuer": issuer_url,
            "oidc_audience": AUDIENCE,
            "staff_api_open": False,
        }

        def token(sub: str, clinic: str) -> str:
            return issuer.mint(
                keys,
                issuer=issuer_url,
                audience=AUDIENCE,
                sub=sub,
                name=sub.title(),
                role="reception",
                clinics=[clinic],
            )

        calendar = await start_service("calendar", **oidc)
        invoicing = await start_service("invoicing", **oidc)
        matcher = await start_service("matcher", **oidc)
        for message in SETUP:
            if isinstance(message, DefinePractitioner | DefineLocation):
                await producer.send(message)
        for message in [*fee_commands(), package("north-2", count=2)]:
            await producer.send(message)

        async def ready() -> bool:
            fees = await calendar.pool.fetchval("SELECT count(*) FROM fees")
            return fees == 2 and await _has_package(invoicing, "north-2")

        await eventually(ready, what="the catalogue and the directory")
        async with (
            serving(calendar) as calendar_url,
            serving(invoicing) as invoicing_url,
            serving(matcher) as matcher_url,
            console_process(
                infrastructure,
                topic_prefix,
                {"calendar": calendar_url, "invoicing": invoicing_url, "matcher": matcher_url},
            ) as console,
            live_page(console, token("sam", NORTHSIDE)) as sam,
            live_page(console, token("sue", SOUTHSIDE)) as sue,
        ):
            # Nina has a package and an appointment at Northside: the matcher links it.
            nina, otto = patient(), patient()
            await producer.send(
                IssuePackageInvoice(
                    patient_id=nina,
                    invoice_id=uuid4(),
                    package_id="north-2",
                    channel=PurchaseChannel.ONLINE,
                    issued_by="shop",
                    issued_at=days_ahead(0),
                )
            )
            north = booking(nina, days_ahead(6, hour=9), location=NORTHSIDE, practitioner=DR_A)
            south = booking(otto, days_ahead(6, hour=9), location=SOUTHSIDE, practitioner=DR_B)
            await producer.send(north)
            await producer.send(south)
            await eventually(
                lambda: _async(sam.told("package", appointment_id=str(north.appointment_id))),
                within=60,
                what="Sam's page to hear of Nina's package note",
            )
            await eventually(
                lambda: _async(sue.told("appointment", appointment_id=str(south.appointment_id))),
                within=60,
                what="Sue's page to hear of Otto's booking",
            )
            # Sam books Nina at the time Dr A is already taken: the calendar refuses it.
            async with httpx.AsyncClient(
                base_url=console, headers={"Authorization": f"Bearer {token('sam', NORTHSIDE)}"}
            ) as desk:
                sent = await desk.post(
                    "/commands/appointments",
                    json={
                        "patient_id": nina,
                        "practitioner_id": DR_A,
                        "location_id": NORTHSIDE,
                        "starts_at": north.starts_at.isoformat(),
                        "fee_ids": [MASSAGE_60],
                    },
                )
            assert sent.status_code == 202, sent.text
            refused_id = sent.json()["appointment_id"]
            await eventually(
                lambda: _async(sam.told("refused", appointment_id=refused_id)),
                within=60,
                what="Sam's page to hear the refusal",
            )
            refusal = next(
                data
                for event, data in sam.events
                if event == "refused" and data["appointment_id"] == refused_id
            )
            assert refusal["code"] == "slot_taken" and refusal["reason"], refusal
            # Sue (Southside) heard nothing of Northside: not the booking, its note, the refusal.
            assert sue.about(north.appointment_id) == []
            assert sue.about(refused_id) == []
            assert sam.about(south.appointment_id) == []
            assert "appointment" in sam.about(north.appointment_id)


async def _async(value: bool) -> bool:
    return value
