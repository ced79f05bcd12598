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

A header whose name is not UTF-8 cannot be written back under that name: it travels as
``dead-letter-unreadable-header`` (its name's bytes, ``=``, its value).

Dead letters always fit. A record too large to go back on the broker beside those headers
(``INLINE_LIMIT``), or one whose dead-letter publish keeps failing, is kept byte for byte in the
service's own database (table ``dead_letter_store``) and the topic gets a small reference instead:
the value ``{"dead_letter_stored": id, "bytes": n}``, the headers above plus
``dead-letter-stored`` (the row's id) and ``dead-letter-stored-bytes``. So is a record with
neither key nor value, which no producer of ours can write back. A reference that could not be
published yet is sent by the service's sweep (:func:`publish_stored`);
``packline_dead_letters_unpublished`` counts them.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from packline_contracts.topics import dead_letter_topic

from packline_core.errors import is_transient
from packline_core.kafka import KafkaSettings, client_options

if TYPE_CHECKING:
    from packline_core.service import Service

log = structlog.get_logger(__name__)

PREFIX = "dead-letter-"
MAX_REASON = 2000
# Key, value and headers above this go to the database, not back on the broker (whose limit is
# about 1 MiB per record, the dead-letter headers included).
INLINE_LIMIT = 512 * 1024
# Publishing a dead letter is tried this often before it is stored in the database instead.
PUBLISH_ATTEMPTS = 4
STORED = "stored"
UNREADABLE_HEADER = PREFIX + "unreadable-header"
_NAMESPACE = uuid.UUID("5d1a2f0e-6c57-4f57-9a55-2f0d0e6c4a11")

Backoff = Callable[[int], Awaitable[None]]
Headers = list[tuple[str, bytes | None]]


@dataclass(frozen=True, slots=True)
class Letter:
    """One record being set aside, with why."""

    consumer: str
    record: ConsumerRecord[bytes, bytes]
    reason: str
    error: str
    attempts: int

    @property
    def id(self) -> uuid.UUID:
        r = self.record
        return uuid.uuid5(_NAMESPACE, f"{self.consumer}/{r.topic}/{r.partition}/{r.offset}")

    @property
    def size(self) -> int:
        r = self.record
        headers = sum(len(name) + len(value or b"") for name, value in r.headers or ())
        return len(r.key or b"") + len(r.value or b"") + headers

    def added_headers(self) -> Headers:
        r = self.record
        added = {
            "reason": _text(self.reason)[:MAX_REASON],
            "error": self.error,
            "topic": r.topic,
            "partition": str(r.partition),
            "offset": str(r.offset),
            "attempts": str(self.attempts),
            "consumer": self.consumer,
            "at": datetime.now(UTC).isoformat(),
        }
        return [(PREFIX + name, value.encode()) for name, value in added.items()]

    def original_headers(self) -> Headers:
        """The record's own headers, as a producer can write them again."""
        kept: Headers = []
        for name, value in self.record.headers or ():
            if name.startswith(PREFIX):
                continue
            try:
                name.encode("utf-8")
            except UnicodeEncodeError:
                raw = name.encode("utf-8", "surrogateescape")
                kept.append((UNREADABLE_HEADER, raw + b"=" + (value or b"")))
            else:
                kept.append((name, value))
        return kept

    @property
    def fits_inline(self) -> bool:
        """Small enough for the broker beside the dead-letter headers, and writable at all (a
        producer refuses a record with neither key nor value, which another client can send)."""
        r = self.record
        return self.size <= INLINE_LIMIT and (r.key is not None or r.value is not None)

    def reference_value(self) -> bytes:
        # Never null: a reference must be writable even when the record had no key.
        return json.dumps({"dead_letter_stored": str(self.id), "bytes": self.size}).encode()

    def reference_key(self) -> bytes | None:
        key = self.record.key
        return key if key is not None and len(key) <= 1024 else None


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
        backoff: Backoff,
    ) -> None:
        """Set ``record`` aside durably: on the dead-letter topic, or in the database with a
        reference on the topic. Returns once it is one or the other, so the offset may move."""
        letter = Letter(self.consumer_name, record, reason, type(error).__name__, attempts)
        if letter.fits_inline:
            for attempt in range(1, PUBLISH_ATTEMPTS + 1):
                try:
                    await self._send(letter.original_headers(), record.key, record.value, letter)
                    return
                except Exception as failure:
                    self._failed(failure)
                    if not is_transient(failure) or attempt == PUBLISH_ATTEMPTS:
                        break
                    await backoff(attempt)
        await self._store(letter, backoff)
        await self.send_reference(letter)  # if it fails, the sweep publishes it later

    async def _send(
        self, headers: Headers, key: bytes | None, value: bytes | None, letter: Letter
    ) -> None:
        # Bounded: a topic that is gone or refuses us would otherwise hold the partition for
        # the producer's whole metadata wait on every attempt.
        producer = await self.service.working_producer()
        await asyncio.wait_for(
            producer.send_and_wait(
                self.topic, value=value, key=key, headers=[*headers, *letter.added_headers()]
            ),
            timeout=self.service.settings.dead_letter_publish_seconds,
        )
        self.service.metrics.dead_lettered.labels(self.consumer_name).inc()

    async def send_reference(self, letter: Letter) -> bool:
        """Publish the reference of a stored dead letter and mark its row published; False
        (counted and logged) when the topic does not take it now."""
        stored: Headers = [
            (PREFIX + STORED, str(letter.id).encode()),
            (PREFIX + "stored-bytes", str(letter.size).encode()),
        ]
        try:
            await self._send(stored, letter.reference_key(), letter.reference_value(), letter)
        except Exception as failure:
            self._failed(failure)
            return False
        await self.service.pool.execute(
            "UPDATE dead_letter_store SET published_at = now() WHERE id = $1", letter.id
        )
        return True

    def _failed(self, failure: BaseException) -> None:
        self.service.metrics.dead_letter_publish_failures.labels(self.consumer_name).inc()
        log.warning(
            "publishing a dead letter failed", consumer=self.consumer_name, error=repr(failure)
        )

    async def _store(self, letter: Letter, backoff: Backoff) -> None:
        """Keep the original record in the service's database (retried while it is away)."""
        r = letter.record
        names = [name.encode("utf-8", "surrogateescape") for name, _ in r.headers or ()]
        values = [value for _, value in r.headers or ()]
        attempt = 0
        while True:
            attempt += 1
            try:
                await self.service.pool.execute(
                    "INSERT INTO dead_letter_store (id, consumer, topic, kafka_partition,"
                    " kafka_offset, kafka_key, value, header_names, header_values, reason, error,"
                    " attempts) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
                    " ON CONFLICT (id) DO NOTHING",
                    letter.id,
                    letter.consumer,
                    r.topic,
                    r.partition,
                    r.offset,
                    r.key,
                    r.value,
                    names,
                    values,
                    _text(letter.reason),
                    letter.error,
                    letter.attempts,
                )
                return
            except Exception as failure:
                if not is_transient(failure):
                    raise
                await backoff(attempt)


async def publish_stored(service: Service, limit: int = 100) -> int:
    """Publish the references of stored dead letters that are not on the topic yet; returns how
    many are still waiting (the gauge ``packline_dead_letters_unpublished``)."""
    rows = await service.pool.fetch(
        "SELECT * FROM dead_letter_store WHERE published_at IS NULL ORDER BY stored_at LIMIT $1",
        limit,
    )
    for row in rows:
        record: ConsumerRecord[bytes, bytes] = ConsumerRecord(
            row["topic"],
            row["kafka_partition"],
            row["kafka_offset"],
            0,
            0,
            row["kafka_key"],
            row["value"],
            None,
            0,
            0,
            (),
        )
        publisher = DeadLetterPublisher(service, row["consumer"])
        letter = Letter(row["consumer"], record, row["reason"], row["error"], row["attempts"])
        await publisher.send_reference(letter)  # a failure waits for the next round
    waiting: int = await service.pool.fetchval(
        "SELECT count(*) FROM dead_letter_store WHERE published_at IS NULL"
    )
    service.metrics.dead_letters_unpublished.set(waiting)
    return waiting


def _text(reason: str) -> str:
    # PostgreSQL text and Kafka header values hold neither NUL nor lone surrogates.
    return reason.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode()


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
    def stored_id(self) -> str | None:
        """The id of the row in ``dead_letter_store`` holding the record, for a reference."""
        try:
            return self.header(STORED)
        except KeyError:
            return None

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
            if letter.stored_id is not None:
                continue  # only a reference: the record is in the service's database
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
