"""The inbox: which messages a consumer has applied, written in the transaction of their effect."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from packline_core.db import Connection


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where a message was read from."""

    message_id: UUID
    message_type: str
    topic: str
    partition: int
    offset: int


async def claim(
    conn: Connection, consumer: str, instance: str, deliveries: Sequence[Delivery]
) -> set[UUID]:
    """Record the deliveries as applied by ``consumer`` (on replica ``instance``); return the ids
    not applied before.

    Runs inside the transaction that applies them: if that rolls back, so does the claim."""
    rows = await conn.fetch(
        "INSERT INTO inbox (consumer, message_id, message_type, topic, kafka_partition,"
        " kafka_offset, applied_by)"
        " SELECT $1, *, $7 FROM unnest($2::uuid[], $3::text[], $4::text[], $5::int[], $6::bigint[])"
        " ON CONFLICT (consumer, message_id) DO NOTHING RETURNING message_id",
        consumer,
        [d.message_id for d in deliveries],
        [d.message_type for d in deliveries],
        [d.topic for d in deliveries],
        [d.partition for d in deliveries],
        [d.offset for d in deliveries],
        instance,
    )
    return {row["message_id"] for row in rows}
