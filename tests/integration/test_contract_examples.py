"""The contract says what the runtime does: every example of the AsyncAPI document, sent as it is
written there — its value, its headers, the key its Kafka binding describes, to its channel's
topic — through the real broker to the three services, is applied by every consumer that handles
its type, and none is dead-lettered (issue #18)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from packline_contracts.registry import MESSAGE_TYPES
from packline_contracts.topics import CONSUMERS, SERVICES, dead_letter_topic
from packline_core.service import Service

from tests.conftest import Infrastructure, ReadEvents, StartService
from tests.helpers import caught_up
from tests.system import start_system

pytestmark = pytest.mark.infra

ASYNCAPI = Path(__file__).resolve().parents[2] / "contracts" / "asyncapi.json"


def documented_records() -> list[tuple[str, str, bytes, bytes, list[tuple[str, bytes]]]]:
    """(message type, topic, key, value, headers) of every example, read from the document."""
    document = json.loads(ASYNCAPI.read_text())
    topic_of = {
        name: channel["address"]
        for channel in document["channels"].values()
        for name in channel["messages"]
    }
    records = []
    for name, message in document["components"]["messages"].items():
        if name == "DeadLetter":
            continue
        (example,) = message["examples"]
        key_schema = message["bindings"]["kafka"]["key"]
        envelope = example["payload"]
        key = key_schema.get("const") or envelope["payload"][key_schema["x-packline-key-field"]]
        headers = [(header, text.encode()) for header, text in example["headers"].items()]
        records.append((name, topic_of[name], key.encode(), json.dumps(envelope).encode(), headers))
    return records


def test_every_message_type_has_a_documented_example_and_key() -> None:
    assert {name for name, *_ in documented_records()} == set(MESSAGE_TYPES)


async def test_every_documented_example_sent_as_written_is_applied(
    start_service: StartService,
    producer: Any,
    read_events: ReadEvents,
    infrastructure: Infrastructure,
    topic_prefix: str,
) -> None:
    system = await start_system(start_service, producer, read_events)
    services: dict[str, Service] = {
        "calendar": system.calendar,
        "invoicing": system.invoicing,
        "matcher": system.matcher,
    }
    records = documented_records()
    raw = AIOKafkaProducer(bootstrap_servers=infrastructure.kafka_bootstrap)
    await raw.start()
    try:
        for _name, topic, key, value, headers in records:
            await raw.send_and_wait(topic_prefix + topic, value, key=key, headers=headers)
    finally:
        await raw.stop()

    for spec in CONSUMERS:
        await caught_up(
            infrastructure.kafka_bootstrap,
            f"{topic_prefix}packline.{spec.service}.{spec.name}",
            [topic_prefix + topic.name for topic in spec.topics],
        )

    # Applied: in the inbox of every consumer that handles the type (the inbox row is written in
    # the transaction of the effect, so it is there exactly when the message was applied).
    missing = []
    for name, topic, _key, value, _headers in records:
        message_id = json.loads(value)["message_id"]
        for service in services.values():
            for consumer in service.consumers:
                handled = {t.MESSAGE_TYPE for t in consumer.handlers}
                reads = {topic_prefix + t.name for t in consumer.spec.topics}
                if name not in handled or topic_prefix + topic not in reads:
                    continue
                applied = await service.pool.fetchval(
                    "SELECT 1 FROM inbox WHERE consumer = $1 AND message_id = $2",
                    consumer.name,
                    message_id,
                )
                if not applied:
                    missing.append(f"{name} by {consumer.name}")
    assert not missing, f"examples not applied: {missing}"

    # And nothing set aside: every dead-letter topic is still empty.
    offsets = AIOKafkaConsumer(bootstrap_servers=infrastructure.kafka_bootstrap)
    await offsets.start()
    try:

        async def dead_letters() -> dict[str, int]:
            counts = {}
            for service_name in SERVICES:
                topic = topic_prefix + dead_letter_topic(service_name).name
                partitions = [
                    TopicPartition(topic, p) for p in offsets.partitions_for_topic(topic) or []
                ]
                ends = await offsets.end_offsets(partitions)
                counts[service_name] = sum(ends.values())
            return counts

        await offsets.topics()  # load the metadata
        counts = await dead_letters()
        assert counts == dict.fromkeys(SERVICES, 0), counts
    finally:
        await offsets.stop()
