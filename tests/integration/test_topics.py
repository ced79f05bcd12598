"""Topics come from the contracts' registry; the broker never creates one on its own."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaTimeoutError, UnknownTopicOrPartitionError
from packline_contracts.topics import TOPICS
from packline_core.topics import create_topics

from tests.conftest import Infrastructure
from tests.helpers import read_until

pytestmark = pytest.mark.infra


async def test_registry_topics_are_created_once_with_their_partitions(
    infrastructure: Infrastructure, test_id: str
) -> None:
    prefix = f"topics-{test_id}."
    created = await create_topics(infrastructure.kafka_bootstrap, partitions=5, prefix=prefix)
    assert sorted(created) == sorted(f"{prefix}{topic.name}" for topic in TOPICS)
    assert await create_topics(infrastructure.kafka_bootstrap, partitions=5, prefix=prefix) == []

    wanted = {f"{prefix}{topic.name}": topic.partitions or 5 for topic in TOPICS}
    admin = AIOKafkaAdminClient(bootstrap_servers=infrastructure.kafka_bootstrap)
    await admin.start()
    try:
        # A topic just created may be described with no partitions until the metadata of its
        # partitions has spread (seen on a loaded machine): ask until it has, with a deadline.
        async def partitions() -> dict[str, int]:
            described = await admin.describe_topics(created)
            return {topic["topic"]: len(topic["partitions"]) for topic in described}

        await read_until(partitions, lambda found: found == wanted, what="the partitions")
    finally:
        await admin.close()


async def test_the_broker_does_not_create_topics_on_first_use(
    infrastructure: Infrastructure, test_id: str
) -> None:
    topic = f"not-in-registry-{test_id}"
    producer = AIOKafkaProducer(
        bootstrap_servers=infrastructure.kafka_bootstrap, request_timeout_ms=3000
    )
    await producer.start()
    try:
        with pytest.raises((KafkaTimeoutError, UnknownTopicOrPartitionError)):
            await producer.send_and_wait(topic, b"x")
    finally:
        await producer.stop()
    admin = AIOKafkaAdminClient(bootstrap_servers=infrastructure.kafka_bootstrap)
    await admin.start()
    try:
        assert topic not in await admin.list_topics()
    finally:
        await admin.close()
