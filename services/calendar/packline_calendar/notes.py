"""The package note in the appointment panel (R4): which package invoice and line an appointment
redeems, from invoicing's line events. A link event is applied only when it is newer than the
note's (``link_version``), so a replay or a late duplicate never overwrites a newer state."""

from __future__ import annotations

import json

from packline_contracts.envelope import Envelope
from packline_contracts.invoices import (
    LineEvent,
    LineForfeited,
    LineLinked,
    LineUnlinked,
    LineUsed,
)
from packline_core.consumer import MessageConsumer
from packline_core.outbox import Transaction


def register_package_notes(consumer: MessageConsumer) -> None:
    consumer.handles(LineLinked, LineUnlinked, LineForfeited, LineUsed)(note_link_change)


async def note_link_change(
    tx: Transaction, envelope: Envelope[LineLinked | LineUnlinked | LineForfeited | LineUsed]
) -> None:
    event = envelope.payload
    state, session, detail = describe(event)
    await tx.conn.execute(
        "INSERT INTO package_notes (appointment_id, link_version, state, invoice_id, line_id,"
        " package_id, package_name, session_number, balance, detail)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        " ON CONFLICT (appointment_id) DO UPDATE SET link_version = $2, state = $3,"
        " invoice_id = $4, line_id = $5, package_id = $6, package_name = $7,"
        " session_number = $8, balance = $9, detail = $10, updated_at = now()"
        " WHERE package_notes.link_version < $2",
        event.appointment_id,
        event.link_version,
        state,
        event.invoice_id,
        event.line.line_id,
        event.package_id,
        event.package_name,
        session,
        json.dumps(event.balance.model_dump(mode="json")),
        detail,
    )


def describe(event: LineEvent) -> tuple[str, int | None, str | None]:
    if isinstance(event, LineLinked):
        return "linked", event.session_number, event.rule
    if isinstance(event, LineUsed):
        return "used", event.session_number, None
    if isinstance(event, LineForfeited):
        return "forfeited", None, event.reason
    assert isinstance(event, LineUnlinked)
    return "unlinked", None, event.reason.value
