"""Staff HTTP endpoints need a configured token; probes and Prometheus stay open (configurably)."""

from __future__ import annotations

import secrets
from uuid import uuid4

import httpx
import pytest
from packline_calendar.settings import CalendarSettings
from packline_core.service import Service

from tests.conftest import StartService

pytestmark = pytest.mark.infra


def client(service: Service, token: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=service.http), base_url="http://x", headers=headers
    )


async def test_staff_requests_need_a_valid_token(start_service: StartService) -> None:
    old, new = secrets.token_hex(32), secrets.token_hex(32)
    calendar = await start_service("calendar", staff_tokens=f"{old},{new}")
    path = f"/appointments/{uuid4()}"
    async with client(calendar) as anonymous:
        missing = await anonymous.get(path)
        live = await anonymous.get("/health/live")
        metrics = await anonymous.get("/metrics")
    async with client(calendar, "guess") as guessing:
        wrong = await guessing.get(path)
    async with client(calendar, new) as staff:
        allowed = await staff.get(path)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert wrong.status_code == 403
    assert allowed.status_code == 404  # past the door: the appointment does not exist
    assert live.status_code == 200 and metrics.status_code == 200
    assert new not in repr(calendar.settings) and new not in str(calendar.settings.model_dump())


async def test_operations_can_be_closed_too(start_service: StartService) -> None:
    token = secrets.token_hex(32)
    calendar = await start_service("calendar", staff_tokens=token, open_operations=False)
    async with client(calendar) as anonymous:
        assert (await anonymous.get("/metrics")).status_code == 401
    async with client(calendar, token) as staff:
        assert (await staff.get("/metrics")).status_code == 200


def test_tokens_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PACKLINE_STAFF_TOKENS", f"{secrets.token_hex(32)},{secrets.token_hex(32)}")
    assert CalendarSettings().staff_tokens is not None
