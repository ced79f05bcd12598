"""Staff identity end to end: the calendar and invoicing verify access tokens of the local issuer
(its JWKS served over HTTP on a real port), and every staff action is recorded as the token's
staff member, never as what the request says (issue #19 points 1 and 3)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
import uvicorn
from packline_contracts.appointments import BookAppointment
from packline_contracts.catalogue import DefineLocation, DefinePractitioner
from packline_contracts.invoices import LineLinked, LineUnlinked, PackageInvoiceIssued
from packline_contracts.topics import CALENDAR_COMMANDS, INVOICING_EVENTS
from packline_core import issuer
from packline_core.service import Service

from tests.clinic import DR_A, NORTHSIDE, SETUP, days_ahead, fee_commands, package, patient
from tests.conftest import ReadEvents, StartService
from tests.e2e.test_service_process import free_port
from tests.helpers import eventually
from tests.integration.test_invoicing import _has_package, buy, serving

pytestmark = pytest.mark.infra

AUDIENCE = "packline"


@contextlib.asynccontextmanager
async def local_issuer(keys: issuer.Keys) -> AsyncIterator[str]:
    """The local issuer's discovery document and JWKS on a real port; yields its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = uvicorn.Server(
        uvicorn.Config(issuer.app(keys, url), port=port, lifespan="off", log_config=None)
    )
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        return server.started

    await eventually(started, what="the local issuer")
    try:
        yield url
    finally:
        server.should_exit = True
        await task


def client(service: Service, token: str | None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=service.http), base_url="http://x", headers=headers
    )


async def test_staff_act_under_their_verified_identity(
    start_service: StartService, producer: Any, read_events: ReadEvents, tmp_path: Path
) -> None:
    keys = issuer.Keys(tmp_path / "issuer-keys.json")
    events = await read_events(INVOICING_EVENTS)
    commands = await read_events(CALENDAR_COMMANDS)
    async with local_issuer(keys) as issuer_url:
        oidc: dict[str, Any] = {
            "oidc_issuer": issuer_url,
            "oidc_audience": AUDIENCE,
            "staff_api_open": False,
        }

        def token(**claims: Any) -> str:
            who = {"sub": "sam", "name": "Sam Lee", "role": "reception", "clinics": [NORTHSIDE]}
            return issuer.mint(keys, issuer=issuer_url, audience=AUDIENCE, **(who | claims))

        calendar = await start_service("calendar", **oidc)
        for message in SETUP:
            if isinstance(message, DefinePractitioner | DefineLocation):
                await producer.send(message)
        async with serving(calendar) as calendar_url:
            # Invoicing asks the calendar (Check Availability) with the caller's own token.
            invoicing = await start_service("invoicing", calendar_url=calendar_url, **oidc)
            for message in [
                *fee_commands(),
                package("massage-2-dr-a", count=2, practitioners=[DR_A], locations=[NORTHSIDE]),
            ]:
                await producer.send(message)

            async def ready() -> bool:
                fees = await calendar.pool.fetchval("SELECT count(*) FROM fees")
                return bool(fees == 2 and await _has_package(invoicing, "massage-2-dr-a"))

            await eventually(ready, what="both catalogues")
            invoice = await buy(producer, events, patient(), "massage-2-dr-a")
            base = f"/invoices/{invoice.invoice_id}/lines/{invoice.lines[0].line_id}"
            when = days_ahead(3, hour=9)

            async with client(invoicing, token()) as sam, client(calendar, token()) as sam_c:
                who = (await sam_c.get("/whoami")).json()
                assert (who["sub"], who["name"], who["role"]) == ("sam", "Sam Lee", "reception")
                assert who["clinics"] == [NORTHSIDE]
                free = await sam.get(f"{base}/availability", params={"starts_at": when.isoformat()})
                assert free.status_code == 200 and free.json()["available"] is True, free.text

                # Someone else's name in the body is refused, naming the field.
                other = await sam.put(
                    f"{base}/appointment",
                    json={"starts_at": when.isoformat(), "booked_by": "reception:maria"},
                )
                assert other.status_code == 422
                assert other.json()["detail"][0]["loc"] == ["body", "booked_by"]

                saved = await sam.put(f"{base}/appointment", json={"starts_at": when.isoformat()})
                assert saved.status_code == 202, saved.text
                appointment_id = saved.json()["appointment_id"]
                command = await commands.wait_for(
                    BookAppointment, lambda e: str(e.payload.appointment_id) == appointment_id
                )
                assert command.payload.booked_by == "sam"
                await events.wait_for(
                    LineLinked, lambda e: str(e.payload.appointment_id) == appointment_id
                )
                recorded = await calendar.pool.fetchval(
                    "SELECT booked_by FROM appointments WHERE appointment_id = $1",
                    command.payload.appointment_id,
                )
                assert recorded == "sam"

                # A billing token cannot unlink (roles); an expired token is not accepted.
                async with client(invoicing, token(sub="bea", role="billing")) as bea:
                    denied = await bea.delete(f"{base}/appointment")
                assert denied.status_code == 403, denied.text
                expired = token(now=time.time() - 7200, lifetime_seconds=600)
                async with client(invoicing, expired) as late:
                    refused = await late.delete(f"{base}/appointment")
                assert refused.status_code == 401 and "expired" in refused.json()["detail"]
                async with client(invoicing, None) as anonymous:
                    nobody = await anonymous.get(f"/invoices/{invoice.invoice_id}")
                assert nobody.status_code == 401

                mismatch = await sam.delete(f"{base}/appointment", params={"unassigned_by": "x"})
                assert mismatch.status_code == 422
                assert mismatch.json()["detail"][0]["loc"] == ["query", "unassigned_by"]
                unassigned = await sam.delete(f"{base}/appointment")
                assert unassigned.status_code == 200, unassigned.text
                unlinked = await events.wait_for(
                    LineUnlinked, lambda e: str(e.payload.appointment_id) == appointment_id
                )
                assert unlinked.payload.unlinked_by == "sam"  # the event says who
                shown = (await sam.get(f"/invoices/{invoice.invoice_id}")).json()["lines"][0]
                assert shown["shows"] == "Unassigned"
                assert shown["note"].startswith("unlinked by Sam Lee (sam) at ")

                # Selling records the seller from the token too; reception does not sell.
                sold = await sam.post(
                    "/invoices",
                    json={"patient_id": patient(), "package_id": "massage-2-dr-a"},
                )
                assert sold.status_code == 403, sold.text
                async with client(invoicing, token(sub="bea", role="billing")) as bea:
                    sale = {"patient_id": patient(), "package_id": "massage-2-dr-a"}
                    wrong = await bea.post("/invoices", json=sale | {"issued_by": "sam"})
                    assert wrong.status_code == 422
                    assert wrong.json()["detail"][0]["loc"] == ["body", "issued_by"]
                    right = await bea.post("/invoices", json=sale)
                    assert right.status_code == 201, right.text
                issued_by = await invoicing.pool.fetchval(
                    "SELECT issued_by FROM package_invoices WHERE invoice_id = $1",
                    UUID(right.json()["invoice_id"]),
                )
                assert issued_by == "bea"
                issued = await events.wait_for(
                    PackageInvoiceIssued,
                    lambda e: str(e.payload.invoice_id) == right.json()["invoice_id"],
                )
                assert issued.payload.issued_by == "bea"


async def test_tokens_that_do_not_verify_are_refused_and_rotated_keys_are_picked_up(
    start_service: StartService, tmp_path: Path
) -> None:
    """Against the calendar verifying tokens of the local issuer served on a real port: another
    key, audience or issuer is refused (401); after the issuer rotates its key, tokens signed by
    the new one are accepted without a restart (the old key's tokens too, while it is published)."""
    keys = issuer.Keys(tmp_path / "issuer-keys.json")
    forger = issuer.Keys(tmp_path / "someone-elses-keys.json")
    async with local_issuer(keys) as issuer_url:
        calendar = await start_service(
            "calendar", oidc_issuer=issuer_url, oidc_audience=AUDIENCE, staff_api_open=False
        )

        def token(signer: issuer.Keys = keys, **claims: Any) -> str:
            claims = {"issuer": issuer_url, "audience": AUDIENCE} | claims
            return issuer.mint(signer, sub="sam", role="reception", **claims)

        async def status(presented: str) -> int:
            async with client(calendar, presented) as http:
                return (await http.get("/whoami")).status_code

        before_rotation = token()
        assert await status(before_rotation) == 200
        refused = {
            "signed by another key": token(forger),
            "for another audience": token(audience="billing-system"),
            "from another issuer": token(issuer="http://127.0.0.1:1/other"),
            "expired": token(now=time.time() - 7200, lifetime_seconds=600),
        }
        for why, presented in refused.items():
            assert await status(presented) == 401, why

        keys.rotate()  # a new signing key; the old one is still published
        after_rotation = token()

        async def accepted() -> bool:
            return await status(after_rotation) == 200

        # The verifier fetches the keys again for an unknown key, at most every 10 s.
        await eventually(accepted, within=30, interval=0.5, what="the rotated key accepted")
        assert await status(before_rotation) == 200
