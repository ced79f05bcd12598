"""The transactional outbox: messages are written in the same database transaction as the change
they announce, and a relay publishes them to Kafka afterwards.

- Nothing accepted is lost (I5): a committed change always has its messages in the table, and the
  relay publishes every unsent row, again after a crash if it died before marking it sent (the
  consumers' inboxes drop the repeat).
- Per-key order with any number of replicas: rows of one key are inserted under a
  transaction-scoped advisory lock on that key, so their ids follow commit order; one relay per
  service is active at a time (a session advisory lock), publishing unsent rows in id order.
- Latency: a commit that wrote rows sends a NOTIFY that wakes the relay at once; the relay also
  polls, because a LISTEN connection can die without telling anyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import structlog
from aiokafka import AIOKafkaProducer
from opentelemetry.trace import Span, SpanKind
from packline_contracts.envelope import Envelope, Message, encode

from packline_core import tracing
from packline_core.db import Connection
from packline_core.errors import is_transient
from packline_core.kafka import KafkaSettings, client_options
from packline_core.metrics import ServiceMetrics

log = structlog.get_logger(__name__)

NOTIFY_CHANNEL = "packline_outbox"
# The relay's leader lock; any constant works, each service has its own database.
RELAY_LOCK_KEY = 0x72656C6179  # "relay"


@dataclass(frozen=True, slots=True)
class OutboxRow:
    message_id: UUID
    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]
    # The trace context current when it was published (JSON; see packline_core.tracing).
    trace_context: str | None = None


class Transaction:
    """One database transaction of a handler or an HTTP request: its connection, and the
    messages it publishes when (and only if) it commits."""

    def __init__(
        self,
        conn: Connection,
        producer: str,
        topic_prefix: str,
        causation: Envelope[Any] | None = None,
        trace_context: str | None = None,
    ) -> None:
        """``trace_context``: the trace what it publishes continues (default: the current one
        when it publishes)."""
        self.conn = conn
        self._producer = producer
        self._topic_prefix = topic_prefix
        self.causation = causation
        self._trace_context = trace_context
        self._rows: list[OutboxRow] = []

    def publish(self, message: Message, *, message_id: UUID | None = None) -> Envelope[Any]:
        """Publish ``message`` when this transaction commits. Pass a ``message_id`` derived from
        the input (packline_contracts.ids.derived_id) when the same input must give the same
        message; a second row with that id is ignored."""
        envelope = Envelope.wrap(
            message, producer=self._producer, message_id=message_id, causation=self.causation
        )
        record = encode(envelope)
        self._rows.append(
            OutboxRow(
                envelope.message_id,
                self._topic_prefix + message.TOPIC.name,
                record.key,
                record.value,
                record.headers,
                self._trace_context or tracing.current_context_json(),
            )
        )
        return envelope

    async def resend(self, message_id: UUID) -> bool:
        """Send again, under its own id, a message this service published before: the answer
        to a command retried under a new message id (the same appointment or invoice). Whoever
        applied it skips it by its id; the retrying sender sees its answer. False when it is no
        longer kept (sent more than ``PACKLINE_OUTBOX_RETENTION_HOURS`` ago) or never published."""
        resent = await self.conn.fetchval(
            "WITH again AS (UPDATE outbox SET sent_at = NULL WHERE message_id = $1 RETURNING 1)"
            " SELECT count(*) FROM again, pg_notify($2, '')",
            message_id,
            NOTIFY_CHANNEL,
        )
        return bool(resent)

    async def flush(self) -> None:
        """Write the buffered messages (called by the core just before commit)."""
        rows = self.take_rows()
        if rows:
            await write_rows(self.conn, rows)

    def take_rows(self) -> list[OutboxRow]:
        """The buffered messages, for a caller that writes many transactions' rows at once (a
        consumer's batch shares one database transaction)."""
        rows, self._rows = self._rows, []
        return rows


async def write_rows(conn: Connection, rows: Sequence[OutboxRow]) -> None:
    keys = sorted({row.key for row in rows})
    # Sorted, so two transactions locking the same keys cannot deadlock.
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(encode(k, 'escape'), 0))"
        " FROM unnest($1::bytea[]) AS k ORDER BY k",
        keys,
    )
    await conn.execute(
        "WITH written AS ("
        " INSERT INTO outbox (message_id, topic, kafka_key, value, headers, trace_context)"
        " SELECT * FROM unnest($1::uuid[], $2::text[], $3::bytea[], $4::bytea[], $5::jsonb[],"
        " $6::jsonb[])"
        " ON CONFLICT (message_id) DO NOTHING RETURNING 1)"
        " SELECT pg_notify($7, '') WHERE EXISTS (SELECT 1 FROM written)",
        [row.message_id for row in rows],
        [row.topic for row in rows],
        [row.key for row in rows],
        [row.value for row in rows],
        [json.dumps([[name, value.decode()] for name, value in row.headers]) for row in rows],
        [row.trace_context for row in rows],
        NOTIFY_CHANNEL,
    )


@dataclass(frozen=True)
class RelaySettings:
    batch_size: int = 500
    poll_interval: float = 1.0
    prune_after: timedelta = timedelta(days=1)
    # Longer than the topics' retention: a message still in Kafka must still be in the inbox.
    inbox_retention: timedelta = timedelta(days=14)
    prune_every: float = 60.0
    # Fault drills only: see ServiceSettings.drill_relay_crash_file.
    crash_file: Path | None = None


class OutboxRelay:
    """Publishes the outbox. Run :meth:`run` as a background task on every replica: one of them
    holds the leader lock and publishes, the others wait to take over."""

    def __init__(
        self,
        database: str | Mapping[str, Any],
        kafka: KafkaSettings | str,
        client_id: str,
        metrics: ServiceMetrics,
        settings: RelaySettings | None = None,
    ) -> None:
        # A URL, or asyncpg.connect's arguments (the URL and its password apart).
        self._database = {"dsn": database} if isinstance(database, str) else dict(database)
        self.kafka_options = client_options(kafka)
        self.client_id = client_id
        self.metrics = metrics
        self.settings = settings or RelaySettings()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self.is_leader = False
        self.tracing: tracing.Tracing | None = None  # set by tracing.install

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        delay = 0.5
        while not self._stopping.is_set():
            try:
                await self._lead_when_possible()
                delay = 0.5
            except Exception as error:
                if not is_transient(error):
                    log.exception("outbox relay failed; restarting it")
                else:
                    log.warning("outbox relay lost its connection; retrying", error=repr(error))
                self.is_leader = False
                self.metrics.relay_active.set(0)
                await self._sleep(delay)
                delay = min(delay * 2, 30.0)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
        self._wake.clear()

    async def _lead_when_possible(self) -> None:
        conn: asyncpg.Connection = await asyncpg.connect(**self._database)
        try:
            while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_LOCK_KEY):
                if self._stopping.is_set():
                    return
                await self._sleep(self.settings.poll_interval)
            self.is_leader = True
            self.metrics.relay_active.set(1)
            log.info("outbox relay active on this replica")
            await conn.add_listener(NOTIFY_CHANNEL, lambda *_: self._wake.set())
            producer = AIOKafkaProducer(
                **self.kafka_options,
                client_id=f"{self.client_id}-relay",
                acks="all",
                enable_idempotence=True,
                linger_ms=2,
                max_batch_size=256 * 1024,
            )
            await producer.start()
            try:
                await self._publish_until_stopped(conn, producer)
            finally:
                await producer.stop()
        finally:
            self.is_leader = False
            self.metrics.relay_active.set(0)
            await conn.close()  # also releases the leader lock

    async def _publish_until_stopped(self, conn: Connection, producer: AIOKafkaProducer) -> None:
        loop = asyncio.get_running_loop()
        next_prune = next_report = loop.time()
        while not self._stopping.is_set():
            published = await self.publish_batch(conn, producer)
            if loop.time() >= next_prune:
                await self._prune(conn)
                next_prune = loop.time() + self.settings.prune_every
            if published < self.settings.batch_size:
                # The backlog gauges are scraped every few seconds: counting once a second is
                # enough, and saves a round trip on every wake-up under load.
                if loop.time() >= next_report:
                    await self._report_backlog(conn)
                    next_report = loop.time() + 1.0
                await self._sleep(self.settings.poll_interval)

    async def publish_batch(self, conn: Connection, producer: AIOKafkaProducer) -> int:
        rows = await conn.fetch(
            "SELECT id, message_id, topic, kafka_key, value, headers, trace_context FROM outbox"
            " WHERE sent_at IS NULL ORDER BY id LIMIT $1",
            self.settings.batch_size,
        )
        if not rows:
            return 0
        # One publish span per row, a child of the context the row kept; its context goes in
        # the record's headers, so the consumer's spans continue the same trace.
        spans = [self._publish_span(row) for row in rows]
        try:
            # Queue every record first (aiokafka batches them per partition), then wait for all
            # acknowledgements; the idempotent producer keeps each partition's order on retries.
            deliveries = [
                await producer.send(
                    row["topic"],
                    value=row["value"],
                    key=row["kafka_key"],
                    headers=[
                        *((name, value.encode()) for name, value in json.loads(row["headers"])),
                        *(tracing.kafka_headers(span) if span is not None else ()),
                    ],
                )
                for row, span in zip(rows, spans, strict=True)
            ]
            await asyncio.gather(*deliveries)
        except BaseException as error:
            for span in spans:
                if span is not None:
                    tracing.fail(span, error)
            raise
        finally:
            for span in spans:
                if span is not None:
                    span.end()
        # A crash here publishes these rows again on restart: consumers drop the repeats.
        if self.settings.crash_file is not None and self.settings.crash_file.exists():
            self.settings.crash_file.unlink(missing_ok=True)
            log.warning("fault drill: killing this process between publish and mark-sent")
            os.kill(os.getpid(), signal.SIGKILL)
        await self.mark_sent(conn, [row["id"] for row in rows])
        self.metrics.outbox_published.inc(len(rows))
        return len(rows)

    def _publish_span(self, row: Any) -> Span | None:
        if self.tracing is None:
            return None
        return self.tracing.start(
            f"publish {row['topic']}",
            parent=tracing.context_from_json(row["trace_context"]),
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "send",
                "messaging.destination.name": row["topic"],
                "messaging.kafka.message.key": bytes(row["kafka_key"]).decode(errors="replace"),
                "messaging.message.id": str(row["message_id"]),
                "packline.outbox_id": row["id"],
            },
        )

    async def mark_sent(self, conn: Connection, ids: list[int]) -> None:
        await conn.execute("UPDATE outbox SET sent_at = now() WHERE id = ANY($1::bigint[])", ids)

    async def _report_backlog(self, conn: Connection) -> None:
        row = await conn.fetchrow(
            "SELECT count(*) AS backlog,"
            " coalesce(extract(epoch FROM clock_timestamp() - min(created_at)), 0) AS age"
            " FROM outbox WHERE sent_at IS NULL"
        )
        assert row is not None
        self.metrics.outbox_backlog.set(row["backlog"])
        self.metrics.outbox_oldest_age.set(float(row["age"]))

    async def _prune(self, conn: Connection) -> None:
        await conn.execute(
            "DELETE FROM outbox WHERE sent_at < now() - $1::interval", self.settings.prune_after
        )
        await conn.execute(
            "DELETE FROM inbox WHERE applied_at < now() - $1::interval",
            self.settings.inbox_retention,
        )
