"""Every message type goes model -> bytes on the real broker -> model, with the Python client."""

from __future__ import annotations

import pytest
from packline_contracts.client import PacklineConsumer, PacklineProducer
from packline_contracts.examples import EXAMPLES
from packline_contracts.topics import TOPICS

from tests.conftest import Infrastructure

pytestmark = pytest.mark.infra


async def test_every_message_round_trips_through_kafka(
    infrastructure: Infrastructure, topic_prefix: str
) -> None:
    bootstrap = infrastructure.kafka_bootstrap
    async with PacklineProducer(bootstrap, producer="test", topic_prefix=topic_prefix) as producer:
        sent = {name: await producer.send(example) for name, example in EXAMPLES.items()}

    async with PacklineConsumer(
        bootstrap, TOPICS, group_id=f"{topic_prefix}reader", topic_prefix=topic_prefix
    ) as consumer:
        for name, envelope in sent.items():
            received = await consumer.wait_for(
                type(envelope.payload),
                lambda e, envelope=envelope: e.message_id == envelope.message_id,
            )
            assert received == envelope, name
    assert consumer.invalid == []
    assert len(consumer.received) == len(EXAMPLES)
