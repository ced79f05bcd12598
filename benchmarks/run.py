"""Packline's benchmark: how fast bookings become links, next to what the machine can do.

    deploy/packline bench            the full run (about 15 minutes on 2 cores)
    deploy/packline bench --quick    seconds-long smoke version (CI runs it)

It starts the three services as processes on topics and databases of its own, builds a synthetic
clinic group (practitioners, a location, packages of sessions, patients who bought them), drives
BookAppointment commands through Kafka and follows each booking to invoicing's ``LineLinked`` event
and to the calendar's package note. Figures:

- baselines in the same run: a raw aiokafka consume -> produce loop on the same broker, and a raw
  asyncpg insert-and-commit loop on the same database;
- latency p50 / p95 / p99 at fixed rates, booking command -> LineLinked and -> package note;
- the highest sustained rate (bookings linked per second) and each stage's rate, with one matcher
  and with two;
- per-booking cost (CPU seconds of the three services per booking, and latency at a fixed rate)
  as the package lines in the databases grow;
- backlog: the matcher stopped while bookings queue, its drain rate after it restarts, and the
  latency of new bookings during the drain.

Output in ``bench-results/<time>/``: ``results.md`` (also printed), ``results.json`` and
``latency.png`` (latency over time).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from packline_contracts import registry  # noqa: F401  (registers every message type)
from packline_contracts.appointments import BookAppointment
from packline_contracts.catalogue import (
    DefineFee,
    DefineLocation,
    DefinePackage,
    DefinePractitioner,
)
from packline_contracts.envelope import Envelope, Message, encode
from packline_contracts.invoices import IssuePackageInvoice, PurchaseChannel
from packline_contracts.topics import CALENDAR_EVENTS, INVOICING_EVENTS, INVOICING_LINKS
from packline_contracts.types import BookingSource, PackageItem, Restriction, Validity
from packline_core.topics import create_topics

PRACTITIONERS = [f"bench-dr-{n:02d}" for n in range(24)]
LOCATION = "bench-clinic"
FEE = "bench-massage"
PACKAGE = "bench-100"
SESSIONS = 100  # lines per package invoice


@dataclass
class Config:
    kafka: str
    admin_url: str
    quick: bool
    out: Path
    rates: Sequence[int] = (50, 200, 1000)
    rate_seconds: float = 20
    max_bookings: int = 20_000
    line_steps: Sequence[int] = (10_000, 100_000, 1_000_000)
    backlog: int = 100_000
    profile: bool = False

    def __post_init__(self) -> None:
        if self.quick:
            self.rates, self.rate_seconds, self.max_bookings = (50,), 2, 300
            self.line_steps, self.backlog = (2_000,), 300


# --- the system under test ------------------------------------------------------------------


class Process:
    def __init__(self, name: str, env: dict[str, str], port: int) -> None:
        self.name, self.env, self.port = name, env, port
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        log = self.log_file()
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            f"packline_{self.name.split('#')[0]}.main",
            "serve",
            env={**self.env, "PACKLINE_HTTP_PORT": str(self.port)},
            stdout=log,
            stderr=log,
        )
        async with httpx.AsyncClient() as client:
            for _ in range(600):
                try:
                    if (await client.get(f"http://127.0.0.1:{self.port}/health/ready")).is_success:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.2)
        raise RuntimeError(f"{self.name} did not start")

    def log_file(self) -> Any:
        return Path(self.env["BENCH_LOG_DIR"], f"{self.name}-{self.port}.log").open("ab")

    async def stop(self) -> None:
        if self.process and self.process.returncode is None:
            self.process.terminate()
            await asyncio.wait_for(self.process.wait(), timeout=60)

    def cpu_seconds(self) -> float:
        if not self.process or self.process.returncode is not None:
            return 0.0
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class System:
    config: Config
    prefix: str
    urls: dict[str, str]
    processes: dict[str, Process] = field(default_factory=dict)

    def cpu(self) -> float:
        return sum(p.cpu_seconds() for p in self.processes.values())

    def cpu_by_process(self) -> dict[str, float]:
        """CPU seconds so far: each service, this load generator, and the whole machine."""
        return {
            **{name: p.cpu_seconds() for name, p in self.processes.items()},
            "load generator": time.process_time(),
            "machine": machine_busy_seconds(),
        }


def machine_busy_seconds() -> float:
    # /proc/stat's first line: user nice system idle iowait irq softirq steal ... (ticks)
    ticks = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


async def start_system(config: Config, run_id: str) -> System:
    prefix = f"bench-{run_id}."
    await create_topics(config.kafka, partitions=12, prefix=prefix)
    base = config.admin_url.rsplit("/", 1)[0]
    conn = await asyncpg.connect(config.admin_url)
    urls = {}
    for name in ("calendar", "invoicing", "matcher"):
        database = f"bench_{run_id}_{name}"
        await conn.execute(f'CREATE DATABASE "{database}"')
        urls[name] = f"{base}/{database}"
    await conn.close()
    log_dir = config.out / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    system = System(config, prefix, urls)
    token = secrets.token_hex(32)  # the services refuse short or well-known static tokens
    for port, name in zip((18081, 18082, 18083), ("calendar", "invoicing", "matcher"), strict=True):
        env = {
            **os.environ,
            "PACKLINE_KAFKA_BOOTSTRAP_SERVERS": config.kafka,
            "PACKLINE_TOPIC_PREFIX": prefix,
            "PACKLINE_DATABASE_URL": urls[name],
            "PACKLINE_CALENDAR_URL": "http://127.0.0.1:18081",
            "PACKLINE_STAFF_TOKENS": token,
            "PACKLINE_CALENDAR_TOKEN": token,
            "PACKLINE_LOG_LEVEL": "WARNING",
            # Two members of each group per process: the configuration the figures were taken
            # with (the default, 1, keeps tests' rebalances short).
            "PACKLINE_CONSUMER_INSTANCES": os.environ.get("PACKLINE_CONSUMER_INSTANCES", "2"),
            "BENCH_LOG_DIR": str(log_dir),
        }
        system.processes[name] = Process(name, env, port)
        await system.processes[name].start()
    return system


async def drop_system(system: System) -> None:
    for process in system.processes.values():
        await process.stop()
    conn = await asyncpg.connect(system.config.admin_url)
    for url in system.urls.values():
        await conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    await conn.close()
    admin = AIOKafkaAdminClient(bootstrap_servers=system.config.kafka)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(system.prefix)]
        await admin.delete_topics(names)
    finally:
        await admin.close()


# --- driving it -----------------------------------------------------------------------------


class Driver:
    """Publishes commands as a front end would, and times each booking to its link and note."""

    def __init__(self, system: System) -> None:
        self.system = system
        self.producer = AIOKafkaProducer(
            bootstrap_servers=system.config.kafka, acks="all", linger_ms=5
        )
        self.sent: dict[uuid.UUID, float] = {}  # appointment id -> wall clock when sent
        self.linked: dict[uuid.UUID, float] = {}  # appointment id -> wall clock of LineLinked
        self.stage: dict[str, list[float]] = {"booked": [], "link command": [], "linked": []}
        self.free: list[tuple[str, int]] = []  # (patient, lines left)
        self.slot = 0
        self.cursor = 0
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.producer.start()
        self._reader = asyncio.create_task(self._read())

    async def stop(self) -> None:
        if self._reader:
            self._reader.cancel()
        await self.producer.stop()

    async def publish(self, message: Message) -> None:
        record = encode(Envelope.wrap(message, producer="bench"))
        await self.producer.send(
            self.system.prefix + message.TOPIC.name,
            value=record.value,
            key=record.key,
            headers=record.headers,
        )

    async def _read(self) -> None:
        topics = [CALENDAR_EVENTS, INVOICING_EVENTS, INVOICING_LINKS]
        consumer = AIOKafkaConsumer(
            *(self.system.prefix + t.name for t in topics),
            bootstrap_servers=self.system.config.kafka,
            group_id=f"{self.system.prefix}bench-reader",
            auto_offset_reset="latest",
        )
        await consumer.start()
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=200, max_records=5000)
                now = time.time()
                for records in batches.values():
                    for record in records:
                        kind = dict(record.headers).get("message-type", b"").decode()
                        if kind == "AppointmentBooked":
                            self.stage["booked"].append(now)
                        elif kind == "LinkAppointment":
                            self.stage["link command"].append(now)
                        elif kind == "LineLinked":
                            self.stage["linked"].append(now)
                            body = json.loads(record.value or b"{}")
                            self.linked.setdefault(
                                uuid.UUID(body["payload"]["appointment_id"]), now
                            )
        finally:
            await consumer.stop()

    async def clinic(self) -> None:
        for practitioner in PRACTITIONERS:
            await self.publish(DefinePractitioner(practitioner_id=practitioner, name=practitioner))
        await self.publish(DefineLocation(location_id=LOCATION, name="Bench clinic"))
        await self.publish(
            DefineFee(
                fee_id=FEE, name="Massage", duration_minutes=5, price_cents=100, currency="EUR"
            )
        )
        await self.publish(
            DefinePackage(
                package_id=PACKAGE,
                name=f"{SESSIONS} x massage",
                items=[PackageItem(fee_id=FEE, count=SESSIONS)],
                practitioners=Restriction(),
                locations=Restriction(),
                validity=Validity(days=3650),
                price_cents=100,
                currency="EUR",
                pay_before_use=False,
                online_purchase=True,  # the load is online purchases
            )
        )
        await self.producer.flush()

    async def buy(self, invoices: int) -> None:
        start = len(self.free)
        for n in range(start, start + invoices):
            patient = f"bench-patient-{n}"
            await self.publish(
                IssuePackageInvoice(
                    patient_id=patient,
                    invoice_id=uuid.uuid5(uuid.NAMESPACE_URL, f"bench/{self.system.prefix}/{n}"),
                    package_id=PACKAGE,
                    channel=PurchaseChannel.ONLINE,
                    issued_by="bench",
                    issued_at=datetime.now(UTC),
                )
            )
            self.free.append((patient, SESSIONS))
        await self.producer.flush()

    def booking(self) -> BookAppointment:
        # Spread bookings over patients so they land on every partition.
        for _ in range(len(self.free)):
            index = self.cursor % len(self.free)
            self.cursor += 1
            patient, left = self.free[index]
            if left > 0:
                break
        else:
            raise AssertionError("every line is booked: buy more packages first")
        self.free[index] = (patient, left - 1)
        n = self.slot
        self.slot += 1
        practitioner = PRACTITIONERS[n % len(PRACTITIONERS)]
        per_practitioner = n // len(PRACTITIONERS)
        starts = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(
            days=2, minutes=5 * per_practitioner
        )
        return BookAppointment(
            patient_id=patient,
            appointment_id=uuid.uuid4(),
            practitioner_id=practitioner,
            location_id=LOCATION,
            starts_at=starts,
            duration_minutes=5,
            fee_ids=[FEE],
            source=BookingSource.ONLINE,
            booked_by="bench",
        )

    async def book(self, count: int, rate: float | None) -> list[uuid.UUID]:
        """Send ``count`` bookings at ``rate`` per second (None: as fast as possible)."""
        ids = []
        started = time.monotonic()
        for i in range(count):
            if rate:
                delay = started + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            message = self.booking()
            self.sent[message.appointment_id] = time.time()
            await self.publish(message)
            ids.append(message.appointment_id)
        await self.producer.flush()
        return ids

    async def until_linked(self, ids: Sequence[uuid.UUID], within: float) -> None:
        deadline = time.monotonic() + within
        while not all(i in self.linked for i in ids):
            if time.monotonic() > deadline:
                missing = sum(i not in self.linked for i in ids)
                raise TimeoutError(f"{missing} of {len(ids)} bookings not linked in {within} s")
            await asyncio.sleep(0.1)

    async def note_times(
        self, ids: Sequence[uuid.UUID], within: float = 60
    ) -> dict[uuid.UUID, float]:
        """When the calendar noted each linked booking. The calendar applies LineLinked in its
        own time, after the link was seen: wait (with a deadline) until every note is there."""
        deadline = time.monotonic() + within
        conn = await asyncpg.connect(self.system.urls["calendar"])
        try:
            while True:
                rows = await conn.fetch(
                    "SELECT appointment_id, extract(epoch FROM updated_at) AS at"
                    " FROM package_notes WHERE appointment_id = ANY($1::uuid[])"
                    " AND state = 'linked'",
                    list(ids),
                )
                if len(rows) == len(ids) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
        finally:
            await conn.close()
        return {row["appointment_id"]: float(row["at"]) for row in rows}

    async def lines_in_databases(self) -> int:
        """Lines both invoicing and the matcher hold (the matcher learns them from events)."""
        counts = []
        for name, table in (("invoicing", "invoice_lines"), ("matcher", "lines")):
            conn = await asyncpg.connect(self.system.urls[name])
            try:
                counts.append(int(await conn.fetchval(f"SELECT count(*) FROM {table}")))
            finally:
                await conn.close()
        return min(counts)


def percentiles(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan"), "n": 0}
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "n": len(ordered)}


# --- the measurements -----------------------------------------------------------------------


async def kafka_baseline(config: Config, run_id: str) -> dict[str, float]:
    """A raw aiokafka consume -> produce loop (acks=all, commits per batch), no Packline code."""
    admin = AIOKafkaAdminClient(bootstrap_servers=config.kafka)
    await admin.start()
    source, sink = f"bench-{run_id}.raw-in", f"bench-{run_id}.raw-out"
    await admin.create_topics([NewTopic(t, 12, 1) for t in (source, sink)])
    count = 2_000 if config.quick else 50_000
    producer = AIOKafkaProducer(bootstrap_servers=config.kafka, acks="all", linger_ms=5)
    await producer.start()
    payload = b"x" * 600  # about the size of a BookAppointment envelope
    for i in range(count):
        await producer.send(source, payload, key=str(i).encode())
    await producer.flush()
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=config.kafka,
        group_id=f"bench-{run_id}.raw",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    seen = 0
    started = time.monotonic()
    while seen < count:
        batches = await consumer.getmany(timeout_ms=1000, max_records=500)
        futures = [
            await producer.send(sink, r.value, key=r.key) for rs in batches.values() for r in rs
        ]
        await asyncio.gather(*futures)
        await consumer.commit()
        seen += len(futures)
    elapsed = time.monotonic() - started
    await consumer.stop()
    await producer.stop()
    await admin.delete_topics([source, sink])
    await admin.close()
    return {"messages": count, "per_second": count / elapsed}


async def postgres_baseline(config: Config, run_id: str) -> dict[str, float]:
    """A raw asyncpg loop: one row inserted and committed per transaction, then 500 per one."""
    conn = await asyncpg.connect(config.admin_url)
    table = f"bench_raw_{run_id}"
    await conn.execute(f"CREATE TABLE {table} (id uuid PRIMARY KEY, body jsonb)")
    count = 500 if config.quick else 5_000
    started = time.monotonic()
    for _ in range(count):
        async with conn.transaction():
            await conn.execute(f"INSERT INTO {table} VALUES ($1, '{{}}')", uuid.uuid4())
    single = count / (time.monotonic() - started)
    started = time.monotonic()
    for _ in range(count * 4 // 500):
        async with conn.transaction():
            await conn.executemany(
                f"INSERT INTO {table} VALUES ($1, '{{}}')", [(uuid.uuid4(),) for _ in range(500)]
            )
    batched = count * 4 // 500 * 500 / (time.monotonic() - started)
    await conn.execute(f"DROP TABLE {table}")
    await conn.close()
    return {"commits_per_second": single, "rows_per_second_in_batches_of_500": batched}


async def fixed_rate(driver: Driver, rate: int, seconds: float) -> dict[str, Any]:
    count = max(1, int(rate * seconds))
    cpu_before = driver.system.cpu()
    ids = await driver.book(count, rate)
    await driver.until_linked(ids, within=120 + seconds * 5)
    cpu = driver.system.cpu() - cpu_before
    notes = await driver.note_times(ids)
    link = [driver.linked[i] - driver.sent[i] for i in ids]
    note = [notes[i] - driver.sent[i] for i in ids if i in notes]
    return {
        "rate": rate,
        "bookings": count,
        "to_link_ms": percentiles(link),
        "to_note_ms": percentiles(note),
        "cpu_ms_per_booking": cpu / count * 1000,
        "series": [(driver.sent[i], driver.linked[i] - driver.sent[i]) for i in ids],
    }


async def max_rate(driver: Driver, count: int) -> dict[str, Any]:
    for stage in driver.stage.values():
        stage.clear()
    before = driver.system.cpu_by_process()
    started = time.time()
    ids = await driver.book(count, None)
    sent = time.time()
    await driver.until_linked(ids, within=600)
    done = max(driver.linked[i] for i in ids)
    after = driver.system.cpu_by_process()
    used = {name: after[name] - before[name] for name in after}
    cpu = sum(used[name] for name in driver.system.processes)
    # Where the machine's cores went while the bookings went through (cores busy on average).
    seconds = max(time.time() - started, 1e-9)
    cores = {name: seconds_used / seconds for name, seconds_used in used.items()}
    cores["Kafka, PostgreSQL and the rest"] = max(
        cores["machine"] - sum(v for k, v in cores.items() if k != "machine"), 0.0
    )

    def rate(times: list[float]) -> float:
        times = sorted(times)[-count:]
        return len(times) / max(times[-1] - started, 1e-9) if times else 0.0

    return {
        "bookings": count,
        "send_per_second": count / (sent - started),
        "linked_per_second": count / (done - started),
        "stage_per_second": {name: rate(times) for name, times in driver.stage.items()},
        "cpu_ms_per_booking": cpu / count * 1000,
        "cores_busy": cores,
        "cores": os.cpu_count(),
    }


async def backlog(driver: Driver, count: int) -> dict[str, Any]:
    system = driver.system
    await system.processes["matcher"].stop()
    queued = await driver.book(count, None)
    # Wait until the calendar has booked them all: the backlog is then the matcher's alone.
    conn = await asyncpg.connect(system.urls["calendar"])
    while True:
        booked = await conn.fetchval(
            "SELECT count(*) FROM appointments WHERE appointment_id = ANY($1::uuid[])", queued
        )
        if booked == len(queued):
            break
        await asyncio.sleep(0.5)
    await conn.close()
    await system.processes["matcher"].start()
    restarted = time.time()  # ready: from here on it drains
    probes: list[uuid.UUID] = []

    async def trickle() -> None:
        while not all(i in driver.linked for i in queued):
            probes.extend(await driver.book(5, None))
            await asyncio.sleep(0.25)  # 20 new bookings a second during the drain

    trickling = asyncio.create_task(trickle())
    await driver.until_linked(queued, within=1800)
    drained = max(driver.linked[i] for i in queued)
    await trickling
    await driver.until_linked(probes, within=300)
    return {
        "queued": count,
        "drain_seconds": drained - restarted,
        "drain_per_second": count / (drained - restarted),
        "new_bookings_during_drain_ms": percentiles(
            [driver.linked[i] - driver.sent[i] for i in probes]
        ),
    }


async def ensure_free(driver: Driver, bookings: int) -> None:
    """Enough open lines for ``bookings`` more bookings, bought (through Kafka) before timing."""
    free = sum(left for _, left in driver.free)
    if free < bookings:
        await driver.buy((bookings - free) // SESSIONS + 1)
        await wait_for_lines(driver, len(driver.free) * SESSIONS)


async def profile(system: System, seconds: float) -> dict[str, list[tuple[str, float]]]:
    """py-spy on every service for ``seconds``: each one's functions by share of samples spent
    in them (self time)."""
    py_spy = Path(sys.executable).parent / "py-spy"
    out = system.config.out / "profiles"
    out.mkdir(exist_ok=True)
    runs = {}
    for name, process in system.processes.items():
        assert process.process is not None
        runs[name] = await asyncio.create_subprocess_exec(
            str(py_spy),
            "record",
            "--format",
            "raw",
            "--duration",
            str(int(seconds)),
            "--rate",
            "200",
            "--nonblocking",
            "--pid",
            str(process.process.pid),
            "--output",
            str(out / f"{name}.txt"),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
    tops: dict[str, list[tuple[str, float]]] = {}
    for name, run in runs.items():
        await run.wait()
        counts: dict[str, int] = {}
        path = out / f"{name}.txt"
        for line in path.read_text().splitlines() if path.exists() else []:
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue  # a frame name that spans lines (py-spy prints some docstrings)
            leaf = stack.rsplit(";", 1)[-1]
            counts[leaf] = counts.get(leaf, 0) + int(count)
        total = sum(counts.values()) or 1
        top = sorted(counts.items(), key=lambda item: -item[1])[:8]
        tops[name] = [(frame, n / total) for frame, n in top]
    return tops


async def wait_for_lines(driver: Driver, lines: int) -> None:
    """Until invoicing holds ``lines`` lines (purchases go through Kafka like any other)."""
    while True:
        if await driver.lines_in_databases() >= lines:
            return
        await asyncio.sleep(1)


class Phases:
    """Says which phase runs, how far the benchmark is and for how long it has run."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.started = total, 0, time.monotonic()

    def __call__(self, what: str) -> None:
        self.done += 1
        elapsed = time.monotonic() - self.started
        print(f"[bench {elapsed:5.0f} s] phase {self.done}/{self.total}: {what}", flush=True)


async def main(config: Config) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:8]
    results: dict[str, Any] = {"started": datetime.now(UTC).isoformat(), "quick": config.quick}
    phase = Phases(5 + len(config.rates) + 2 * len(config.line_steps))
    phase("baselines")
    results["baseline_kafka"] = await kafka_baseline(config, run_id)
    results["baseline_postgres"] = await postgres_baseline(config, run_id)
    phase("starting the system")
    system = await start_system(config, run_id)
    driver = Driver(system)
    await driver.start()
    try:
        await driver.clinic()
        await asyncio.sleep(3)  # the directory has keys of its own; let it settle first
        first = config.line_steps[0]
        await driver.buy(first // SESSIONS)
        await wait_for_lines(driver, first)
        results["fixed_rates"] = []
        for rate in config.rates:
            phase(f"fixed rate {rate}/s")
            await ensure_free(driver, int(rate * config.rate_seconds))
            results["fixed_rates"].append(await fixed_rate(driver, rate, config.rate_seconds))
        phase("highest rate, one matcher")
        await ensure_free(driver, 2 * config.max_bookings)
        if config.profile:
            profiling = asyncio.create_task(profile(system, 15))
        results["max_one_matcher"] = await max_rate(driver, config.max_bookings)
        if config.profile:
            results["profile"] = await profiling
        second = Process("matcher#2", system.processes["matcher"].env, 18084)
        await second.start()
        system.processes["matcher#2"] = second
        phase("highest rate, two matchers")
        results["max_two_matchers"] = await max_rate(driver, config.max_bookings)
        await second.stop()
        del system.processes["matcher#2"]
        results["scaling"] = []
        for lines in config.line_steps:
            have = await driver.lines_in_databases()
            if lines > have:
                phase(f"buying packages up to {lines} lines")
                await driver.buy((lines - have) // SESSIONS)
                await wait_for_lines(driver, lines)
            phase(f"cost at {lines} lines")
            await ensure_free(driver, int(200 * config.rate_seconds))
            step = await fixed_rate(driver, 200, config.rate_seconds)
            results["scaling"].append(
                {
                    "lines": await driver.lines_in_databases(),
                    "cpu_ms_per_booking": step["cpu_ms_per_booking"],
                    "to_link_ms": step["to_link_ms"],
                }
            )
        phase(f"backlog of {config.backlog}")
        await ensure_free(driver, config.backlog + 2_000)
        results["backlog"] = await backlog(driver, config.backlog)
    finally:
        await driver.stop()
        await drop_system(system)
    return results


# --- reporting ------------------------------------------------------------------------------


def report(results: dict[str, Any]) -> str:
    kafka = results["baseline_kafka"]["per_second"]
    pg = results["baseline_postgres"]["commits_per_second"]
    one, two = results["max_one_matcher"], results["max_two_matchers"]
    lines = [
        f"# Packline benchmark ({'quick' if results['quick'] else 'full'}, {results['started']})",
        "",
        "| baseline (same run) | rate |",
        "|---|---|",
        f"| raw aiokafka consume -> produce | {kafka:,.0f} msg/s |",
        f"| raw asyncpg insert + commit | {pg:,.0f} commits/s |",
        "| raw asyncpg, 500 rows per commit | "
        f"{results['baseline_postgres']['rows_per_second_in_batches_of_500']:,.0f} rows/s |",
        "",
        "| fixed rate | bookings | to LineLinked p50 / p95 / p99 | to package note p50 / p95 / "
        "p99 | CPU per booking |",
        "|---|---|---|---|---|",
    ]
    for r in results["fixed_rates"]:
        link, note = r["to_link_ms"], r["to_note_ms"]
        lines.append(
            f"| {r['rate']}/s | {r['bookings']} | {link['p50']:.0f} / {link['p95']:.0f} /"
            f" {link['p99']:.0f} ms | {note['p50']:.0f} / {note['p95']:.0f} / {note['p99']:.0f} ms"
            f" | {r['cpu_ms_per_booking']:.1f} ms |"
        )
    lines += [
        "",
        "| highest rate | linked/s | calendar booked/s | matcher link commands/s |"
        " invoicing linked/s | share of the Kafka baseline | CPU per booking |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in (("one matcher", one), ("two matchers", two)):
        stages = r["stage_per_second"]
        lines.append(
            f"| {name} ({r['bookings']} bookings) | {r['linked_per_second']:,.0f} |"
            f" {stages['booked']:,.0f} | {stages['link command']:,.0f} | {stages['linked']:,.0f}"
            f" | {r['linked_per_second'] / kafka:.1%} | {r['cpu_ms_per_booking']:.1f} ms |"
        )
    lines += ["", "| cores busy during the highest rate | one matcher | two matchers |"]
    lines.append("|---|---|---|")
    for name in two["cores_busy"]:  # the two-matcher run has every row
        label = f"whole machine ({one['cores']} cores)" if name == "machine" else name
        busy = [r["cores_busy"].get(name, 0.0) for r in (one, two)]
        lines.append(f"| {label} | {busy[0]:.2f} | {busy[1]:.2f} |")
    lines += ["", "| lines in the databases | CPU per booking | to LineLinked p50 / p99 at 200/s |"]
    lines.append("|---|---|---|")
    for s in results["scaling"]:
        lines.append(
            f"| {s['lines']:,} | {s['cpu_ms_per_booking']:.1f} ms |"
            f" {s['to_link_ms']['p50']:.0f} / {s['to_link_ms']['p99']:.0f} ms |"
        )
    b = results["backlog"]
    new = b["new_bookings_during_drain_ms"]
    lines += [
        "",
        "| backlog (matcher stopped) | value |",
        "|---|---|",
        f"| bookings queued | {b['queued']:,} |",
        f"| drain after restart | {b['drain_seconds']:.1f} s ({b['drain_per_second']:,.0f}/s) |",
        f"| new bookings during the drain, to LineLinked p50 / p99 | {new['p50']:.0f} /"
        f" {new['p99']:.0f} ms |",
    ]
    for service, top in results.get("profile", {}).items():
        lines += ["", f"| {service}: where the CPU goes (py-spy, self time) | share |", "|---|---|"]
        lines += [f"| `{frame}` | {share:.0%} |" for frame, share in top]
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(10, 5))
    for r in results["fixed_rates"]:
        series = r["series"]
        if not series:
            continue
        t0 = series[0][0]
        axes.plot(
            [t - t0 for t, _ in series],
            [latency * 1000 for _, latency in series],
            ".",
            markersize=2,
            label=f"{r['rate']}/s",
        )
    axes.set_xlabel("seconds into the run at that rate")
    axes.set_ylabel("booking -> LineLinked (ms)")
    axes.set_yscale("log")
    axes.set_title("Packline: latency over time at fixed booking rates")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke version")
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument("--bookings", type=int, help="bookings of each highest-rate run")
    parser.add_argument("--seconds", type=float, help="length of each fixed-rate run")
    parser.add_argument("--lines", help="package lines in the databases, e.g. 10000,100000")
    parser.add_argument("--backlog", type=int, help="bookings queued while the matcher stops")
    parser.add_argument(
        "--profile", action="store_true", help="py-spy every service during the highest rate"
    )
    args = parser.parse_args()
    out = args.out / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out.mkdir(parents=True, exist_ok=True)
    config = Config(
        kafka=os.environ.get("PACKLINE_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        admin_url=os.environ["PACKLINE_BENCH_DATABASE_URL"],
        quick=args.quick,
        out=out,
    )
    if args.bookings:
        config.max_bookings = args.bookings
    if args.seconds:
        config.rate_seconds = args.seconds
    if args.lines:
        config.line_steps = tuple(int(n) for n in args.lines.split(","))
    if args.backlog:
        config.backlog = args.backlog
    config.profile = args.profile
    results = asyncio.run(main(config))
    table = report(results)
    for r in results["fixed_rates"]:
        r["series"] = [[round(t, 3), round(latency, 4)] for t, latency in r["series"]]
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "results.md").write_text(table)
    plot(results, out / "latency.png")
    print(table)
    print(f"results in {out}/ (results.md, results.json, latency.png)")


if __name__ == "__main__":
    cli()
