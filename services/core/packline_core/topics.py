"""Creating Packline's topics from the contracts' registry (broker auto-creation is off)."""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from packline_contracts.topics import TOPICS, Topic

from packline_core.kafka import KafkaSettings, client_options


async def create_topics(
    kafka: KafkaSettings | str,
    *,
    partitions: int,
    replication_factor: int = 1,
    prefix: str = "",
    topics: Iterable[Topic] = TOPICS,
    timeout_ms: int = 30_000,
) -> list[str]:
    """Create the topics that do not exist yet; return the names it created. ``partitions`` is
    the default for topics whose registry entry does not set its own."""
    admin = AIOKafkaAdminClient(**client_options(kafka), request_timeout_ms=timeout_ms)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                name=f"{prefix}{topic.name}",
                num_partitions=topic.partitions or partitions,
                replication_factor=replication_factor,
                topic_configs=topic.config(),
            )
            for topic in topics
            if f"{prefix}{topic.name}" not in existing
        ]
        if not wanted:
            return []
        response = await admin.create_topics(wanted, timeout_ms=timeout_ms)
        created = []
        for name, code, message in _topic_errors(response):
            if code == 0:
                created.append(name)
            elif code != TopicAlreadyExistsError.errno:  # another replica got there first
                raise RuntimeError(f"could not create topic {name}: error {code} {message}")
        return created
    finally:
        await admin.close()


def _topic_errors(response: object) -> list[tuple[str, int, str | None]]:
    # CreateTopicsResponse v1+ carries (name, error_code, error_message); v0 has no message.
    result = []
    for entry in response.topic_errors:  # type: ignore[attr-defined]
        name, code, *rest = entry
        result.append((name, code, rest[0] if rest else None))
    return result
