"""What the staff console's own routes answer (its OpenAPI document's response models)."""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from packline_core.openapi import Answer


class ConsoleAlive(Answer):
    status: Literal["live"]


class CommandSent(Answer):
    """The command is on the calendar's command topic; the calendar applies it (or refuses it
    with a reason) in its own time: follow the appointment in the calendar's API."""

    appointment_id: UUID
    status: Literal["requested", "cancel requested", "delete requested"]
