"""The system under test: the three services as processes, on topics and databases of the run's
own, and the run's settings."""

from __future__ import annotations

import asyncio
import ctypes
import os
import secrets
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka.admin import AIOKafkaAdminClient
from packline_core.topics import create_topics

SERVICES = ("calendar", "invoicing", "matcher")


@dataclass
class Config:
    kafka: str
    admin_url: str
    quick: bool
    out: Path
    warmup_seconds: float = 10  # at warmup_rate, before anything is measured
    warmup_rate: int = 100
    idle_bookings: int = 60  # one a second
    sweep_start: int = 50  # bookings/s; each step doubles the rate
    sweep_max: int = 6400
    sweep_seconds: float = 12  # each step's length
    sweep_bisect: int = 2  # extra steps between the knee and the first rate above it
    knee_ms: float = 250  # the knee: highest rate whose p99 to the package note stays under this
    sustained_ms: float = 1000  # the highest sustained rate: p99 under this
    kind_rate: int = 100  # messages/s of each kind in the lines-per-patient and total-lines steps
    kind_patients: int = 50  # patients of each step; each books 5 and buys 2
    per_patient: Sequence[int] = (5, 20, 100, 1000)
    line_steps: Sequence[int] = (10_000, 100_000, 1_000_000)
    fill_seconds: float = 360  # the most all total-lines fills may take together
    backlog: int = 30_000
    partitions: int = 12  # of every topic the run creates (the deployment's default)
    profile: bool = False
    kafka_baseline_records: int = 50_000
    postgres_baseline_seconds: float = 4
    note_poll_seconds: float = 0.005
    # The longest a step waits for the system to go quiet after its last result (a stuck
    # consumer fails the run with the records it is behind, instead of hanging it).
    quiet_seconds: float = 600

    def __post_init__(self) -> None:
        if self.quick:
            self.warmup_seconds, self.idle_bookings = 1, 3
            self.sweep_start, self.sweep_max, self.sweep_seconds, self.sweep_bisect = 50, 50, 2, 0
            self.kind_patients, self.per_patient, self.line_steps = 6, (5, 100), (2_000,)
            self.fill_seconds, self.backlog = 60, 300
            self.kafka_baseline_records, self.postgres_baseline_seconds = 2_000, 0.5
            self.quiet_seconds = 120


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
            preexec_fn=_die_with_parent,
        )
        async with httpx.AsyncClient() as client:
            for _ in range(600):
                try:
                    if (await client.get(f"http://127.0.0.1:{self.port}/health/ready")).is_success:
                        return
                except httpx.TransportError:
                    pass
                if self.process.returncode is not None:
                    break
                await asyncio.sleep(0.2)  # polling readiness, bounded by the loop
        raise RuntimeError(f"{self.name} did not start (see {self.log_file().name})")

    def log_file(self) -> Any:
        return Path(self.env["BENCH_LOG_DIR"], f"{self.name}-{self.port}.log").open("ab")

    async def stop(self) -> None:
        if self.process and self.process.returncode is None:
            self.process.terminate()
            await asyncio.wait_for(self.process.wait(), timeout=60)

    @property
    def pid(self) -> int | None:
        if not self.process or self.process.returncode is not None:
            return None
        return self.process.pid


def _die_with_parent() -> None:
    """In the child, before it runs the service: Linux sends it SIGTERM when the benchmark dies
    (killed by a timeout, say), so no service outlives the run."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class System:
    config: Config
    prefix: str
    urls: dict[str, str]
    processes: dict[str, Process] = field(default_factory=dict)

    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.processes.items() if p.pid is not None}


async def start_system(config: Config, run_id: str) -> System:
    prefix = f"bench-{run_id}."
    await create_topics(config.kafka, partitions=config.partitions, prefix=prefix)
    base = config.admin_url.rsplit("/", 1)[0]
    conn = await asyncpg.connect(config.admin_url)
    urls = {}
    for name in SERVICES:
        database = f"bench_{run_id}_{name}"
        await conn.execute(f'CREATE DATABASE "{database}"')
        urls[name] = f"{base}/{database}"
    await conn.close()
    log_dir = config.out / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    system = System(config, prefix, urls)
    token = secrets.token_hex(32)  # the services refuse short or well-known static tokens
    for port, name in zip((18081, 18082, 18083), SERVICES, strict=True):
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
        try:
            await system.processes[name].start()
        except BaseException:
            await drop_system(system)  # what started so far: processes, databases, topics
            raise
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
