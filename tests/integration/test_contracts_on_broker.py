"""Every message type goes model -> bytes on the real broker -> model, with the Python client."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import pytest
from aiokafka.errors import OutOfOrderSequenceNumber
from packline_contracts.client import PacklineConsumer, PacklineProducer
from packline_contracts.envelope import Envelope, Message
from packline_contracts.examples import EXAMPLES
from packline_contracts.topics import TOPICS

from tests.conftest import Infrastructure

pytestmark = pytest.mark.infra


def the_same(sent: Envelope[Message]) -> Callable[[Envelope[Message]], bool]:
    return lambda received: received.message_id == sent.message_id


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
            received = await consumer.wait_for(type(envelope.payload), the_same(envelope))
            assert received == envelope, name
    assert consumer.invalid == []
    assert len(consumer.received) == len(EXAMPLES)


async def test_the_producer_comes_back_after_a_fatal_broker_answer(
    infrastructure: Infrastructure, topic_prefix: str
) -> None:
    """After an unclean broker restart the broker may answer ``OutOfOrderSequenceNumber``, and
    aiokafka's idempotent producer then stops for good. The client replaces it: the next send
    lands instead of failing forever (a CI fault run once failed 200 sends in a row)."""
    bootstrap = infrastructure.kafka_bootstrap
    first, second = list(EXAMPLES.values())[:2]
    async with PacklineProducer(bootstrap, producer="test", topic_prefix=topic_prefix) as producer:
        await producer.send(first)
        # What aiokafka's sender does on that answer: fail everything queued and stop.
        inner = producer._producer
        inner._message_accumulator.fail_all(OutOfOrderSequenceNumber())
        inner._sender.sender_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await inner._sender.sender_task
        sent = await producer.send(second)

    async with PacklineConsumer(
        bootstrap, TOPICS, group_id=f"{topic_prefix}reader", topic_prefix=topic_prefix
    ) as consumer:
        received = await consumer.wait_for(type(sent.payload), the_same(sent))
    assert received == sent
