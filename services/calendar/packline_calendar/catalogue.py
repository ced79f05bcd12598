"""The calendar's copy of invoicing's fee catalogue: it needs each fee's duration (R3's default)
and refuses bookings with fees it does not know."""

from __future__ import annotations

from packline_contracts.catalogue import FeeDefined
from packline_contracts.envelope import Envelope
from packline_core.consumer import MessageConsumer
from packline_core.outbox import Transaction


def register_fees(consumer: MessageConsumer) -> None:
    @consumer.handles(FeeDefined)
    async def keep_fee(tx: Transaction, envelope: Envelope[FeeDefined]) -> None:
        fee = envelope.payload
        await tx.conn.execute(
            "INSERT INTO fees (fee_id, name, duration_minutes) VALUES ($1, $2, $3)"
            " ON CONFLICT (fee_id) DO UPDATE SET name = $2, duration_minutes = $3,"
            " updated_at = now()",
            fee.fee_id,
            fee.name,
            fee.duration_minutes,
        )
