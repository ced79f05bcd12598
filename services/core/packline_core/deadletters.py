"""Dead letters: messages a consumer can never apply, set aside with the reason and their origin
so the partition keeps flowing (I7), and tools to list them and send them back ("re-drive").

A dead letter is the original record, byte for byte (key, value, headers), on the service's
dead-letter topic, with these headers added:

    dead-letter-reason     what was wrong, naming the field where there is one
    dead-letter-error      the error's class name
    dead-letter-topic / dead-letter-partition / dead-letter-offset   where it was read
    dead-letter-attempts   how many times applying it was tried
    dead-letter-consumer   which consumer gave up on it
    dead-letter-at         when (ISO 8601, UTC)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from packline_contracts.topics import dead_letter_topic

from packline_core.kafka import KafkaSettings, client_options

if TYPE_CHECKING:
    from packline_core.service import Service

PREFIX = "dead-letter-"
MAX_REASON = 2000


class DeadLetterPublisher:
    def __init__(self, service: Service, consumer_name: str) -> None:
        self.service = service
        self.consumer_name = consumer_name
        self.topic = service.settings.topic(dead_letter_topic(service.name))

    async def publish(
        self,
        record: ConsumerRecord[bytes, bytes],
        reason: str,
        error: BaseException,
        attempts: int,
    ) -> None:
        added = {
            "reason": reason[:MAX_REASON],
            "error": type(error).__name__,
            "topic": record.topic,
            "partition": str(record.partition),
            "offset": str(record.offset),
            "attempts": str(attempts),
            "consumer": self.consumer_name,
            "at": datetime.now(UTC).isoformat(),
        }
        headers = [
            *[
                (name, value)
                for name, value in (record.headers or ())
                if not name.startswith(PREFIX)
            ],
            *[(PREFIX + name, value.encode()) for name, value in added.items()],
        ]
        await self.service.producer.send_and_wait(
            self.topic, value=record.value, key=record.key, headers=headers
        )
        self.service.metrics.dead_lettered.labels(self.consumer_name).inc()


@dataclass(frozen=True, slots=True)
class DeadLetter:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    def header(self, name: str) -> str:
        """A dead-letter header (``reason``, ``topic``, ...) as text."""
        for header_name, value in self.headers:
            if header_name == PREFIX + name:
                return value.decode(errors="replace")
        raise KeyError(name)

    @property
    def origin(self) -> tuple[str, int, int]:
        return self.header("topic"), int(self.header("partition")), int(self.header("offset"))


async def read_all(kafka: KafkaSettings | str, topic: str) -> list[DeadLetter]:
    """Every dead letter currently on ``topic`` (read without a consumer group)."""
    partitions = await _partitions(kafka, topic)
    consumer = AIOKafkaConsumer(**client_options(kafka), enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        letters: list[DeadLetter] = []
        while await _behind(consumer, end):
            batches = await consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                letters.extend(
                    DeadLetter(
                        r.partition,
                        r.offset,
                        r.key,
                        r.value,
                        tuple(r.headers),
                    )
                    for r in records
                    if r.offset < end[TopicPartition(topic, r.partition)]
                )
        return sorted(letters, key=lambda letter: (letter.partition, letter.offset))
    finally:
        await consumer.stop()


async def _partitions(kafka: KafkaSettings | str, topic: str) -> list[TopicPartition]:
    admin = AIOKafkaAdminClient(**client_options(kafka))
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    if described["error_code"] != 0 or not described["partitions"]:
        raise LookupError(f"topic {topic} does not exist")
    return [TopicPartition(topic, p["partition"]) for p in described["partitions"]]


async def _behind(consumer: AIOKafkaConsumer, end: dict[TopicPartition, int]) -> bool:
    """True while some partition has records before the end offsets taken at the start."""
    for partition, end_offset in end.items():
        if await consumer.position(partition) < end_offset:
            return True
    return False


async def redrive(kafka: KafkaSettings | str, letters: Iterable[DeadLetter]) -> list[DeadLetter]:
    """Publish dead letters back to the topics they came from, as they originally were (the
    dead-letter headers are dropped, ``redriven-from`` is added). A message that was never
    applied is applied now; one that was (a re-drive run twice) is skipped by the inbox."""
    producer = AIOKafkaProducer(**client_options(kafka), acks="all", enable_idempotence=True)
    await producer.start()
    sent: list[DeadLetter] = []
    try:
        for letter in letters:
            origin_topic, partition, offset = letter.origin
            headers = [
                (name, value)
                for name, value in letter.headers
                if not name.startswith(PREFIX) and name != "redriven-from"
            ]
            headers.append(("redriven-from", f"{origin_topic}/{partition}/{offset}".encode()))
            await producer.send_and_wait(
                origin_topic, value=letter.value, key=letter.key, headers=headers
            )
            sent.append(letter)
    finally:
        await producer.stop()
    return sent
