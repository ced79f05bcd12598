"""The package note in the appointment panel (R4): which package invoice and line an appointment
redeems, from invoicing's line events. A link event is applied only when it is newer than the
note's (``link_version``), so a replay or a late duplicate never overwrites a newer state."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from packline_contracts.envelope import Envelope
from packline_contracts.invoices import (
    LineEvent,
    LineForfeited,
    LineLinked,
    LineUnlinked,
    LineUsed,
)
from packline_core.consumer import MessageConsumer
from packline_core.db import Connection
from packline_core.outbox import Transaction

NoteEvent = LineLinked | LineUnlinked | LineForfeited | LineUsed


def register_package_notes(consumer: MessageConsumer) -> None:
    consumer.handles_batch(LineLinked, LineUnlinked, LineForfeited, LineUsed)(note_link_changes)


async def note_link_changes(
    conn: Connection, messages: list[tuple[Transaction, Envelope[Any]]]
) -> None:
    """A batch's line events in one statement: per appointment the newest, applied only over an
    older note."""
    notes = newest([envelope.payload for _, envelope in messages])
    described = [describe(e) for e in notes]
    await conn.execute(
        "INSERT INTO package_notes AS n (appointment_id, link_version, state, invoice_id,"
        " line_id, package_id, package_name, session_number, balance, detail)"
        " SELECT * FROM unnest($1::uuid[], $2::integer[], $3::text[], $4::uuid[], $5::uuid[],"
        " $6::text[], $7::text[], $8::integer[], $9::jsonb[], $10::text[])"
        " ON CONFLICT (appointment_id) DO UPDATE SET link_version = EXCLUDED.link_version,"
        " state = EXCLUDED.state, invoice_id = EXCLUDED.invoice_id, line_id = EXCLUDED.line_id,"
        " package_id = EXCLUDED.package_id, package_name = EXCLUDED.package_name,"
        # A forfeit does not carry the session's number: the note keeps the one it was linked as.
        " session_number = CASE WHEN EXCLUDED.session_number IS NULL"
        "  AND n.line_id = EXCLUDED.line_id THEN n.session_number"
        "  ELSE EXCLUDED.session_number END, balance = EXCLUDED.balance,"
        " detail = EXCLUDED.detail, updated_at = now()"
        " WHERE n.link_version < EXCLUDED.link_version",
        [e.appointment_id for e in notes],
        [e.link_version for e in notes],
        [state for state, _, _ in described],
        [e.invoice_id for e in notes],
        [e.line.line_id for e in notes],
        [e.package_id for e in notes],
        [e.package_name for e in notes],
        [session for _, session, _ in described],
        [json.dumps(e.balance.model_dump(mode="json")) for e in notes],
        [detail for _, _, detail in described],
    )


def newest(events: Sequence[NoteEvent]) -> list[NoteEvent]:
    """Per appointment, the event with the highest link_version (the first of equals: a note
    takes a link_version once)."""
    chosen: dict[UUID, NoteEvent] = {}
    for event in events:
        held = chosen.get(event.appointment_id)
        if held is None or held.link_version < event.link_version:
            chosen[event.appointment_id] = event
    return list(chosen.values())


def describe(event: LineEvent) -> tuple[str, int | None, str | None]:
    if isinstance(event, LineLinked):
        return "linked", event.session_number, event.rule
    if isinstance(event, LineUsed):
        return "used", event.session_number, None
    if isinstance(event, LineForfeited):
        return "forfeited", None, event.reason
    assert isinstance(event, LineUnlinked)
    return "unlinked", None, event.reason.value
