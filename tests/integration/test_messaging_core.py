"""The messaging core's guarantees (I4, I5, I7) on the real broker and database: duplicates and
replays have one effect, a relay crash loses nothing, poison messages are set aside while the
partition flows on, and a database outage skips nothing."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest
from aiokafka.partitioner import murmur2
from packline_contracts.envelope import Envelope, encode
from packline_contracts.probes import ProbeSent
from packline_contracts.topics import OPS_PROBES, Consumer, dead_letter_topic
from packline_core import deadletters, migrations
from packline_core.consumer import ConsumerSettings, MessageConsumer
from packline_core.errors import Rejected
from packline_core.outbox import OutboxRow, Transaction, write_rows
from packline_core.service import Service

from tests.conftest import TEST_PARTITIONS, CreateDatabase, Infrastructure, StartService
from tests.helpers import eventually
from tests.proxy import CuttableProxy

pytestmark = pytest.mark.infra


def probe(sent_by: str = "test", *, on: int | None = None) -> ProbeSent:
    """A probe; ``on``: one whose key the default (murmur2) partitioner puts on that partition,
    so it can be sent there explicitly and still be where its key belongs."""
    while True:
        made = ProbeSent(probe_id=uuid4(), sent_by=sent_by, sent_at=datetime.now(UTC))
        if on is None or partition_of(made.kafka_key().encode()) == on:
            return made


def partition_of(key: bytes, partitions: int = TEST_PARTITIONS) -> int:
    return (murmur2(key) & 0x7FFFFFFF) % partitions


async def send(service: Service, *values: ProbeSent | bytes, partition: int | None = None) -> None:
    topic = service.settings.topic(OPS_PROBES)
    for value in values:
        if isinstance(value, bytes):
            await service.producer.send_and_wait(topic, value, b"junk", partition=partition)
        else:
            record = encode(Envelope.wrap(value, producer="test"))
            await service.producer.send_and_wait(
                topic, record.value, record.key, headers=record.headers, partition=partition
            )


async def recorded(service: Service, *probes: ProbeSent) -> int:
    count: int = await service.pool.fetchval(
        "SELECT count(*) FROM ops_probe_received WHERE probe_id = ANY($1::uuid[])",
        [p.probe_id for p in probes],
    )
    return count


def metric(service: Service, name: str, **labels: str) -> float:
    return service.metrics.registry.get_sample_value(name, labels) or 0.0


async def dead_letters(infrastructure: Infrastructure, service: Service) -> list[Any]:
    topic = service.settings.topic(dead_letter_topic(service.name))
    return list(await deadletters.read_all(infrastructure.kafka_bootstrap, topic))


async def test_poison_messages_are_dead_lettered_and_the_partition_flows_on(
    start_service: StartService, infrastructure: Infrastructure
) -> None:
    calendar = await start_service("calendar")
    first, last = probe(on=0), probe(on=0)
    wrong_shape = b'{"message_type": "ProbeSent", "payload": {"probe_id": 5}}'
    await send(calendar, first, b"\x00not json", wrong_shape, last, partition=0)

    await eventually(
        lambda: _equals(lambda: recorded(calendar, first, last), 2),
        what="the probes around the poison",
    )
    letters = await eventually(
        lambda: _letters_at_least(infrastructure, calendar, 2), what="two dead letters"
    )
    assert [letter.value for letter in letters] == [b"\x00not json", wrong_shape]
    headers = [dict(letter.headers) for letter in letters]
    assert headers[0]["dead-letter-reason"].startswith(b"invalid message: value: not JSON")
    assert b"message_id: Field required" in headers[1]["dead-letter-reason"]
    assert headers[1]["dead-letter-reason"].count(b"payload.probe_id") == 1
    for header in headers:
        assert header["dead-letter-topic"] == calendar.settings.topic(OPS_PROBES).encode()
        assert header["dead-letter-partition"] == b"0"
        assert header["dead-letter-consumer"] == b"calendar.probes"
        assert header["dead-letter-attempts"] == b"1"
    assert [int(h["dead-letter-offset"]) for h in headers] == [1, 2]
    assert (
        metric(calendar, "packline_messages_dead_lettered_total", consumer="calendar.probes") == 2
    )


async def _letters_at_least(
    infrastructure: Infrastructure, service: Service, count: int
) -> list[Any] | None:
    letters = await dead_letters(infrastructure, service)
    return letters if len(letters) >= count else None


async def test_a_handler_rejection_dead_letters_only_that_message(
    start_service: StartService, infrastructure: Infrastructure
) -> None:
    def add_picky_consumer(service: Service) -> None:
        picky = MessageConsumer(service, Consumer(service.name, "picky", (OPS_PROBES,)))
        service.consumers.append(picky)

        @picky.handles(ProbeSent)
        async def accept_unless_poison(tx: Transaction, envelope: Envelope[ProbeSent]) -> None:
            if envelope.payload.sent_by == "poison":
                raise Rejected("poison probes are refused")
            await tx.conn.execute(
                "INSERT INTO picked (probe_id) VALUES ($1)", envelope.payload.probe_id
            )

    calendar = await start_service("calendar", customize=add_picky_consumer)
    await calendar.pool.execute("CREATE TABLE picked (probe_id uuid PRIMARY KEY)")
    good = [probe(on=1) for _ in range(5)]
    poison = probe("poison", on=1)
    await send(calendar, *good[:2], poison, *good[2:], partition=1)

    async def picked() -> int:
        count: int = await calendar.pool.fetchval("SELECT count(*) FROM picked")
        return count

    await eventually(lambda: _equals(picked, 5), what="the five good probes")
    letters = await eventually(
        lambda: _letters_at_least(infrastructure, calendar, 1), what="the rejected probe"
    )
    assert len(letters) == 1
    assert dict(letters[0].headers)["dead-letter-reason"] == b"rejected: poison probes are refused"
    assert dict(letters[0].headers)["dead-letter-error"] == b"Rejected"
    assert (
        await calendar.pool.fetchval("SELECT count(*) FROM inbox WHERE consumer = 'calendar.picky'")
        == 5
    )  # the rejected one left no inbox row: re-driven, it would be tried again


async def _equals(probe_count: Any, wanted: int) -> bool:
    return bool(await probe_count() == wanted)


async def test_a_message_read_again_after_a_crash_before_the_offset_commit_has_one_effect(
    start_service: StartService, create_database: CreateDatabase
) -> None:
    database_url = await create_database("calendar")

    def crash_before_offset_commit(service: Service) -> None:
        async def no_commit(*_args: Any, **_kwargs: Any) -> None:
            return None  # the process "dies" after the database commit, before Kafka's

        for consumer in service.consumers:
            consumer._commit_applied = no_commit  # type: ignore[method-assign]

    first = await start_service(
        "calendar", database_url=database_url, customize=crash_before_offset_commit
    )
    once = probe()
    await send(first, once)
    await eventually(lambda: recorded(first, once), what="the first replica to apply the probe")
    await first.stop()

    second = await start_service("calendar", database_url=database_url)
    labels = {"consumer": "calendar.probes", "message_type": "ProbeSent"}
    await eventually(
        lambda: _positive(metric(second, "packline_messages_deduplicated_total", **labels)),
        what="the replay to be skipped",
    )
    assert await recorded(second, once) == 1
    assert metric(second, "packline_messages_handled_total", **labels) == 0


async def _positive(value: float) -> bool:
    return value > 0


async def test_a_relay_crash_between_publish_and_mark_sent_loses_nothing_and_applies_once(
    start_service: StartService,
) -> None:
    invoicing = await start_service("invoicing")
    crashed: list[int] = []

    def crash_once_before_marking(service: Service) -> None:
        mark_sent = service.relay.mark_sent

        async def crash_then_mark(conn: Any, ids: list[int]) -> None:
            if not crashed:
                crashed.extend(ids)
                raise ConnectionResetError("relay died after publishing")
            await mark_sent(conn, ids)

        service.relay.mark_sent = crash_then_mark  # type: ignore[method-assign]

    calendar = await start_service("calendar", customize=crash_once_before_marking)
    sent: list[UUID] = []
    async with calendar.transaction() as tx:
        for _ in range(3):
            sent.append(tx.publish(probe("calendar")).payload.probe_id)

    async def all_marked() -> bool:
        unsent = await calendar.pool.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
        return unsent == 0 and len(crashed) > 0

    await eventually(all_marked, what="the relay to recover and mark the rows sent")
    labels = {"consumer": "invoicing.probes", "message_type": "ProbeSent"}
    await eventually(
        lambda: _positive(metric(invoicing, "packline_messages_deduplicated_total", **labels) - 2),
        what="invoicing to skip the three republished probes",
    )
    rows = await invoicing.pool.fetchval(
        "SELECT count(*) FROM ops_probe_received WHERE probe_id = ANY($1::uuid[])", sent
    )
    assert rows == 3
    assert metric(invoicing, "packline_messages_handled_total", **labels) == 3


async def test_while_the_database_is_down_nothing_is_skipped_and_the_backlog_drains(
    start_service: StartService,
    create_database: CreateDatabase,
    infrastructure: Infrastructure,
) -> None:
    real_url = await create_database("invoicing")
    host_port = real_url.split("@", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    proxy = await CuttableProxy(host, int(port)).start()
    try:
        through_proxy = real_url.replace(f"@{host_port}/", f"@127.0.0.1:{proxy.port}/")
        invoicing = await start_service("invoicing", database_url=through_proxy)
        sender = await start_service("calendar")
        proxy.cut()
        backlog = [probe() for _ in range(20)]
        await send(sender, *backlog)
        await eventually(
            lambda: _positive(
                metric(
                    invoicing,
                    "packline_messages_failed_total",
                    consumer="invoicing.probes",
                    transient="true",
                )
            ),
            what="the consumer to hit the outage",
        )
        proxy.restore()
        await eventually(
            lambda: _equals(lambda: recorded(invoicing, *backlog), 20),
            within=60,
            what="the backlog to drain after the database returned",
        )
        assert (
            metric(invoicing, "packline_messages_dead_lettered_total", consumer="invoicing.probes")
            == 0
        )
        assert await dead_letters(infrastructure, invoicing) == []
    finally:
        await proxy.stop()


async def test_dead_letters_can_be_listed_and_redriven_once_the_fault_is_fixed(
    start_service: StartService, infrastructure: Infrastructure, topic_prefix: str
) -> None:
    broken = {"yes"}

    def add_flaky_consumer(service: Service) -> None:
        flaky = MessageConsumer(
            service,
            Consumer(service.name, "flaky", (OPS_PROBES,)),
            ConsumerSettings(max_attempts=2, first_backoff=0.05),
        )
        service.consumers.append(flaky)

        @flaky.handles(ProbeSent)
        async def fail_while_broken(tx: Transaction, envelope: Envelope[ProbeSent]) -> None:
            if broken:
                raise RuntimeError("a bug, fixed in the next release")
            await tx.conn.execute(
                "INSERT INTO fixed (probe_id) VALUES ($1)", envelope.payload.probe_id
            )

    calendar = await start_service("calendar", customize=add_flaky_consumer)
    await calendar.pool.execute("CREATE TABLE fixed (probe_id uuid PRIMARY KEY)")
    stuck = probe()
    await send(calendar, stuck)
    letters = await eventually(
        lambda: _letters_at_least(infrastructure, calendar, 1), what="the dead letter"
    )
    assert dict(letters[0].headers)["dead-letter-attempts"] == b"2"

    admin = [sys.executable, "-m", "packline_core.admin", "dead-letters"]
    common = [
        "--service",
        "calendar",
        "--prefix",
        topic_prefix,
        "--bootstrap-servers",
        infrastructure.kafka_bootstrap,
    ]
    listed = await asyncio.to_thread(
        subprocess.run, [*admin, "list", *common], capture_output=True, text=True, timeout=60
    )
    assert listed.returncode == 0, listed.stderr
    first = json.loads(listed.stdout.splitlines()[0])
    assert first["reason"].startswith("failed 2 times: RuntimeError")
    assert first["consumer"] == "calendar.flaky"

    broken.clear()  # the fix is deployed
    redriven = await asyncio.to_thread(
        subprocess.run,
        [*admin, "redrive", *common, "--at", first["at"]],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert redriven.returncode == 0, redriven.stderr
    assert "1 dead letter(s) re-driven" in redriven.stdout

    async def applied() -> bool:
        return bool(await calendar.pool.fetchval("SELECT count(*) FROM fixed") == 1)

    await eventually(applied, what="the re-driven probe to be applied")
    # The probes consumer had applied it the first time: the re-driven copy changes nothing there.
    assert await recorded(calendar, stuck) == 1


async def test_outbox_rows_of_one_key_follow_commit_order(create_database: CreateDatabase) -> None:
    url = await create_database("outbox")
    setup = await asyncpg.connect(url)
    await migrations.apply(setup, migrations.load("packline_core", "core"))
    first, second = await asyncpg.connect(url), await asyncpg.connect(url)
    try:
        row = OutboxRow(uuid4(), "t", b"patient-1", b"{}", [])
        late = OutboxRow(uuid4(), "t", b"patient-1", b"{}", [])
        opened = first.transaction()
        await opened.start()
        await write_rows(first, [row])  # takes patient-1's lock until commit
        blocked = asyncio.create_task(_write_in_transaction(second, late))

        async def second_waits_for_the_lock() -> bool:
            waiting = await setup.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            )
            return bool(waiting == 1)

        await eventually(second_waits_for_the_lock, what="the second writer to wait")
        assert not blocked.done()
        await opened.commit()
        await blocked
        ids = await setup.fetch("SELECT message_id FROM outbox ORDER BY id")
        assert [r["message_id"] for r in ids] == [row.message_id, late.message_id]
    finally:
        for conn in (first, second, setup):
            await conn.close()


async def _write_in_transaction(conn: Any, row: OutboxRow) -> None:
    async with conn.transaction():
        await write_rows(conn, [row])


async def test_one_relay_publishes_and_another_replica_takes_over(
    start_service: StartService, create_database: CreateDatabase
) -> None:
    url = await create_database("calendar")
    replicas = [await start_service("calendar", database_url=url) for _ in range(2)]

    async def one_leader() -> Service | None:
        leaders = [r for r in replicas if r.relay.is_leader]
        return leaders[0] if len(leaders) == 1 else None

    leader = await eventually(one_leader, what="exactly one active relay")
    await leader.stop()
    survivor = next(r for r in replicas if r is not leader)
    await eventually(lambda: _positive(float(survivor.relay.is_leader)), what="a takeover")
    async with survivor.transaction() as tx:
        sent = tx.publish(probe("calendar")).payload
    await eventually(lambda: recorded(survivor, sent), what="the survivor to publish and apply")
