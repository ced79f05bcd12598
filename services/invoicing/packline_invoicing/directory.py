"""The calendar's locations as invoicing needs them: their time zones (R15). Read from the
calendar's compacted directory topic, so a new replica rebuilds them from the start."""

from __future__ import annotations

from packline_contracts.catalogue import LocationDefined
from packline_contracts.envelope import Envelope
from packline_core.consumer import MessageConsumer
from packline_core.db import Connection
from packline_core.outbox import Transaction


def register_directory(consumer: MessageConsumer) -> None:
    consumer.handles(LocationDefined)(location_defined)


async def location_defined(tx: Transaction, envelope: Envelope[LocationDefined]) -> None:
    location = envelope.payload
    await tx.conn.execute(
        "INSERT INTO locations (location_id, time_zone) VALUES ($1, $2)"
        " ON CONFLICT (location_id) DO UPDATE SET time_zone = $2, updated_at = now()",
        location.location_id,
        location.time_zone,
    )


async def zone_of(conn: Connection, location_id: str) -> str | None:
    """The location's time zone; None while invoicing has not heard of the location."""
    zone: str | None = await conn.fetchval(
        "SELECT time_zone FROM locations WHERE location_id = $1", location_id
    )
    return zone
