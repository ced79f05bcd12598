"""Every message type, by name and by topic. Importing this module registers them all."""

from __future__ import annotations

from packline_contracts import appointments, catalogue, invoices, matching, probes
from packline_contracts.envelope import MESSAGE_TYPES, Message
from packline_contracts.topics import TOPICS, Topic

MODULES = (catalogue, appointments, invoices, matching, probes)

__all__ = ["MESSAGE_TYPES", "MODULES", "messages_on"]


def messages_on(topic: Topic) -> list[type[Message]]:
    """The message types that travel on ``topic``, in definition order."""
    return [cls for cls in MESSAGE_TYPES.values() if cls.TOPIC == topic]


def _check() -> None:
    for cls in MESSAGE_TYPES.values():
        if cls.TOPIC not in TOPICS:
            raise RuntimeError(f"{cls.MESSAGE_TYPE} names a topic missing from the registry")


_check()
