"""The short fault suite: a steady workload runs while services are SIGKILLed and restarted, the
broker and the database restart, and a service is frozen past its session timeout. Afterwards
nothing is lost, nothing is applied twice, and the three services agree (I1-I5).

Longer soak, by hand: PACKLINE_FAULT_PATIENTS=1000 PACKLINE_FAULT_ROUNDS=5 deploy/packline test
tests/e2e/test_faults.py -s (prints the table)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from packline_contracts.appointments import BookAppointment
from packline_contracts.client import PacklineProducer
from packline_contracts.ids import derived_id
from packline_contracts.invoices import IssuePackageInvoice, PurchaseChannel
from packline_contracts.topics import dead_letter_topic
from packline_contracts.types import BookingSource
from packline_core import deadletters
from packline_core.reconcile import reconcile

from tests.clinic import DR_A, DR_B, MASSAGE_60, NORTHSIDE, SETUP, days_ahead, fee_commands, package
from tests.conftest import CreateDatabase, Infrastructure
from tests.e2e.packline_processes import free_port
from tests.helpers import eventually

pytestmark = [
    pytest.mark.infra,
    pytest.mark.skipif(
        "PACKLINE_TEST_KAFKA_BOOTSTRAP" not in os.environ,
        reason="restarts the broker and the database with deploy/ scripts (not testcontainers)",
    ),
]

ROOT = Path(__file__).resolve().parents[2]
PATIENTS = int(os.environ.get("PACKLINE_FAULT_PATIENTS", "40"))
ROUNDS = int(os.environ.get("PACKLINE_FAULT_ROUNDS", "1"))


class Service:
    def __init__(self, name: str, env: dict[str, str]) -> None:
        self.name, self.env, self.port = name, env, free_port()
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            f"packline_{self.name}.main",
            "serve",
            env={**self.env, "PACKLINE_HTTP_PORT": str(self.port)},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )

        async def ready() -> bool:
            try:
                async with httpx.AsyncClient() as client:
                    answer = await client.get(f"http://127.0.0.1:{self.port}/health/live")
                return answer.status_code == 200
            except httpx.TransportError:
                return False

        await eventually(ready, within=90, interval=0.3, what=f"{self.name} to start")

    async def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            await self.process.wait()


async def script(*args: str, check: bool = True) -> int:
    """Run one of the deploy/ scripts (start / stop Kafka or PostgreSQL)."""
    process = await asyncio.create_subprocess_exec(
        str(ROOT / args[0]),
        *args[1:],
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    code = await asyncio.wait_for(process.wait(), timeout=180)
    assert code == 0 or not check, f"{args} failed"
    return code


async def send_all(producer: PacklineProducer, messages: list[Any]) -> None:
    """Publish, retrying while the broker is away: an operation is issued once acknowledged."""
    for message in messages:
        for attempt in range(120):
            try:
                await producer.send(message, message_id=derived_id("fault-op", repr(message)))
                break
            except Exception:
                await asyncio.sleep(min(0.5 * (attempt + 1), 3))
        else:
            raise AssertionError(f"could not publish {message!r}")


def workload() -> list[list[Any]]:
    """Per round: every patient buys a package of 2 and books 3 appointments (2 get linked)."""
    rounds: list[list[Any]] = [[] for _ in range(4)]
    issued_at = datetime.now(UTC)
    for round_number in range(ROUNDS):
        for n in range(PATIENTS):
            who = f"fault-{round_number}-{n}"
            part = rounds[n % 4]
            part.append(
                IssuePackageInvoice(
                    patient_id=who,
                    invoice_id=derived_id("fault", who),
                    package_id="pair",
                    channel=PurchaseChannel.ONLINE,
                    issued_by="shop",
                    issued_at=issued_at,
                )
            )
            for k in range(3):
                slot = (round_number * PATIENTS + n) * 3 + k
                part.append(
                    BookAppointment(
                        patient_id=who,
                        appointment_id=derived_id("fault", who, k),
                        practitioner_id=DR_A if slot % 2 else DR_B,
                        location_id=NORTHSIDE,
                        starts_at=days_ahead(2 + slot // 40, hour=7).replace(minute=0)
                        + (slot % 40 // 2) * (days_ahead(0, 1) - days_ahead(0, 0)) / 4,
                        duration_minutes=15,
                        fee_ids=[MASSAGE_60],
                        source=BookingSource.ONLINE,
                        booked_by="online",
                    )
                )
    return rounds


@pytest.mark.timeout(900)
async def test_nothing_is_lost_or_applied_twice_under_faults(
    infrastructure: Infrastructure, topic_prefix: str, create_database: CreateDatabase
) -> None:
    env = {
        **os.environ,
        "PACKLINE_KAFKA_BOOTSTRAP_SERVERS": infrastructure.kafka_bootstrap,
        "PACKLINE_TOPIC_PREFIX": topic_prefix,
        "PACKLINE_OUTBOX_POLL_SECONDS": "0.5",
        "PACKLINE_LOG_LEVEL": "WARNING",
    }
    urls = {}
    services = {}
    for name in ("calendar", "invoicing", "matcher"):
        services[name] = Service(
            name, {**env, "PACKLINE_DATABASE_URL": await create_database(name)}
        )
        urls[name] = services[name].env["PACKLINE_DATABASE_URL"]
    services["invoicing"].env["PACKLINE_CALENDAR_URL"] = (
        f"http://127.0.0.1:{services['calendar'].port}"
    )
    recovery: dict[str, float] = {}
    try:
        for service in services.values():
            await service.start()
        async with PacklineProducer(
            infrastructure.kafka_bootstrap, producer="faults", topic_prefix=topic_prefix
        ) as producer:
            await send_all(producer, [*SETUP[:4], *fee_commands(), package("pair", count=2)])
            invoicing_db = await asyncpg.connect(urls["invoicing"])
            await eventually(
                lambda: _fetch(invoicing_db, "SELECT count(*) FROM packages"), what="the package"
            )
            await invoicing_db.close()
            calendar_db = await asyncpg.connect(urls["calendar"])
            # The directory and the fees have keys of their own, not the patients': wait for
            # them, or the first bookings would be refused for an unknown practitioner.
            await eventually(
                lambda: _fetch(
                    calendar_db,
                    "SELECT (SELECT count(*) FROM fees) = 2"
                    " AND (SELECT count(*) FROM practitioners) = 2"
                    " AND (SELECT count(*) FROM locations) = 2",
                ),
                what="the calendar's directory and fees",
            )
            await calendar_db.close()
            rounds = workload()

            await send_all(producer, rounds[0])
            started = time.monotonic()
            await services["matcher"].kill()
            await services["matcher"].start()
            recovery["SIGKILL matcher"] = time.monotonic() - started

            await send_all(producer, rounds[1][: len(rounds[1]) // 2])
            started = time.monotonic()
            await script("deploy/kafka/kafka.sh", "stop")
            await script("deploy/kafka/kafka.sh", "start")
            await send_all(producer, rounds[1][len(rounds[1]) // 2 :])
            recovery["restart Kafka"] = time.monotonic() - started

            await send_all(producer, rounds[2])
            started = time.monotonic()
            await script("deploy/postgres/postgres.sh", "stop")
            await script("deploy/postgres/postgres.sh", "start")
            recovery["restart PostgreSQL"] = time.monotonic() - started

            calendar = services["calendar"].process
            assert calendar is not None
            calendar.send_signal(signal.SIGSTOP)  # frozen past the 10 s session timeout
            await send_all(producer, rounds[3])
            await asyncio.sleep(12)  # the fault itself lasts this long; nothing waits on it
            calendar.send_signal(signal.SIGCONT)
            started = time.monotonic()
            await services["invoicing"].kill()
            await services["invoicing"].start()
            recovery["SIGSTOP calendar 12 s, SIGKILL invoicing"] = time.monotonic() - started

        operations = sum(len(part) for part in rounds)
        expected_links = PATIENTS * ROUNDS * 2
        expected_appointments = PATIENTS * ROUNDS * 3
        dbs = {name: await asyncpg.connect(url) for name, url in urls.items()}
        started = time.monotonic()

        async def quiet() -> bool:
            linked = await dbs["invoicing"].fetchval(
                "SELECT count(*) FROM invoice_lines WHERE status = 'linked'"
            )
            booked = await dbs["calendar"].fetchval("SELECT count(*) FROM appointments")
            return bool(linked == expected_links and booked == expected_appointments)

        await eventually(quiet, within=300, interval=1, what="the workload to be applied")
        recovery["drain after the last fault"] = time.monotonic() - started
        clients = {
            name: httpx.AsyncClient(base_url=f"http://127.0.0.1:{s.port}", timeout=30)
            for name, s in services.items()
        }
        result = None

        async def agreed() -> bool:
            nonlocal result
            result = await reconcile(clients)
            return result.agreed

        await eventually(agreed, within=60, interval=1, what="the services to agree")
        for client in clients.values():
            await client.aclose()
        invoices = await dbs["invoicing"].fetchval("SELECT count(*) FROM package_invoices")
        per_patient = await dbs["invoicing"].fetch(
            "SELECT patient_id, count(*) FILTER (WHERE status = 'linked') AS linked"
            " FROM invoice_lines GROUP BY patient_id"
        )
        duplicates = await dbs["calendar"].fetchval(
            "SELECT count(*) - count(DISTINCT appointment_id) FROM appointments"
        )
        booked = await dbs["calendar"].fetchval(
            "SELECT count(DISTINCT appointment_id) FROM appointments"
        )
        dead = 0
        for name in services:
            dead += len(
                await deadletters.read_all(
                    infrastructure.kafka_bootstrap, topic_prefix + dead_letter_topic(name).name
                )
            )
        for db in dbs.values():
            await db.close()
        lost = (PATIENTS * ROUNDS - invoices) + (expected_appointments - booked)
        table = [
            "| measure | value |",
            "|---|---|",
            f"| operations issued and acknowledged | {operations} |",
            f"| package invoices applied | {invoices} |",
            f"| links (expected {expected_links}) | {sum(r['linked'] for r in per_patient)} |",
            f"| lost | {lost} |",
            f"| duplicate effects | {duplicates + sum(r['linked'] != 2 for r in per_patient)} |",
            f"| disagreements between services | {len(result.disagreements) if result else '?'} |",
            f"| dead letters | {dead} |",
            *[f"| recovery: {fault} | {seconds:.1f} s |" for fault, seconds in recovery.items()],
        ]
        print("\n" + "\n".join(table))
        assert invoices == PATIENTS * ROUNDS
        assert all(r["linked"] == 2 for r in per_patient)
        assert duplicates == 0 and dead == 0
    finally:
        for service in services.values():
            await service.stop()
        if await script("deploy/kafka/kafka.sh", "status", check=False) != 0:
            await script("deploy/kafka/kafka.sh", "start")
        await script("deploy/postgres/postgres.sh", "start")


async def _fetch(conn: asyncpg.Connection, query: str) -> Any:
    return await conn.fetchval(query)
