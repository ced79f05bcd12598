"""The walking skeleton: a message published by one service's broker is consumed by the other
services' consumer groups and recorded in each one's own database, through the real Kafka and
PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import httpx
import pytest
from packline_contracts.envelope import Envelope, encode
from packline_contracts.probes import ProbeSent
from packline_contracts.topics import OPS_PROBES
from packline_core.service import Service

from tests.conftest import StartService
from tests.helpers import eventually

pytestmark = pytest.mark.infra


async def received(service: Service, probe_id: object) -> int:
    count: int = await service.pool.fetchval(
        "SELECT count(*) FROM ops_probe_received WHERE probe_id = $1", probe_id
    )
    return count


async def test_probe_from_calendar_is_recorded_by_invoicing_and_matcher(
    start_service: StartService,
) -> None:
    calendar = await start_service("calendar")
    invoicing = await start_service("invoicing")
    matcher = await start_service("matcher")

    transport = httpx.ASGITransport(app=calendar.http)
    async with httpx.AsyncClient(transport=transport, base_url="http://calendar") as client:
        answer = await client.post("/ops/probes")
    assert answer.status_code == 202
    probe_id = answer.json()["probe_id"]

    for service in (invoicing, matcher, calendar):
        await eventually(
            lambda service=service: received(service, probe_id),
            what=f"{service.name} to record probe {probe_id}",
        )
    row = await invoicing.pool.fetchrow(
        "SELECT sent_by, topic FROM ops_probe_received WHERE probe_id = $1", probe_id
    )
    assert row["sent_by"] == "calendar"
    assert row["topic"] == invoicing.settings.topic(OPS_PROBES)

    transport = httpx.ASGITransport(app=matcher.http)
    async with httpx.AsyncClient(transport=transport, base_url="http://matcher") as client:
        shown = await client.get(f"/ops/probes/{probe_id}")
        unknown = await client.get(f"/ops/probes/{uuid4()}")
    assert shown.status_code == 200 and shown.json()["received_by"] == "matcher"
    assert unknown.status_code == 404


async def test_a_probe_delivered_twice_is_recorded_once(start_service: StartService) -> None:
    invoicing = await start_service("invoicing")
    calendar = await start_service("calendar")
    probe = ProbeSent(probe_id=uuid4(), sent_by="test", sent_at=datetime.now(UTC))
    marker = ProbeSent(probe_id=uuid4(), sent_by="test", sent_at=datetime.now(UTC))
    topic = calendar.settings.topic(OPS_PROBES)
    # Same key, so all three land on one partition in this order: the marker arrives last.
    probe_record = encode(Envelope.wrap(probe, producer="test"))
    marker_record = encode(Envelope.wrap(marker, producer="test"))
    for record in (probe_record, probe_record, marker_record):
        await calendar.broker.publish(record.value, topic, key=b"same-partition")

    await eventually(lambda: received(invoicing, marker.probe_id), what="the marker probe")
    assert await received(invoicing, probe.probe_id) == 1
    assert await invoicing.pool.fetchval("SELECT count(*) FROM ops_probe_received") == 2


async def test_readiness_reports_database_and_broker(start_service: StartService) -> None:
    matcher = await start_service("matcher")
    transport = httpx.ASGITransport(app=matcher.http)
    async with httpx.AsyncClient(transport=transport, base_url="http://matcher") as client:
        ready = await client.get("/health/ready")
        live = await client.get("/health/live")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "service": "matcher",
        "database": "ok",
        "kafka": "ok",
    }
    assert live.json()["status"] == "alive"
