"""Every message type, by name and by topic. Importing this module registers them all."""

from __future__ import annotations

from packline_contracts import appointments, catalogue, invoices, matching, patients, probes
from packline_contracts.envelope import MESSAGE_TYPES, Message
from packline_contracts.topics import TOPICS, Topic

MODULES = (catalogue, appointments, invoices, matching, probes, patients)

__all__ = ["MESSAGE_TYPES", "MODULES", "all_messages", "messages_on"]


def all_messages() -> list[type[Message]]:
    """Every message type in a stable order (by topic, then as defined in its module), whatever
    order the modules were imported in."""

    def position(cls: type[Message]) -> tuple[int, int, int]:
        module = next(i for i, m in enumerate(MODULES) if m.__name__ == cls.__module__)
        return TOPICS.index(cls.TOPIC), module, list(vars(MODULES[module])).index(cls.__name__)

    return sorted(MESSAGE_TYPES.values(), key=position)


def messages_on(topic: Topic) -> list[type[Message]]:
    """The message types that travel on ``topic``."""
    return [cls for cls in all_messages() if cls.TOPIC == topic]


def _check() -> None:
    for cls in MESSAGE_TYPES.values():
        if cls.TOPIC not in TOPICS:
            raise RuntimeError(f"{cls.MESSAGE_TYPE} names a topic missing from the registry")


_check()
