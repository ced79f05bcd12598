"""What the machine does without Packline, measured in the same run on the same broker and
database server: the floor every Packline figure reads against.

Each baseline reports its rate and the machine's CPU (whole machine, /proc/stat) per operation.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from benchmarks.machine import machine_busy_seconds
from benchmarks.offsets import partitions_of
from benchmarks.system import Config


async def kafka_baseline(config: Config, run_id: str) -> dict[str, Any]:
    """A raw aiokafka consume -> produce loop (acks=all, offsets committed per batch of up to
    500), no Packline code. Each message is two record operations: one read (and committed),
    one written."""
    admin = AIOKafkaAdminClient(bootstrap_servers=config.kafka)
    await admin.start()
    source, sink = f"bench-raw-{run_id}.in", f"bench-raw-{run_id}.out"
    await admin.create_topics([NewTopic(t, 12, 1) for t in (source, sink)])
    await partitions_of(admin, [source, sink])
    count = config.kafka_baseline_records
    producer = AIOKafkaProducer(bootstrap_servers=config.kafka, acks="all", linger_ms=5)
    await producer.start()
    payload = b"x" * 600  # about the size of a BookAppointment envelope
    for i in range(count):
        await producer.send(source, payload, key=str(i).encode())
    await producer.flush()
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=config.kafka,
        group_id=f"bench-raw-{run_id}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    seen = 0
    cpu, started = machine_busy_seconds(), time.monotonic()
    while seen < count:
        batches = await consumer.getmany(timeout_ms=1000, max_records=500)
        futures = [
            await producer.send(sink, r.value, key=r.key) for rs in batches.values() for r in rs
        ]
        await asyncio.gather(*futures)
        await consumer.commit()
        seen += len(futures)
    elapsed, cpu = time.monotonic() - started, machine_busy_seconds() - cpu
    await consumer.stop()
    await producer.stop()
    await admin.delete_topics([source, sink])
    await admin.close()
    operations = 2 * count
    return {
        "messages": count,
        "per_second": count / elapsed,
        "record_operations_per_second": operations / elapsed,
        "machine_ms_per_record_operation": cpu / operations * 1000,
    }


async def _timed(seconds: float, work: Any) -> tuple[int, float, float]:
    """Run ``work()`` (returns operations done) until ``seconds`` pass: (operations, elapsed,
    machine CPU seconds)."""
    done, cpu, started = 0, machine_busy_seconds(), time.monotonic()
    while time.monotonic() - started < seconds:
        done += await work()
    return done, time.monotonic() - started, machine_busy_seconds() - cpu


async def postgres_baseline(config: Config, run_id: str) -> dict[str, Any]:
    """Raw asyncpg on the same server, no Packline code:

    - one connection, one row inserted and committed per transaction (round trip after round
      trip: the latency-bound floor);
    - one connection, 500 rows per transaction (``executemany``);
    - pipelined: 8 connections working at once, each with 50 single-row INSERTs in flight in
      one transaction (asyncpg's ``executemany`` sends them without waiting for each answer), so
      several commits share a WAL flush: the throughput a batch-shaped service could reach.
    """
    seconds = config.postgres_baseline_seconds
    table = f"bench_raw_{run_id}"
    insert = f"INSERT INTO {table} VALUES ($1, '{{}}')"
    conn = await asyncpg.connect(config.admin_url)
    await conn.execute(f"CREATE TABLE {table} (id uuid PRIMARY KEY, body jsonb)")
    try:

        async def one() -> int:
            async with conn.transaction():
                await conn.execute(insert, uuid.uuid4())
            return 1

        commits, elapsed, cpu = await _timed(seconds, one)
        single = {
            "commits_per_second": commits / elapsed,
            "machine_ms_per_commit": cpu / commits * 1000,
        }

        async def five_hundred() -> int:
            async with conn.transaction():
                await conn.executemany(insert, [(uuid.uuid4(),) for _ in range(500)])
            return 500

        rows, elapsed, cpu = await _timed(seconds, five_hundred)
        batched = {"rows_per_second": rows / elapsed, "machine_ms_per_row": cpu / rows * 1000}

        connections = [await asyncpg.connect(config.admin_url) for _ in range(8)]
        try:

            async def pipelined(c: asyncpg.Connection) -> int:
                done, until = 0, time.monotonic() + seconds
                while time.monotonic() < until:
                    async with c.transaction():
                        await c.executemany(insert, [(uuid.uuid4(),) for _ in range(50)])
                    done += 50
                return done

            cpu, started = machine_busy_seconds(), time.monotonic()
            statements = sum(await asyncio.gather(*(pipelined(c) for c in connections)))
            elapsed, cpu = time.monotonic() - started, machine_busy_seconds() - cpu
        finally:
            for c in connections:
                await c.close()
        piped = {
            "connections": len(connections),
            "statements_in_flight_per_connection": 50,
            "statements_per_second": statements / elapsed,
            "commits_per_second": statements / 50 / elapsed,
            "machine_ms_per_statement": cpu / statements * 1000,
        }
    finally:
        await conn.execute(f"DROP TABLE {table}")
        await conn.close()
    return {"single": single, "batched_500": batched, "pipelined": piped}
