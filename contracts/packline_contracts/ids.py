"""Deterministic ids: the same inputs always give the same UUID.

A handler that derives the ids of the messages it sends from the message it handles (for example
``message_id("link", appointment_id, version, line_id)``) sends identical messages when it handles
the same input again, and the receiver's inbox drops the repeats.
"""

from __future__ import annotations

from uuid import UUID, uuid5

# A fixed namespace of Packline's own; never change it, or every derived id changes.
PACKLINE_NAMESPACE = UUID("4c1f7c9e-6f0b-5e59-9a43-2b1d8e0c7a31")


def derived_id(*parts: object) -> UUID:
    """A UUID (version 5) named by ``parts``, e.g. ``derived_id("line", invoice_id, 3)``."""
    if not parts:
        raise ValueError("derived_id needs at least one part")
    return uuid5(PACKLINE_NAMESPACE, "/".join(str(part) for part in parts))
