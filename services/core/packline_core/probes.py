"""End-to-end probes: proof that the whole path works, for operators and tests.

``POST /ops/probes`` on any service writes a probe to its outbox; the relay publishes it; every
service reads the probes topic in its own consumer group and records the probe in its database;
``GET /ops/probes/{id}`` says whether this service has. A probe that arrives everywhere shows that
HTTP -> database -> outbox -> Kafka -> consumer -> inbox -> database works.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

from fastapi import HTTPException
from packline_contracts.envelope import Envelope
from packline_contracts.probes import ProbeSent

from packline_core.auth import needs
from packline_core.openapi import NOT_FOUND, ProbeReceived
from packline_core.outbox import Transaction
from packline_core.service import Service


def register_probes(service: Service) -> None:
    probes = service.consumer("probes")

    @probes.handles(ProbeSent)
    async def record_probe(tx: Transaction, envelope: Envelope[ProbeSent]) -> None:
        probe = envelope.payload
        # No ON CONFLICT: the inbox alone keeps a redelivered probe from being recorded twice,
        # and if it ever failed to, the primary key would make that loud.
        await tx.conn.execute(
            "INSERT INTO ops_probe_received (probe_id, sent_by, sent_at) VALUES ($1, $2, $3)",
            probe.probe_id,
            probe.sent_by,
            probe.sent_at,
        )

    @service.http.post(
        "/ops/probes", dependencies=[needs("operations")], status_code=202, tags=["operations"]
    )
    async def send_probe() -> ProbeSent:
        probe = ProbeSent(probe_id=uuid4(), sent_by=service.name, sent_at=datetime.now(UTC))
        async with service.transaction() as tx:
            tx.publish(probe)
        return probe

    @service.http.get(
        "/ops/probes/{probe_id}",
        dependencies=[needs("operations")],
        tags=["operations"],
        response_model=ProbeReceived,
        responses=NOT_FOUND,
    )
    async def probe_received(probe_id: UUID) -> dict[str, Any]:
        row = await service.pool.fetchrow(
            "SELECT sent_by, received_at FROM ops_probe_received WHERE probe_id = $1", probe_id
        )
        if row is None:
            raise HTTPException(404, f"{service.name} has not received probe {probe_id}")
        return {"probe_id": probe_id, "received_by": service.name, **dict(row)}
