"""Fixtures shared by every test: the real Kafka broker and PostgreSQL, and per-test isolation.

Where the infrastructure comes from, in order:
1. ``PACKLINE_TEST_KAFKA_BOOTSTRAP`` and ``PACKLINE_TEST_DATABASE_URL`` (an admin URL of a
   PostgreSQL server); ``deploy/packline test`` starts both and sets them.
2. Otherwise, when a Docker engine answers, testcontainers starts Kafka (KRaft) and PostgreSQL.
3. Otherwise a test that needs them fails (never skips) and says how to start them.

Isolation: each test gets its own topic prefix (so its own topics and consumer groups) and its
own databases, so tests never see each other's messages or rows.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from packline_contracts.client import PacklineConsumer, PacklineProducer
from packline_contracts.topics import Topic
from packline_core.service import Service
from packline_core.topics import create_topics

TEST_PARTITIONS = 3

# Services started by tests (in this process or as child processes, which inherit the
# environment) serve their staff API without a token unless a test configures tokens; without
# this explicit development switch a service refuses to start with no token.
os.environ.setdefault("PACKLINE_STAFF_API_OPEN", "true")


@dataclass(frozen=True)
class Infrastructure:
    kafka_bootstrap: str
    admin_database_url: str  # a superuser URL; its database part is replaced per test

    def database_url(self, database: str) -> str:
        base, _, _ = self.admin_database_url.rpartition("/")
        return f"{base}/{database}"


def _docker_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env(timeout=3).ping()
    except Exception:
        return False
    return True


@pytest.fixture(scope="session")
def infrastructure() -> Iterator[Infrastructure]:
    kafka = os.environ.get("PACKLINE_TEST_KAFKA_BOOTSTRAP")
    database = os.environ.get("PACKLINE_TEST_DATABASE_URL")
    if kafka and database:
        yield Infrastructure(kafka, database)
        return
    if not _docker_answers():
        pytest.fail(
            "This test needs the real Kafka broker and PostgreSQL. Run the suite with "
            "'deploy/packline test' (it starts both), or start them with 'deploy/packline infra' "
            "and set PACKLINE_TEST_KAFKA_BOOTSTRAP=127.0.0.1:9092 and PACKLINE_TEST_DATABASE_URL="
            "postgresql://packline:packline@127.0.0.1:5432/postgres, or run a Docker engine for "
            "testcontainers.",
            pytrace=False,
        )
    from testcontainers.kafka import KafkaContainer
    from testcontainers.postgres import PostgresContainer

    with ExitStack() as stack:
        kafka_container = stack.enter_context(
            KafkaContainer("apache/kafka:4.1.1").with_kraft()  # same version as deploy/kafka
        )
        pg = stack.enter_context(PostgresContainer("postgres:15", driver=None))
        yield Infrastructure(kafka_container.get_bootstrap_server(), pg.get_connection_url())


@pytest.fixture
def test_id() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
async def topic_prefix(infrastructure: Infrastructure, test_id: str) -> AsyncIterator[str]:
    """A prefix private to this test; the registry's topics are created under it."""
    prefix = f"test-{test_id}."
    created = await create_topics(
        infrastructure.kafka_bootstrap, partitions=TEST_PARTITIONS, prefix=prefix
    )
    yield prefix
    # Thousands of left-over partitions would slow the broker down for the tests after this one.
    admin = AIOKafkaAdminClient(bootstrap_servers=infrastructure.kafka_bootstrap)
    await admin.start()
    try:
        await admin.delete_topics(created)
    except Exception as error:  # the broker may be restarting (fault suite): not this test's fault
        print(f"could not delete this test's topics: {error!r}")
    finally:
        await admin.close()


CreateDatabase = Callable[[str], Awaitable[str]]


@pytest.fixture
async def create_database(
    infrastructure: Infrastructure, test_id: str
) -> AsyncIterator[CreateDatabase]:
    """Create a database private to this test; returns its URL. Dropped after the test."""
    created: list[str] = []

    async def create(purpose: str) -> str:
        name = f"t_{test_id}_{purpose}_{len(created)}"
        conn = await asyncpg.connect(infrastructure.admin_database_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        created.append(name)
        return infrastructure.database_url(name)

    yield create
    conn = await asyncpg.connect(infrastructure.admin_database_url)
    try:
        for name in created:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def same_database(service: Service) -> dict[str, Any]:
    """``start_service`` options for another replica of ``service``: its database, whose URL
    the settings keep without the password (that is apart, a secret)."""
    return {
        "database_url": service.settings.database_url,
        "database_password": service.settings.database_password,
    }


class StartService(Protocol):
    async def __call__(
        self,
        name: str,
        *,
        database_url: str | None = None,
        customize: Callable[[Service], None] | None = None,
        **settings: Any,
    ) -> Service: ...


@pytest.fixture
async def start_service(
    infrastructure: Infrastructure, topic_prefix: str, create_database: CreateDatabase
) -> AsyncIterator[StartService]:
    """Start a Packline service in this process against the test's own topics and database."""
    from tests.services_under_test import SERVICES

    running: list[Service] = []

    async def start(
        name: str,
        *,
        database_url: str | None = None,
        customize: Callable[[Service], None] | None = None,
        **overrides: Any,
    ) -> Service:
        """Start ``name`` on a new database (or ``database_url``: a second replica), after
        ``customize`` (extra consumers, patches) had its say."""
        settings_class, create_service = SERVICES[name]
        settings = settings_class(
            **{
                "kafka_bootstrap_servers": infrastructure.kafka_bootstrap,
                "topic_prefix": topic_prefix,
                "database_url": database_url or await create_database(name),
                "http_port": 0,
                "database_pool_size": 4,
                "outbox_poll_seconds": 0.2,
                **overrides,
            }
        )
        service = create_service(settings)
        if customize is not None:
            customize(service)
        await service.start()
        running.append(service)
        return service

    yield start
    for service in reversed(running):
        await service.stop()


@pytest.fixture
async def producer(
    infrastructure: Infrastructure, topic_prefix: str
) -> AsyncIterator[PacklineProducer]:
    """Publishes as another team's service would (the contracts' client)."""
    async with PacklineProducer(
        infrastructure.kafka_bootstrap, producer="test-client", topic_prefix=topic_prefix
    ) as client:
        yield client


ReadEvents = Callable[..., Awaitable[PacklineConsumer]]


@pytest.fixture
async def read_events(
    infrastructure: Infrastructure, topic_prefix: str
) -> AsyncIterator[ReadEvents]:
    """Start a reader of some topics (from their beginning) in a consumer group of its own."""
    readers: list[PacklineConsumer] = []

    async def start(*topics: Topic) -> PacklineConsumer:
        reader = PacklineConsumer(
            infrastructure.kafka_bootstrap,
            topics,
            group_id=f"{topic_prefix}reader-{len(readers)}",
            topic_prefix=topic_prefix,
        )
        await reader.__aenter__()
        readers.append(reader)
        return reader

    yield start
    for reader in readers:
        await reader.__aexit__(None, None, None)
