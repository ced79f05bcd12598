"""Consuming with exactly-once effects: the reliable consumer every service's handlers run in.

For each batch of records (one ``getmany`` of the consumer group):

1. Decode each record. An invalid one (bad JSON, wrong shape, unknown type) is dead-lettered.
   A valid message of a type this consumer does not handle is skipped.
2. Apply the rest in **one database transaction**: claim their ids in the inbox (a message applied
   before is skipped), run each one's handler, write the messages they publish to the outbox,
   commit.
3. Only then commit the Kafka offsets, per partition.

Failures: a transient one (database or broker unreachable, a conflict) is retried with exponential
backoff for as long as it lasts; nothing is skipped. A handler's ``Rejected``, or an unexpected
error that persists through ``max_attempts``, dead-letters the message: the batch is applied again
one message at a time so that only the bad message is set aside, and processing goes on.

FastStream reads the records (``AckPolicy.MANUAL``: it never commits on its own); everything that
decides what is committed is here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from faststream import AckPolicy
from faststream.kafka import KafkaMessage
from packline_contracts.envelope import Envelope, InvalidMessage, Message, decode
from packline_contracts.topics import Consumer

from packline_core import inbox
from packline_core.db import Connection
from packline_core.deadletters import DeadLetterPublisher
from packline_core.errors import Rejected, ShuttingDown, is_transient
from packline_core.outbox import OutboxRow, Transaction, write_rows

if TYPE_CHECKING:
    from packline_core.service import Service

log = structlog.get_logger(__name__)

M = TypeVar("M", bound=Message)
Handler = Callable[[Transaction, Envelope[Any]], Awaitable[None]]
# Answers a command that could not even be decoded (its sender is waiting for an answer): gets the
# raw JSON object, when the value was one, and the error.
InvalidAnswer = Callable[[Transaction, dict[str, Any], InvalidMessage], Awaitable[None]]


@dataclass(frozen=True)
class ConsumerSettings:
    batch_size: int = 500
    max_attempts: int = 5  # for unexpected errors; transient ones are retried without limit
    first_backoff: float = 0.2
    max_backoff: float = 30.0


@dataclass(slots=True)
class Item:
    record: ConsumerRecord[bytes, bytes]
    envelope: Envelope[Any]

    @property
    def delivery(self) -> inbox.Delivery:
        return inbox.Delivery(
            self.envelope.message_id,
            self.envelope.message_type,
            self.record.topic,
            self.record.partition,
            self.record.offset,
        )


class MessageConsumer:
    """One consumer of the registry (e.g. calendar/commands), with the handlers a service gave it.

    Handlers receive the transaction and the message's envelope; what they publish through
    ``tx.publish`` is written to the outbox in the same transaction."""

    def __init__(
        self, service: Service, spec: Consumer, settings: ConsumerSettings | None = None
    ) -> None:
        self.service = service
        self.spec = spec
        self.settings = settings or ConsumerSettings()
        self.name = f"{spec.service}.{spec.name}"
        self.handlers: dict[type[Message], Handler] = {}
        self.answer_invalid: InvalidAnswer | None = None
        self._serialise_key: Callable[[Any], str] | None = None
        self.dead_letters = DeadLetterPublisher(service, self.name)
        self._stopping = asyncio.Event()
        service.on_stopping(self._stop)

    def handles(self, *message_types: type[M]) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            for message_type in message_types:
                if message_type.TOPIC not in self.spec.topics:
                    raise ValueError(f"{self.name} does not read {message_type.TOPIC.name}")
                self.handlers[message_type] = handler
            return handler

        return register

    def serialise_by(self, key: Callable[[Any], str]) -> None:
        """Apply messages with the same ``key`` (e.g. the patient) under a database lock on it, so
        that two replicas never interleave them, even while a rebalance hands partitions over and
        the old owner is still applying a batch. One round trip per batch: every key of the
        batch is locked before anything is applied, in one order, so no two batches deadlock."""
        self._serialise_key = key

    async def _stop(self) -> None:
        self._stopping.set()

    def subscribe(self) -> None:
        """Subscribe on the service's broker (call after registering the handlers): as many
        members of the consumer group as ``consumer_instances``. Each member owns its own
        partitions and applies their batches in its own transactions, so a replica works on
        several partitions at once while each partition (each patient) stays in order."""
        for _ in range(self.service.settings.consumer_instances):
            self._subscribe_one()

    def _subscribe_one(self) -> None:
        settings = self.service.settings
        subscriber = self.service.broker.subscriber(
            *(settings.topic(topic) for topic in self.spec.topics),
            group_id=settings.group_id(self.spec.service, self.spec.name),
            batch=True,
            max_records=self.settings.batch_size,
            ack_policy=AckPolicy.MANUAL,
            auto_offset_reset="earliest",
            decoder=_raw_body,
        )

        @subscriber
        async def on_batch(message: KafkaMessage) -> None:
            records = message.raw_message
            assert isinstance(records, tuple)
            consumer = message.consumer
            assert isinstance(consumer, AIOKafkaConsumer)
            try:
                await self.process(list(records))
            except ShuttingDown:
                return  # uncommitted: the next owner of these partitions reads them again
            await self._commit(consumer, records)

    # --- processing ---------------------------------------------------------------------------

    async def process(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        metrics = self.service.metrics
        started = time.monotonic()
        items: list[Item] = []
        for record in records:
            try:
                envelope = decode(record.value, record.headers, record.key, require_key=True)
            except InvalidMessage as error:
                await self._dead_letter(record, f"invalid message: {error}", error, attempts=1)
                await self._answer_invalid(record, error)
                continue
            if type(envelope.payload) not in self.handlers:
                metrics.ignored.labels(self.name, envelope.message_type).inc()
                continue
            items.append(Item(record, envelope))
        if items:
            await self._apply(items)
        metrics.batch_size.labels(self.name).observe(len(records))
        metrics.batch_seconds.labels(self.name).observe(time.monotonic() - started)

    async def _apply(self, items: list[Item]) -> None:
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._apply_once(items)
                return
            except ShuttingDown:
                raise
            except Rejected as error:
                if len(items) > 1:
                    return await self._apply_one_by_one(items)
                await self._dead_letter(items[0].record, f"rejected: {error}", error, attempt)
                return
            except Exception as error:
                transient = is_transient(error)
                self.service.metrics.failed.labels(self.name, str(transient).lower()).inc()
                if not transient and attempt >= self.settings.max_attempts:
                    if len(items) > 1:
                        return await self._apply_one_by_one(items)
                    log.exception("message failed every attempt", **_ids(items[0]))
                    await self._dead_letter(
                        items[0].record, f"failed {attempt} times: {error!r}", error, attempt
                    )
                    return
                log.warning(
                    "applying messages failed; retrying",
                    consumer=self.name,
                    transient=transient,
                    attempt=attempt,
                    error=repr(error),
                )
                await self._backoff(attempt)

    async def _apply_one_by_one(self, items: list[Item]) -> None:
        for item in items:
            await self._apply([item])

    async def _apply_once(self, items: list[Item]) -> None:
        metrics = self.service.metrics
        applied: list[Item] = []
        published: list[OutboxRow] = []
        async with self.service.pool.acquire() as conn, conn.transaction():
            if self._serialise_key is not None:
                await _lock(conn, {self._serialise_key(item.envelope.payload) for item in items})
            fresh = await inbox.claim(
                conn,
                self.name,
                self.service.settings.instance_id,
                [item.delivery for item in items],
            )
            for item in items:
                message_id = item.envelope.message_id
                if message_id not in fresh:
                    metrics.deduplicated.labels(self.name, item.envelope.message_type).inc()
                    continue
                fresh.discard(message_id)  # the same message twice in one batch: apply once
                tx = self.service.new_transaction(conn, causation=item.envelope)
                with structlog.contextvars.bound_contextvars(**_ids(item)):
                    await self.handlers[type(item.envelope.payload)](tx, item.envelope)
                published.extend(tx.take_rows())
                applied.append(item)
            # One outbox write (one lock round trip, one insert) for the whole batch.
            if published:
                await write_rows(conn, published)
        for item in applied:  # counted once committed
            metrics.handled.labels(self.name, item.envelope.message_type).inc()

    async def _answer_invalid(
        self, record: ConsumerRecord[bytes, bytes], error: InvalidMessage
    ) -> None:
        if self.answer_invalid is None:
            return
        try:
            outline = json.loads(record.value or b"")
        except ValueError:
            return
        if not isinstance(outline, dict):
            return
        answer = self.answer_invalid
        attempt = 0
        while True:  # the answer is a write like any other: retried while the database is away
            attempt += 1
            try:
                async with self.service.transaction() as tx:
                    await answer(tx, outline, error)
                return
            except Exception as failure:
                if not is_transient(failure):
                    log.exception("could not answer an invalid command", consumer=self.name)
                    return
                await self._backoff(attempt)

    async def _dead_letter(
        self, record: ConsumerRecord[bytes, bytes], reason: str, error: BaseException, attempts: int
    ) -> None:
        attempt = 0
        while True:
            attempt += 1
            try:
                await self.dead_letters.publish(record, reason, error, attempts)
                return
            except Exception as publish_error:
                log.warning("dead-lettering failed; retrying", error=repr(publish_error))
                await self._backoff(attempt)

    async def _backoff(self, attempt: int) -> None:
        delay = min(self.settings.first_backoff * 2 ** (attempt - 1), self.settings.max_backoff)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=delay)
        if self._stopping.is_set():
            raise ShuttingDown

    async def _commit(
        self, consumer: AIOKafkaConsumer, records: Sequence[ConsumerRecord[bytes, bytes]]
    ) -> None:
        offsets: dict[TopicPartition, int] = {}
        for record in records:
            partition = TopicPartition(record.topic, record.partition)
            offsets[partition] = max(offsets.get(partition, 0), record.offset + 1)
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as error:
            # The partitions moved to another replica during a rebalance; it reads these
            # records again and its inbox skips them.
            log.warning("offset commit refused after a rebalance", error=repr(error))
            return
        for partition, offset in offsets.items():
            highwater = consumer.highwater(partition)
            if highwater is not None:
                self.service.metrics.consumer_lag.labels(
                    self.name, partition.topic, partition.partition
                ).set(max(highwater - offset, 0))


async def _lock(conn: Connection, keys: set[str]) -> None:
    # Locks held until the transaction ends; taken in the order of their hashes.
    await conn.execute(
        "SELECT pg_advisory_xact_lock(h) FROM (SELECT DISTINCT hashtextextended(k, 0) AS h"
        " FROM unnest($1::text[]) AS k ORDER BY h) AS ordered",
        list(keys),
    )


async def _raw_body(message: Any) -> Any:
    # Records are decoded by packline_contracts.envelope.decode, not by FastStream. A coroutine:
    # FastStream runs a plain function in a worker thread, a thread hop per batch.
    return message.body


def _ids(item: Item) -> dict[str, str]:
    return {
        "message_id": str(item.envelope.message_id),
        "correlation_id": str(item.envelope.correlation_id),
        "message_type": item.envelope.message_type,
    }
