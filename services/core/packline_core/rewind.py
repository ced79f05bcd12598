"""Rewinding a service's consumer groups to the start of their topics, so it reads (and, through
its inbox, skips) everything again: the replay drill of the fault suite, and what an operator
does after restoring a database from a backup older than the committed offsets.

Kafka only moves the offsets of a group no one is in, so the service's replicas must be stopped
first; a group with members is refused with the broker's error (groups before it in the
registry are already rewound: run the command again once the replicas are stopped).
"""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import CommitFailedError, IllegalGenerationError, UnknownMemberIdError
from packline_contracts.topics import CONSUMERS

from packline_core.kafka import KafkaSettings, client_options


class GroupNotEmpty(RuntimeError):
    pass


async def rewind_service(kafka: KafkaSettings | str, service: str, prefix: str = "") -> list[str]:
    """Set every consumer group of ``service`` to the earliest offsets; return the groups."""
    groups = {
        f"{prefix}packline.{service}.{c.name}": [prefix + t.name for t in c.topics]
        for c in CONSUMERS
        if c.service == service
    }
    if not groups:
        raise LookupError(f"no consumers of a service called {service!r} in the registry")
    admin = AIOKafkaAdminClient(**client_options(kafka))
    await admin.start()
    try:
        topics = sorted({topic for names in groups.values() for topic in names})
        partitions = {
            topic["topic"]: [p["partition"] for p in topic["partitions"]]
            for topic in await admin.describe_topics(topics)
        }
    finally:
        await admin.close()
    for group_id, names in groups.items():
        wanted = [TopicPartition(t, p) for t in names for p in partitions.get(t, [])]
        consumer = AIOKafkaConsumer(
            **client_options(kafka), group_id=group_id, enable_auto_commit=False
        )
        await consumer.start()
        try:
            consumer.assign(wanted)
            earliest = await consumer.beginning_offsets(wanted)
            try:
                # A commit from outside the group: the broker refuses it while anyone is in.
                await consumer.commit(earliest)
            except (CommitFailedError, IllegalGenerationError, UnknownMemberIdError) as error:
                raise GroupNotEmpty(
                    f"{group_id} has members: stop every replica of {service} first"
                    f" ({type(error).__name__})"
                ) from None
            # Read back: a refusal must never pass for a rewind.
            for partition, offset in earliest.items():
                if await consumer.committed(partition) != offset:
                    raise GroupNotEmpty(f"{group_id}: the broker did not keep the new offsets")
        finally:
            await consumer.stop()
    return list(groups)
