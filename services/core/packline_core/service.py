"""The shell every Packline service runs in: its database pool and migrations, its Kafka broker
and producer, its outbox relay, its HTTP API, and a start / stop that tests can drive in-process
and uvicorn drives in production.

A service's composition root (``factory.py``) builds a :class:`Service` from settings, registers
its consumers' handlers and its routes on it, and hands it to :func:`packline_core.main.run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import asyncpg
import structlog
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI
from faststream.kafka import KafkaBroker
from packline_contracts import registry  # noqa: F401  (registers every message type)
from packline_contracts.client import producer_stopped
from packline_contracts.envelope import Envelope
from packline_contracts.topics import consumer as consumer_spec

from packline_core import deadletters, migrations, openapi, tracing
from packline_core.auth import needs_token, open_paths, protect, register_whoami
from packline_core.body_limit import BodyLimit
from packline_core.consumer import ConsumerSettings, MessageConsumer
from packline_core.db import Connection
from packline_core.http_errors import install_error_answers
from packline_core.metrics import ServiceMetrics
from packline_core.outbox import OutboxRelay, RelaySettings, Transaction
from packline_core.settings import ServiceSettings

log = structlog.get_logger(__name__)

Hook = Callable[[], Awaitable[None]]


class Service:
    """One Packline service: name, settings, database pool, Kafka clients and HTTP app."""

    def __init__(self, name: str, settings: ServiceSettings, migration_package: str) -> None:
        self.name = name
        self.settings = settings
        self.migrations = [
            *migrations.load("packline_core", "core"),
            *migrations.load(migration_package, name),
        ]
        self.metrics = ServiceMetrics()
        client_id = f"packline-{name}-{settings.instance_id}"
        # Consumers only: every publication goes through the outbox relay or ``producer``.
        self.broker = KafkaBroker(
            settings.kafka_bootstrap_servers,
            security=settings.security(),
            client_id=client_id,
            allow_auto_create_topics=False,
            graceful_timeout=30.0,
            # FastStream's own lines go through our structured logging; per-message lines are
            # DEBUG so a busy service does not write one line per message.
            logger=logging.getLogger(f"packline.{name}.broker"),
            log_level=logging.DEBUG,
        )
        self._producer: AIOKafkaProducer | None = None
        self.relay = OutboxRelay(
            settings.database_connect_args(),
            settings,
            client_id,
            self.metrics,
            RelaySettings(
                poll_interval=settings.outbox_poll_seconds,
                prune_after=timedelta(hours=settings.outbox_retention_hours),
                crash_file=settings.drill_relay_crash_file,
            ),
        )
        self.consumers: list[MessageConsumer] = []
        # /docs: Swagger UI from local assets (packline_core.openapi), not FastAPI's CDN pages.
        self.http = FastAPI(
            title=f"Packline {name}", lifespan=self._lifespan, docs_url=None, redoc_url=None
        )
        openapi.install(self.http, protected=lambda path: needs_token(path, open_paths(settings)))
        protect(self.http, settings)
        register_whoami(self.http)
        install_error_answers(self.http)
        self.http.add_middleware(BodyLimit, max_bytes=settings.http_max_body_bytes)
        self.tracing = tracing.install(self)  # spans for HTTP, consume, apply, publish
        self._pool: asyncpg.Pool | None = None
        self._relay_task: asyncio.Task[None] | None = None
        self._watch_tasks: list[asyncio.Task[None]] = []
        self._running = False
        self._started_hooks: list[Hook] = []
        self._stopping_hooks: list[Hook] = []

    # --- building -----------------------------------------------------------------------------

    def consumer(self, name: str, settings: ConsumerSettings | None = None) -> MessageConsumer:
        """The registry's consumer ``<service>/<name>``; register handlers on it with
        ``@consumer.handles(MessageType)``. It subscribes when the service starts."""
        consumer = MessageConsumer(
            self,
            consumer_spec(self.name, name),
            settings or ConsumerSettings.of(self.settings),
        )
        self.consumers.append(consumer)
        return consumer

    def on_started(self, hook: Hook) -> Hook:
        """Run ``hook`` once the database and the broker are up (background tasks start here)."""
        self._started_hooks.append(hook)
        return hook

    def on_stopping(self, hook: Hook) -> Hook:
        """Run ``hook`` first on shutdown, before the broker and the pool close."""
        self._stopping_hooks.append(hook)
        return hook

    # --- using --------------------------------------------------------------------------------

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError(f"the {self.name} service is not started")
        return self._pool

    @property
    def producer(self) -> AIOKafkaProducer:
        """For what must not wait for a database commit (dead letters, probes)."""
        if self._producer is None:
            raise RuntimeError(f"the {self.name} service is not started")
        return self._producer

    async def working_producer(self) -> AIOKafkaProducer:
        """The producer, replaced first if the broker's fatal answer stopped it for good."""
        if producer_stopped(self.producer):
            with contextlib.suppress(Exception):
                await self.producer.stop()
            log.warning("the service's producer had stopped; starting a new one")
            self._producer = await self._new_producer()
        return self.producer

    async def _new_producer(self) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(
            **self.settings.client_options(),
            client_id=f"packline-{self.name}-{self.settings.instance_id}",
            acks="all",
            enable_idempotence=True,
        )
        await producer.start()
        return producer

    def new_transaction(
        self,
        conn: Connection,
        causation: Envelope[Any] | None = None,
        trace_context: str | None = None,
    ) -> Transaction:
        return Transaction(conn, self.name, self.settings.topic_prefix, causation, trace_context)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """A database transaction whose published messages go to the outbox on commit (for HTTP
        handlers; message handlers get theirs from the consumer)."""
        async with self.pool.acquire() as conn, conn.transaction():
            tx = self.new_transaction(conn)
            yield tx
            await tx.flush()

    # --- lifecycle ----------------------------------------------------------------------------

    async def migrate(self) -> list[migrations.Migration]:
        conn: asyncpg.Connection = await asyncpg.connect(**self.settings.database_connect_args())
        try:
            return await migrations.apply(conn, self.migrations)
        finally:
            await conn.close()

    async def start(self) -> None:
        applied = await self.migrate()
        if applied:
            log.info("migrations applied", migrations=[f"{m.source}/{m.version}" for m in applied])
        self._pool = await asyncpg.create_pool(
            **self.settings.database_connect_args(),
            min_size=1,
            max_size=self.settings.database_pool_size,
            reset=_nothing_to_reset,
        )
        self._producer = await self._new_producer()
        for consumer in self.consumers:
            consumer.subscribe()
        await self.broker.start()
        self._relay_task = asyncio.create_task(self.relay.run(), name=f"{self.name}-outbox-relay")
        self._watch_tasks = [
            *(asyncio.create_task(c.watch(), name=f"{c.name}-lag") for c in self.consumers),
            asyncio.create_task(self._publish_stored_dead_letters(), name=f"{self.name}-dlq"),
        ]
        self._running = True
        for hook in self._started_hooks:
            await hook()
        log.info("service started", http_port=self.settings.http_port)

    async def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        log.info("service stopping")
        for hook in self._stopping_hooks:
            await hook()
        # Consumers first: each finishes (and commits) the batch in hand, which needs the pool.
        await self.broker.stop()
        for task in self._watch_tasks:
            task.cancel()
        await asyncio.gather(*self._watch_tasks, return_exceptions=True)
        self.relay.stop()
        if self._relay_task is not None:
            await self._relay_task
        if self._producer is not None:
            await self._producer.stop()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        log.info("service stopped")

    async def ready(self) -> dict[str, Any]:
        """What readiness checks: can this replica reach its database and the broker right now."""
        checks: dict[str, Any] = {}
        try:
            async with asyncio.timeout(2):
                await self.pool.fetchval("SELECT 1")
            checks["database"] = "ok"
        except Exception as error:  # readiness reports every failure, whatever its kind
            checks["database"] = f"unreachable: {type(error).__name__}"
        checks["kafka"] = "ok" if await self.broker.ping(timeout=2.0) else "unreachable"
        stalls = [f"{c.name}: {stall}" for c in self.consumers if (stall := c.stall())]
        checks["consumers"] = "; ".join(stalls) if stalls else "ok"
        return checks

    async def _publish_stored_dead_letters(self) -> None:
        """Dead letters kept in the database whose reference did not reach the topic yet."""
        while True:
            try:
                await deadletters.publish_stored(self)
            except Exception as error:  # the database or broker may be away: next round
                log.info("could not publish stored dead letters", error=repr(error))
            await asyncio.sleep(self.settings.dead_letter_sweep_seconds)

    @asynccontextmanager
    async def _lifespan(self, _app: FastAPI) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.stop()


async def _nothing_to_reset(conn: asyncpg.Connection) -> None:
    """The pool's connections keep no session state: transactions, their advisory locks and
    their cursors end with them (asyncpg still rolls back an unfinished one), and the relay's
    LISTEN and leader lock and the migrations' lock use connections of their own. So the
    default reset query (UNLISTEN, RESET ALL, unlock all) would cost a round trip per batch for
    nothing."""
