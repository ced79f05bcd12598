"""The calendar's package notes from a batch of line events: the batch's newest per appointment,
applied at once, leaves what applying each event alone would (a note takes only a newer
link_version)."""

from __future__ import annotations

from uuid import UUID, uuid5

from hypothesis import given
from hypothesis import strategies as st
from packline_calendar.notes import NoteEvent, newest
from packline_contracts.invoices import LineLinked, LineUnlinked

from tests.clinic import line_event

SPACE = UUID("00000000-0000-0000-0000-0000000000fe")


def one_at_a_time(notes: dict[UUID, NoteEvent], events: list[NoteEvent]) -> dict[UUID, NoteEvent]:
    for event in events:
        held = notes.get(event.appointment_id)
        if held is None or held.link_version < event.link_version:
            notes[event.appointment_id] = event
    return notes


@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(1, 5), st.booleans()), min_size=1, max_size=20
    ),
    st.integers(0, 20),
)
def test_a_batch_leaves_the_notes_one_event_at_a_time_would(
    drawn: list[tuple[int, int, bool]], cut: int
) -> None:
    events: list[NoteEvent] = []
    for n, version, linked in drawn:
        event = line_event(
            LineLinked if linked else LineUnlinked, "p-1", uuid5(SPACE, str(n)), version
        )
        events.append(event)
    expected = one_at_a_time({}, events)
    # Two batches, as a consumer may cut them anywhere.
    notes = one_at_a_time({}, newest(events[:cut]))
    notes = one_at_a_time(notes, newest(events[cut:]))
    assert notes == expected
