"""Consuming with exactly-once effects: the reliable consumer every service's handlers run in.

For each batch of records (one ``getmany`` of the consumer group):

1. Decode each record. An invalid one (bad JSON, wrong shape, unknown type, a header that
   disagrees, a name that is not UTF-8, anything that makes reading it raise) is dead-lettered,
   and so is a valid one that sits on another partition than its key's (its sender used another
   partitioner, so its patient's messages are out of order). A valid message of a type this
   consumer does not handle is skipped.
2. Apply the rest in **one database transaction**: claim their ids in the inbox (a message applied
   before is skipped), run each one's handler, write the messages they publish to the outbox,
   commit.
3. Only then commit the Kafka offsets, per partition.

Failures: a transient one (database or broker unreachable, a conflict) is retried with exponential
backoff for as long as it lasts; nothing is skipped. A permanent one (a handler's ``Rejected``, a
value the database cannot hold, an answer too large for an event) at once, and an unexpected error
that persists through ``max_attempts``, dead-letter the message and answer its sender: the batch
is applied again one message at a time so that only the bad message is set aside, and processing
goes on. Should anything still escape, the batch's partitions are read again from their first
record and nothing is committed past it; a fetch that raises does the same.

Lag is measured from the broker (end offsets against this replica's commits) every few seconds,
whether or not anything moves, and a partition with records waiting and no commit for
``stall_seconds`` makes the replica not ready (``/health/ready``) and shows in
``packline_consumer_stalled_partitions``.

FastStream reads the records (``AckPolicy.MANUAL``: it never commits on its own); everything that
decides what is committed is here.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, ConsumerStoppedError, IllegalStateError, KafkaError
from aiokafka.partitioner import murmur2
from faststream import AckPolicy
from faststream.kafka import KafkaMessage
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind
from packline_contracts.envelope import Envelope, InvalidMessage, Message, decode
from packline_contracts.topics import Consumer

from packline_core import inbox, records, tracing
from packline_core.db import Connection
from packline_core.deadletters import DeadLetterPublisher
from packline_core.errors import ArgumentError, Rejected, ShuttingDown, is_permanent, is_transient
from packline_core.outbox import OutboxRow, Transaction, write_rows

if TYPE_CHECKING:
    from packline_core.service import Service
    from packline_core.settings import ServiceSettings

log = structlog.get_logger(__name__)

records.install()  # a header name that is not UTF-8 must not break a whole fetch

M = TypeVar("M", bound=Message)

# How long one fetch waits for records when none are there (it returns as soon as any arrive):
# only how often an idle consumer loops, never a delay a record waits.
FETCH_WAIT_MS = 500
Handler = Callable[[Transaction, Envelope[Any]], Awaitable[None]]
# Applies a run of consecutive messages at once (load the run's state, fold, write once): each
# message comes with its own transaction, which publishes in that message's name.
BatchHandler = Callable[[Connection, list[tuple[Transaction, Envelope[Any]]]], Awaitable[None]]
# Answers a command that cannot be applied (its sender is waiting for an answer): gets the raw
# JSON object, when the value was one, and the reason, which names the field where it can.
RefusalAnswer = Callable[[Transaction, dict[str, Any], str], Awaitable[None]]


@dataclass(frozen=True)
class ConsumerSettings:
    batch_size: int = 500
    max_attempts: int = 5  # for unexpected errors; transient ones are retried without limit
    first_backoff: float = 0.2
    max_backoff: float = 30.0
    lag_interval: float = 5.0  # how often lag is read from the broker
    stall_seconds: float = 60.0  # records waiting and no commit for this long: not ready
    commit_seconds: float = 1.0  # commit at most this often while records keep coming

    @classmethod
    def of(cls, settings: ServiceSettings) -> ConsumerSettings:
        return cls(
            batch_size=settings.consumer_batch_size,
            lag_interval=settings.consumer_lag_seconds,
            stall_seconds=settings.consumer_stall_seconds,
            commit_seconds=settings.consumer_commit_seconds,
        )


@dataclass(slots=True)
class Item:
    record: ConsumerRecord[bytes, bytes]
    envelope: Envelope[Any]
    trace: Context | None = None  # its consume span's: the parent of its apply span

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
        self.settings = settings or ConsumerSettings.of(service.settings)
        self.name = f"{spec.service}.{spec.name}"
        self.handlers: dict[type[Message], Handler] = {}
        self.batch_handlers: dict[type[Message], BatchHandler] = {}
        self.answer_refused: RefusalAnswer | None = None
        self._serialise_key: Callable[[Any], str] | None = None
        self.dead_letters = DeadLetterPublisher(service, self.name)
        self._stopping = asyncio.Event()
        self._kafka_consumers: list[AIOKafkaConsumer] = []
        # Applied but not yet committed, per member of the group: the next offset of each
        # partition, and when that member last committed.
        self._uncommitted: dict[int, dict[TopicPartition, int]] = {}
        self._committed_at: dict[int, float] = {}
        self.progress = Progress(self.settings.stall_seconds)
        service.on_stopping(self._stop)

    def handles(self, *message_types: type[M]) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            for message_type in message_types:
                if message_type.TOPIC not in self.spec.topics:
                    raise ValueError(f"{self.name} does not read {message_type.TOPIC.name}")
                self.handlers[message_type] = handler
            return handler

        return register

    def handles_batch(self, *message_types: type[M]) -> Callable[[BatchHandler], BatchHandler]:
        """Like :meth:`handles`, for a handler that takes every consecutive message it handles
        in a batch at once (in order, each with its own transaction)."""

        def register(handler: BatchHandler) -> BatchHandler:
            for message_type in message_types:
                if message_type.TOPIC not in self.spec.topics:
                    raise ValueError(f"{self.name} does not read {message_type.TOPIC.name}")
                self.batch_handlers[message_type] = handler
            return handler

        return register

    def _handled(self, message_type: type[Message]) -> bool:
        return message_type in self.handlers or message_type in self.batch_handlers

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
            parser=_headers_untouched,
        )

        async def fetch(consumer: AIOKafkaConsumer) -> tuple[ConsumerRecord[bytes, bytes], ...]:
            # Not FastStream's batch fetch: after an empty poll it sleeps its whole batch timeout
            # and does not hand over records that arrive meanwhile (at low load, a hop in two
            # paid it). getmany already waits up to FETCH_WAIT_MS and returns as soon as
            # records arrive.
            records = await consumer.getmany(
                timeout_ms=FETCH_WAIT_MS, max_records=self.settings.batch_size
            )
            return tuple(chain.from_iterable(records.values()))

        async def get_msg(consumer: AIOKafkaConsumer) -> Any:
            # A fetch that raises may already have moved some partitions past records it then
            # dropped: every assigned partition is read again from its commit, so nothing is
            # skipped. The broker's own errors then go to FastStream's loop (it waits and
            # fetches again); anything else would kill that loop's task, so it is absorbed here.
            if consumer not in self._kafka_consumers:
                self._kafka_consumers.append(consumer)
            try:
                records = await fetch(consumer)
                if not records:  # nothing waiting: what was applied is committed now
                    await self._commit_applied(consumer)
                return records
            except ConsumerStoppedError:
                raise
            except Exception as error:
                self.service.metrics.fetch_failures.labels(self.name).inc()
                log.exception("fetching records failed; reading again", consumer=self.name)
                try:
                    await self._rewind(consumer, None)
                except Exception as rewinding:  # the broker may be away: the next fetch tries
                    log.warning("could not rewind", consumer=self.name, error=repr(rewinding))
                if isinstance(error, KafkaError):
                    raise
                await self._backoff(1)
                return ()

        subscriber.get_msg = get_msg  # type: ignore[method-assign]

        @subscriber
        async def on_batch(message: KafkaMessage) -> None:
            batch = message.raw_message
            assert isinstance(batch, tuple)
            consumer = message.consumer
            assert isinstance(consumer, AIOKafkaConsumer)
            try:
                await self.process(list(batch), consumer.partitions_for_topic)
            except ShuttingDown:
                return  # uncommitted: the next owner of these partitions reads them again
            except Exception:
                # Nothing past an unapplied record is committed: read the batch again.
                self.service.metrics.batch_failures.labels(self.name).inc()
                log.exception("a batch failed unexpectedly; reading it again", consumer=self.name)
                await self._rewind(consumer, batch)
                with contextlib.suppress(ShuttingDown):
                    await self._backoff(3)
                return
            self._applied(consumer, batch)
            last = self._committed_at.get(id(consumer), 0.0)
            if time.monotonic() - last >= self.settings.commit_seconds:
                await self._commit_applied(consumer)

    # --- processing ---------------------------------------------------------------------------

    async def process(
        self,
        batch: Sequence[ConsumerRecord[bytes, bytes]],
        partitions_of: Callable[[str], set[int] | None] = lambda topic: None,
    ) -> None:
        metrics = self.service.metrics
        started = time.monotonic()
        items: list[Item] = []
        for record in batch:
            # A child of the trace the record's headers carry (none, or unreadable: a new one).
            span = self._consume_span(record)
            try:
                with tracing.current(span):  # a refusal's logs carry the trace
                    item = await self._read(record, span, partitions_of)
            finally:
                span.end()
            if item is not None:
                items.append(item)
        if items:
            await self._apply(items)
        metrics.batch_size.labels(self.name).observe(len(batch))
        metrics.batch_seconds.labels(self.name).observe(time.monotonic() - started)

    def _check_topic(
        self, record: ConsumerRecord[bytes, bytes], message_type: type[Message]
    ) -> None:
        """A message this consumer applies is read only from its type's own topic: the broker's
        ACLs say who may write each topic (a LinkAppointment on packline.invoicing.commands,
        which outside producers may write, would otherwise pass for the matcher's)."""
        if not self._handled(message_type):
            return
        expected = self.service.settings.topic(message_type.TOPIC)
        if record.topic != expected:
            raise InvalidMessage.single(
                "message_type",
                f"{message_type.__name__} travels on {expected}, not on {record.topic}",
            )

    async def _read(
        self,
        record: ConsumerRecord[bytes, bytes],
        span: Span,
        partitions_of: Callable[[str], set[int] | None],
    ) -> Item | None:
        """The record decoded, or None: refused (dead-lettered) or of a type not handled here."""
        try:
            envelope = decode(record.value, record.headers, record.key, require_key=True)
            _check_partition(record, partitions_of(record.topic))
            self._check_topic(record, type(envelope.payload))
        except InvalidMessage as error:
            reason = f"invalid message: {error}"
            tracing.fail(span, reason)
            await self._refuse(record, reason, error, attempts=1)
            return None
        except Exception as error:  # whatever reading a hostile record raises: set it aside
            reason = f"unreadable message: {type(error).__name__}: {error}"[:500]
            tracing.fail(span, reason)
            await self._refuse(record, reason, error, attempts=1)
            return None
        span.set_attributes(
            {
                "messaging.message.id": str(envelope.message_id),
                "packline.message_type": envelope.message_type,
                "packline.correlation_id": str(envelope.correlation_id),
            }
        )
        if not self._handled(type(envelope.payload)):
            span.set_attribute("packline.ignored", True)
            self.service.metrics.ignored.labels(self.name, envelope.message_type).inc()
            return None
        return Item(record, envelope, trace.set_span_in_context(span))

    def _consume_span(self, record: ConsumerRecord[bytes, bytes]) -> Span:
        return self.service.tracing.start(
            f"consume {record.topic}",
            parent=tracing.context_from_headers(record.headers),
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "process",
                "messaging.destination.name": record.topic,
                "messaging.destination.partition.id": str(record.partition),
                "messaging.kafka.offset": record.offset,
                "messaging.kafka.message.key": (record.key or b"")[:128].decode(errors="replace"),
                "packline.consumer": self.name,
            },
        )

    async def _apply(self, items: list[Item]) -> None:
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._apply_once(items)
                return
            except ShuttingDown:
                raise
            except Exception as error:
                permanent = is_permanent(error)
                transient = not permanent and is_transient(error)
                self.service.metrics.failed.labels(self.name, str(transient).lower()).inc()
                if permanent or (not transient and attempt >= self.settings.max_attempts):
                    if len(items) > 1:
                        return await self._apply_one_by_one(items)
                    if not permanent:
                        log.exception("message failed every attempt", **_ids(items[0]))
                    reason = _reason(error) if permanent else f"failed {attempt} times: {error!r}"
                    await self._refuse(items[0].record, reason, error, attempt)
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
                await lock(conn, {self._serialise_key(item.envelope.payload) for item in items})
            fresh = await inbox.claim(
                conn,
                self.name,
                self.service.settings.instance_id,
                [item.delivery for item in items],
            )
            run = Run()
            for item in items:
                message_id = item.envelope.message_id
                if message_id not in fresh:
                    self._skip_duplicate(item)
                    continue
                fresh.discard(message_id)  # the same message twice in one batch: apply once
                batch_handler = self.batch_handlers.get(type(item.envelope.payload))
                if batch_handler is not None:
                    if run.handler is not batch_handler:
                        published.extend(await run.apply(conn))
                        run = Run(batch_handler)
                    span = self._batch_span(item)
                    tx = self.service.new_transaction(
                        conn, causation=item.envelope, trace_context=tracing.context_json(span)
                    )
                    run.add(item, tx, span)
                    applied.append(item)
                    continue
                published.extend(await run.apply(conn))
                run = Run()
                # Current while the handler runs: what it publishes carries this span's context.
                with self._apply_span(item):
                    tx = self.service.new_transaction(conn, causation=item.envelope)
                    with structlog.contextvars.bound_contextvars(**_ids(item)):
                        await self.handlers[type(item.envelope.payload)](tx, item.envelope)
                    published.extend(tx.take_rows())
                    applied.append(item)
            published.extend(await run.apply(conn))
            # One outbox write (one lock round trip, one insert) for the whole batch.
            if published:
                await write_rows(conn, published)
        for item in applied:  # counted once committed
            metrics.handled.labels(self.name, item.envelope.message_type).inc()

    def _skip_duplicate(self, item: Item) -> None:
        with self._apply_span(item) as span:
            span.set_attribute("packline.duplicate", True)
        self.service.metrics.deduplicated.labels(self.name, item.envelope.message_type).inc()

    def _apply_span(self, item: Item) -> contextlib.AbstractContextManager[Span]:
        return self.service.tracing.current_span(
            f"apply {item.envelope.message_type}",
            parent=item.trace,
            attributes=self._apply_attributes(item),
        )

    def _batch_span(self, item: Item) -> Span:
        """An apply span for a message of a batch handler's run (ended when the run is)."""
        return self.service.tracing.start(
            f"apply {item.envelope.message_type}",
            parent=item.trace,
            attributes={**self._apply_attributes(item), "packline.batch_handler": True},
        )

    def _apply_attributes(self, item: Item) -> dict[str, str | int | bool]:
        envelope = item.envelope
        return {
            "messaging.message.id": str(envelope.message_id),
            "packline.message_type": envelope.message_type,
            "packline.correlation_id": str(envelope.correlation_id),
            "packline.consumer": self.name,
        }

    async def _refuse(
        self, record: ConsumerRecord[bytes, bytes], reason: str, error: BaseException, attempts: int
    ) -> None:
        """Set the record aside (dead letter) and answer its sender where it can be told."""
        await self.dead_letters.publish(record, reason, error, attempts, self._backoff)
        await self._answer(record, reason)

    async def _answer(self, record: ConsumerRecord[bytes, bytes], reason: str) -> None:
        if self.answer_refused is None:
            return
        try:
            outline = json.loads(record.value or b"")
        except (ValueError, RecursionError):
            return
        if not isinstance(outline, dict):
            return
        answer = self.answer_refused
        attempt = 0
        while True:  # the answer is a write like any other: retried while the database is away
            attempt += 1
            try:
                async with self.service.transaction() as tx:
                    await answer(tx, outline, reason)
                return
            except ShuttingDown:
                raise
            except Exception as failure:
                if not is_transient(failure):
                    log.exception("could not answer a refused command", consumer=self.name)
                    return
                await self._backoff(attempt)

    async def _backoff(self, attempt: int) -> None:
        delay = min(self.settings.first_backoff * 2 ** (attempt - 1), self.settings.max_backoff)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=delay)
        if self._stopping.is_set():
            raise ShuttingDown

    async def _rewind(
        self,
        consumer: AIOKafkaConsumer,
        batch: Sequence[ConsumerRecord[bytes, bytes]] | None,
    ) -> None:
        """Read again from the first record of ``batch`` on each of its partitions, or (no
        batch: a failed fetch) from the last commit of every assigned partition."""
        first: dict[TopicPartition, int] = {}
        if batch is not None:
            for record in batch:
                partition = TopicPartition(record.topic, record.partition)
                first[partition] = min(first.get(partition, record.offset), record.offset)
        else:
            for partition in consumer.assignment():
                committed = await consumer.committed(partition)
                if committed is None:
                    await consumer.seek_to_beginning(partition)
                else:
                    first[partition] = committed
        for partition, offset in first.items():
            try:
                consumer.seek(partition, offset)
            except (IllegalStateError, AssertionError):
                pass  # no longer ours: its next owner reads it from the commit

    def _applied(
        self, consumer: AIOKafkaConsumer, batch: Sequence[ConsumerRecord[bytes, bytes]]
    ) -> None:
        """Remember that ``batch`` is applied: its offsets are committed with the next commit
        (by time while records keep coming, at once when none wait: #20, a broker round trip
        per batch was a cost on the path)."""
        offsets = self._uncommitted.setdefault(id(consumer), {})
        for record in batch:
            partition = TopicPartition(record.topic, record.partition)
            offsets[partition] = max(offsets.get(partition, 0), record.offset + 1)

    async def _commit_applied(self, consumer: AIOKafkaConsumer) -> None:
        pending = self._uncommitted.pop(id(consumer), {})
        self._committed_at[id(consumer)] = time.monotonic()
        # Only partitions still ours: a revoked one's next owner reads from its last commit,
        # and its inbox skips what this member applied.
        offsets = {p: o for p, o in pending.items() if p in consumer.assignment()}
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as error:
            # The partitions moved to another replica during a rebalance; it reads these
            # records again and its inbox skips them.
            log.warning("offset commit refused after a rebalance", error=repr(error))
            return
        now = time.monotonic()
        for partition, offset in offsets.items():
            self.progress.committed(partition, offset, now)

    # --- lag and stalls -----------------------------------------------------------------------

    async def watch(self) -> None:
        """Every ``lag_interval``: each assigned partition's lag from the broker's end offsets
        against the commits, whether or not anything moved (a stalled consumer shows)."""
        metrics = self.service.metrics
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self.settings.lag_interval)
            if self._stopping.is_set():
                return
            try:
                lags = await self._measure_lag()
            except Exception as error:  # the broker may be away: the gauges keep their values
                log.info("could not measure consumer lag", consumer=self.name, error=repr(error))
                continue
            now = time.monotonic()
            for partition, (lag, committed) in lags.items():
                metrics.consumer_lag.labels(self.name, partition.topic, partition.partition).set(
                    lag
                )
                self.progress.measured(partition, lag, committed, now)
            self.progress.keep_only(set(lags))
            metrics.stalled_partitions.labels(self.name).set(len(self.progress.stalled(now)))

    async def _measure_lag(self) -> dict[TopicPartition, tuple[int, int | None]]:
        lags: dict[TopicPartition, tuple[int, int | None]] = {}
        for consumer in list(self._kafka_consumers):
            assigned = list(consumer.assignment())
            if not assigned:
                continue
            ends = await consumer.end_offsets(assigned)
            starts = await consumer.beginning_offsets(assigned)
            for partition in assigned:
                committed = await consumer.committed(partition)
                start = committed if committed is not None else starts[partition]
                lags[partition] = (max(ends[partition] - start, 0), committed)
        return lags

    def stall(self) -> str | None:
        """Why this consumer is not making progress, or None."""
        stalled = self.progress.stalled(time.monotonic())
        if not stalled:
            return None
        shown = ", ".join(f"{p.topic}/{p.partition} ({lag} waiting)" for p, lag in stalled[:5])
        return f"no progress for {self.settings.stall_seconds:.0f} s on {shown}"


class Progress:
    """When each partition last moved, and whether records wait behind it (for readiness)."""

    def __init__(self, stall_seconds: float) -> None:
        self.stall_seconds = stall_seconds
        self._lag: dict[TopicPartition, int] = {}
        self._offset: dict[TopicPartition, int | None] = {}
        self._moved: dict[TopicPartition, float] = {}

    def committed(self, partition: TopicPartition, offset: int, now: float) -> None:
        if self._offset.get(partition) != offset:
            self._offset[partition] = offset
            self._moved[partition] = now

    def measured(
        self, partition: TopicPartition, lag: int, committed: int | None, now: float
    ) -> None:
        self._lag[partition] = lag
        if partition not in self._moved or self._offset.get(partition) != committed:
            self._offset[partition] = committed
            self._moved[partition] = now
        if lag == 0:
            self._moved[partition] = now

    def keep_only(self, partitions: set[TopicPartition]) -> None:
        """Forget partitions that moved to another replica."""
        for gone in set(self._lag) - partitions:
            self._lag.pop(gone, None)
            self._offset.pop(gone, None)
            self._moved.pop(gone, None)

    def stalled(self, now: float) -> list[tuple[TopicPartition, int]]:
        return [
            (partition, lag)
            for partition, lag in sorted(self._lag.items())
            if lag > 0 and now - self._moved.get(partition, now) >= self.stall_seconds
        ]


@dataclass
class Run:
    """Consecutive messages of a batch for one batch handler, applied at once."""

    handler: BatchHandler | None = None
    messages: list[tuple[Transaction, Envelope[Any]]] = dataclasses.field(default_factory=list)
    spans: list[Span] = dataclasses.field(default_factory=list)

    def add(self, item: Item, tx: Transaction, span: Span) -> None:
        self.messages.append((tx, item.envelope))
        self.spans.append(span)

    async def apply(self, conn: Connection) -> list[OutboxRow]:
        """Apply the run (nothing when empty); the rows its messages publish."""
        if self.handler is None or not self.messages:
            return []
        try:
            await self.handler(conn, self.messages)
        except BaseException as error:
            for span in self.spans:
                tracing.fail(span, error)
            raise
        finally:
            for span in self.spans:
                span.end()
        return [row for tx, _ in self.messages for row in tx.take_rows()]


def _check_partition(record: ConsumerRecord[bytes, bytes], partitions: set[int] | None) -> None:
    """A keyed record must sit where Packline's producers (murmur2, as the Java client and
    aiokafka by default) put that key; elsewhere its patient's messages are out of order."""
    if record.key is None or not partitions:
        return
    expected = (murmur2(record.key) & 0x7FFFFFFF) % len(partitions)
    if record.partition != expected:
        raise InvalidMessage.single(
            "partition",
            f"key {record.key[:64]!r} belongs on partition {expected} of {len(partitions)}"
            f" (murmur2, the Java client's default), not {record.partition}; produce with the"
            " murmur2 partitioner (librdkafka/kcat: partitioner=murmur2_random)",
        )


def _reason(error: BaseException) -> str:
    """A permanent failure in words, naming the field where the error does."""
    if isinstance(error, InvalidMessage):
        return f"invalid message: {error}"
    if isinstance(error, Rejected):
        return f"rejected: {error}"
    text = str(error) or type(error).__name__
    if isinstance(error, (asyncpg.DataError, ArgumentError)):
        return f"refused: the database cannot hold a value of this message: {text}"[:500]
    return f"refused: {text}"[:500]


async def lock(conn: Connection, keys: set[str]) -> None:
    """Take the locks ``serialise_by`` takes, on ``keys`` too: a handler that decides for
    another key than its message's (another patient of a household) holds that one's lock.
    Held until the transaction ends; taken in the order of their hashes."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(h) FROM (SELECT DISTINCT hashtextextended(k, 0) AS h"
        " FROM unnest($1::text[]) AS k ORDER BY h) AS ordered",
        list(keys),
    )


async def _headers_untouched(
    batch: tuple[ConsumerRecord[bytes, bytes], ...], parse: Callable[[Any], Awaitable[Any]]
) -> Any:
    """FastStream's own parsing decodes every header value as UTF-8 and fails on a null or
    non-UTF-8 one, before any handler runs, and the batch is lost. It gets the records without
    their headers (it only copies them for its own use); ours keep them, and decode() judges."""
    message = await parse(tuple(dataclasses.replace(record, headers=()) for record in batch))
    message.raw_message = batch
    return message


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
