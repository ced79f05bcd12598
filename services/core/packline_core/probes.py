"""End-to-end probes: proof that broker -> service -> database works, for operators and tests.

``POST /ops/probes`` on any service publishes a probe; every service reads the probes topic in its
own consumer group and records each probe in its database; ``GET /ops/probes/{id}`` says whether
this service has recorded it. Recording is idempotent (primary key on the probe id) and the offset
is committed only after the row is committed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID, uuid4

from fastapi import HTTPException
from faststream import AckPolicy
from faststream.kafka import KafkaMessage
from packline_contracts.envelope import Envelope, decode, encode
from packline_contracts.probes import ProbeSent
from packline_contracts.topics import OPS_PROBES

from packline_core.service import Service


def register_probes(service: Service) -> None:
    topic = service.settings.topic(OPS_PROBES)

    @service.broker.subscriber(
        topic,
        group_id=service.settings.group_id(service.name, "probes"),
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.NACK_ON_ERROR,
    )
    async def record_probe(body: bytes, message: KafkaMessage) -> None:
        record = message.raw_message
        probe = decode(body, record.headers, record.key).payload  # type: ignore[union-attr]
        assert isinstance(probe, ProbeSent)
        await service.pool.execute(
            "INSERT INTO ops_probe_received"
            " (probe_id, sent_by, sent_at, topic, kafka_partition, kafka_offset)"
            " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (probe_id) DO NOTHING",
            probe.probe_id,
            probe.sent_by,
            probe.sent_at,
            record.topic,  # type: ignore[union-attr]
            record.partition,  # type: ignore[union-attr]
            record.offset,  # type: ignore[union-attr]
        )

    @service.http.post("/ops/probes", status_code=202, tags=["operations"])
    async def send_probe() -> ProbeSent:
        probe = ProbeSent(probe_id=uuid4(), sent_by=service.name, sent_at=datetime.now(UTC))
        record = encode(Envelope.wrap(probe, producer=service.name))
        await service.broker.publish(record.value, topic, key=record.key, headers=dict(
            (name, value.decode()) for name, value in record.headers))
        return probe

    @service.http.get("/ops/probes/{probe_id}", tags=["operations"])
    async def probe_received(probe_id: UUID) -> dict[str, object]:
        row = await service.pool.fetchrow(
            "SELECT sent_by, received_at FROM ops_probe_received WHERE probe_id = $1", probe_id
        )
        if row is None:
            raise HTTPException(404, f"{service.name} has not received probe {probe_id}")
        return {"probe_id": probe_id, "received_by": service.name, **dict(row)}
