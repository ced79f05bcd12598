"""The shell every Packline service runs in: its database pool and migrations, its Kafka broker,
its HTTP API, and a start / stop that tests can drive in-process and uvicorn drives in production.

A service's composition root (``factory.py``) builds a :class:`Service` from settings, registers
its handlers and routes on it, and hands it to :func:`packline_core.main.run`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import structlog
from fastapi import FastAPI
from faststream.kafka import KafkaBroker

from packline_core import migrations
from packline_core.settings import ServiceSettings

log = structlog.get_logger(__name__)

Hook = Callable[[], Awaitable[None]]


class Service:
    """One Packline service: name, settings, database pool, Kafka broker and HTTP app."""

    def __init__(self, name: str, settings: ServiceSettings, migration_package: str) -> None:
        self.name = name
        self.settings = settings
        self.migrations = [
            *migrations.load("packline_core", "core"),
            *migrations.load(migration_package, name),
        ]
        self.broker = KafkaBroker(
            settings.kafka_bootstrap_servers,
            client_id=f"packline-{name}-{settings.instance_id}",
            # Every publish waits for the broker's full acknowledgement, and retries cannot
            # duplicate or reorder a partition's messages.
            acks="all",
            enable_idempotence=True,
            allow_auto_create_topics=False,
            graceful_timeout=30.0,
            # FastStream's own lines go through our structured logging; per-message lines are
            # DEBUG so a busy service does not write one line per message.
            logger=logging.getLogger(f"packline.{name}.broker"),
            log_level=logging.DEBUG,
        )
        self.http = FastAPI(title=f"Packline {name}", lifespan=self._lifespan)
        self._pool: asyncpg.Pool | None = None
        self._started_hooks: list[Hook] = []
        self._stopping_hooks: list[Hook] = []

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError(f"the {self.name} service is not started")
        return self._pool

    def on_started(self, hook: Hook) -> Hook:
        """Run ``hook`` once the database and the broker are up (background tasks start here)."""
        self._started_hooks.append(hook)
        return hook

    def on_stopping(self, hook: Hook) -> Hook:
        """Run ``hook`` first on shutdown, before the broker and the pool close."""
        self._stopping_hooks.append(hook)
        return hook

    async def migrate(self) -> list[migrations.Migration]:
        conn: asyncpg.Connection = await asyncpg.connect(self.settings.database_url)
        try:
            return await migrations.apply(conn, self.migrations)
        finally:
            await conn.close()

    async def start(self) -> None:
        applied = await self.migrate()
        if applied:
            log.info("migrations applied", migrations=[f"{m.source}/{m.version}" for m in applied])
        self._pool = await asyncpg.create_pool(
            self.settings.database_url, min_size=1, max_size=self.settings.database_pool_size
        )
        await self.broker.start()
        for hook in self._started_hooks:
            await hook()
        log.info("service started", http_port=self.settings.http_port)

    async def stop(self) -> None:
        log.info("service stopping")
        for hook in self._stopping_hooks:
            await hook()
        # The broker first: its subscribers finish the message in hand, which may need the pool.
        await self.broker.stop()
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
        return checks

    @asynccontextmanager
    async def _lifespan(self, _app: FastAPI) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.stop()
