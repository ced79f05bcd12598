"""The operations probe: a message any service can send and every service records on receipt."""

from __future__ import annotations

from typing import ClassVar
from uuid import UUID

from packline_contracts.envelope import Kind, Message
from packline_contracts.topics import OPS_PROBES
from packline_contracts.types import Actor, Instant


class ProbeSent(Message):
    """A probe put on the probes topic by a service or an operator."""

    TOPIC = OPS_PROBES
    KIND: ClassVar[Kind] = "event"

    probe_id: UUID
    sent_by: Actor
    sent_at: Instant

    def kafka_key(self) -> str:
        return str(self.probe_id)
