"""Kafka record operations, counted from the broker's offsets, and "the system is quiet".

A record operation is one record written to a topic or one record read by a consumer group and
committed. Produced records are the growth of every topic's end offsets (the services' producers
are not transactional, so an offset is a record); consumed records are the growth of every
service consumer group's committed offsets. The load generator's own reader is left out: it is
the measurement, not the system (its CPU is still in the machine's).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition


@dataclass
class Offsets:
    ends: dict[TopicPartition, int]
    committed: dict[tuple[str, TopicPartition], int]

    def lag(self) -> int:
        """Records written to a topic a service group reads and not yet committed by it."""
        topics = {tp.topic for _, tp in self.committed}
        lag = 0
        for tp, end in self.ends.items():
            if tp.topic not in topics:
                continue
            for group in {g for g, t in self.committed if t.topic == tp.topic}:
                lag += max(end - self.committed.get((group, tp), 0), 0)
        return lag


def record_operations(before: Offsets, after: Offsets) -> dict[str, int]:
    produced = sum(end - before.ends.get(tp, 0) for tp, end in after.ends.items())
    consumed = sum(n - before.committed.get(key, 0) for key, n in after.committed.items())
    return {"produced": produced, "consumed": consumed, "total": produced + consumed}


async def partitions_of(
    admin: AIOKafkaAdminClient, topics: list[str], within: float = 60
) -> list[TopicPartition]:
    """Every partition of ``topics``, once the broker's metadata has them all (new topics'
    partitions take a moment to spread)."""
    deadline = time.monotonic() + within
    while True:
        found = [
            TopicPartition(t["topic"], p["partition"])
            for t in await admin.describe_topics(topics)
            if t["error_code"] == 0
            for p in t["partitions"]
        ]
        if {tp.topic for tp in found} == set(topics):
            return sorted(found)
        if time.monotonic() > deadline:
            raise TimeoutError(f"no metadata for {set(topics) - {tp.topic for tp in found}}")
        await asyncio.sleep(0.2)  # asking the broker again, bounded by the deadline


class Broker:
    """Reads the end offsets of the run's topics and the committed offsets of its groups."""

    def __init__(self, bootstrap: str, prefix: str, own_groups: set[str]) -> None:
        self.bootstrap, self.prefix, self.own_groups = bootstrap, prefix, own_groups
        self.admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        self.partitions: list[TopicPartition] = []

    async def start(self) -> None:
        await self.admin.start()
        await self.consumer.start()
        topics = sorted(t for t in await self.admin.list_topics() if t.startswith(self.prefix))
        self.partitions = await partitions_of(self.admin, topics)

    async def stop(self) -> None:
        await self.consumer.stop()
        await self.admin.close()

    async def offsets(self) -> Offsets:
        ends = await self.consumer.end_offsets(self.partitions)
        groups = [
            str(g[0])
            for g in await self.admin.list_consumer_groups()
            if str(g[0]).startswith(self.prefix) and str(g[0]) not in self.own_groups
        ]
        committed: dict[tuple[str, TopicPartition], int] = {}
        for group in groups:
            for tp, meta in (await self.admin.list_consumer_group_offsets(group)).items():
                if meta.offset >= 0:
                    committed[(group, tp)] = meta.offset
        return Offsets(dict(ends), committed)

    async def quiet(
        self,
        within: float,
        also: Callable[[], Awaitable[bool]] | None = None,
        poll: float = 0.1,
    ) -> Offsets:
        """Wait until every service group has committed every record of the topics it reads and
        no topic grew between two looks ``poll`` seconds apart (and ``also`` holds): nothing
        left to do. Raises TimeoutError after ``within`` seconds."""
        deadline = time.monotonic() + within
        last: Offsets | None = None
        while True:
            now = await self.offsets()
            if (
                last is not None
                and now.lag() == 0
                and now.ends == last.ends
                and now.committed == last.committed
                and (also is None or await also())
            ):
                return now
            if time.monotonic() > deadline:
                raise TimeoutError(f"not quiet after {within:.0f} s ({now.lag()} records behind)")
            last = now
            await asyncio.sleep(poll)
