"""The walking skeleton: a message published by one service's broker is consumed by the other
services' consumer groups and recorded in each one's own database, through the real Kafka and
PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
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
            partial(received, service, probe_id),
            what=f"{service.name} to record probe {probe_id}",
        )
    assert (
        await invoicing.pool.fetchval(
            "SELECT sent_by FROM ops_probe_received WHERE probe_id = $1", probe_id
        )
        == "calendar"
    )
    # Applied through the inbox, from the registry's topic; published through the outbox.
    inbox = await invoicing.pool.fetchrow(
        "SELECT consumer, topic FROM inbox WHERE message_type = 'ProbeSent'"
    )
    assert inbox is not None
    assert dict(inbox) == {
        "consumer": "invoicing.probes",
        "topic": invoicing.settings.topic(OPS_PROBES),
    }
    assert (
        await calendar.pool.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL") == 1
    )

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
    record = encode(Envelope.wrap(probe, producer="test"))
    topic = calendar.settings.topic(OPS_PROBES)
    for _ in range(2):  # the same record twice, as a producer retry or a replay would
        await calendar.producer.send_and_wait(
            topic, record.value, record.key, headers=record.headers
        )

    def deduplicated() -> float:
        return (
            invoicing.metrics.registry.get_sample_value(
                "packline_messages_deduplicated_total",
                {"consumer": "invoicing.probes", "message_type": "ProbeSent"},
            )
            or 0.0
        )

    async def second_copy_skipped() -> bool:
        return deduplicated() >= 1

    await eventually(second_copy_skipped, what="the second copy to be skipped")
    assert await received(invoicing, probe.probe_id) == 1
    assert await invoicing.pool.fetchval("SELECT count(*) FROM inbox") == 1


async def test_health_and_metrics_endpoints(start_service: StartService) -> None:
    matcher = await start_service("matcher")
    transport = httpx.ASGITransport(app=matcher.http)
    async with httpx.AsyncClient(transport=transport, base_url="http://matcher") as client:
        ready = await client.get("/health/ready")
        live = await client.get("/health/live")
        metrics = await client.get("/metrics")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "service": "matcher",
        "database": "ok",
        "kafka": "ok",
        "consumers": "ok",
    }
    assert live.json()["status"] == "alive"
    assert metrics.status_code == 200
    for name in ("packline_outbox_backlog", "packline_outbox_relay_active", "process_cpu_seconds"):
        assert name in metrics.text
