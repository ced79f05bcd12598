"""Two replicas of one service in one consumer group, as processes: they split the partitions, and
when one is killed (SIGKILL) its partitions move to the other without loss or duplicate effects."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from datetime import UTC, datetime
from uuid import uuid4

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer
from packline_contracts.envelope import Envelope, encode
from packline_contracts.probes import ProbeSent
from packline_contracts.topics import OPS_PROBES, dead_letter_topic
from packline_core import deadletters

from tests.conftest import CreateDatabase, Infrastructure
from tests.e2e.packline_processes import free_port, service_log, until_ready
from tests.helpers import eventually

pytestmark = pytest.mark.infra

PROBES = 300


async def start_replica(
    env: dict[str, str], instance: str
) -> tuple[asyncio.subprocess.Process, int]:
    port = free_port()
    with service_log(f"invoicing-{instance}") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "packline_invoicing.main",
            "serve",
            env={
                **env,
                "PACKLINE_HTTP_PORT": str(port),
                "PACKLINE_INSTANCE_ID": instance,
                "PYTHONUNBUFFERED": "1",
            },
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        await until_ready(f"replica {instance}", process, client)
    return process, port


async def test_replicas_share_partitions_and_a_killed_one_loses_nothing(
    infrastructure: Infrastructure, topic_prefix: str, create_database: CreateDatabase
) -> None:
    database_url = await create_database("invoicing")
    env = {
        **os.environ,
        "PACKLINE_KAFKA_BOOTSTRAP_SERVERS": infrastructure.kafka_bootstrap,
        "PACKLINE_TOPIC_PREFIX": topic_prefix,
        "PACKLINE_DATABASE_URL": database_url,
        "PACKLINE_CONSUMER_BATCH_SIZE": "20",
    }
    first, _ = await start_replica(env, "replica-a")
    second, _ = await start_replica(env, "replica-b")
    db = await asyncpg.connect(database_url)
    producer = AIOKafkaProducer(bootstrap_servers=infrastructure.kafka_bootstrap, acks="all")
    await producer.start()
    topic = topic_prefix + OPS_PROBES.name
    try:
        published = 0

        async def publish(count: int) -> None:
            nonlocal published
            for _ in range(count):
                probe = ProbeSent(probe_id=uuid4(), sent_by="test", sent_at=datetime.now(UTC))
                record = encode(Envelope.wrap(probe, producer="test"))
                await producer.send_and_wait(
                    topic, record.value, record.key, headers=record.headers
                )
                published += 1

        async def recorded_by() -> str:
            rows = await db.fetch("SELECT applied_by, count(*) FROM inbox GROUP BY applied_by")
            return f"{published} published; applied, by replica: {[tuple(row) for row in rows]}"

        async def both_replicas_applied() -> bool:
            rows = await db.fetch("SELECT DISTINCT applied_by FROM inbox")
            return {row["applied_by"] for row in rows} == {"replica-a", "replica-b"}

        # Ready does not mean the group has given the second replica its partitions yet: keep
        # publishing, a few at a time, until each replica has applied some.
        await publish(PROBES // 3)

        async def both_applied_or_publish_more() -> bool:
            if await both_replicas_applied():
                return True
            await publish(10)
            return False

        await eventually(
            both_applied_or_publish_more,
            interval=0.5,
            what="both replicas to apply probes",
            describe=recorded_by,
        )

        first.send_signal(signal.SIGKILL)
        await first.wait()
        before_kill = published
        await publish(PROBES - PROBES // 3)

        async def all_recorded() -> bool:
            return bool(await db.fetchval("SELECT count(*) FROM ops_probe_received") == published)

        await eventually(
            all_recorded,
            within=90,
            what=f"all {published} probes to be recorded",
            describe=recorded_by,
        )
        assert await db.fetchval("SELECT count(*) FROM inbox") == published
        survivors = await db.fetchval("SELECT count(*) FROM inbox WHERE applied_by = 'replica-b'")
        assert survivors >= published - before_kill  # it took over the killed one's partitions
        dead = await deadletters.read_all(
            infrastructure.kafka_bootstrap, topic_prefix + dead_letter_topic("invoicing").name
        )
        assert dead == []
    finally:
        await producer.stop()
        await db.close()
        for process in (first, second):
            if process.returncode is None:
                process.terminate()
                await process.wait()
