"""The fault suite: a mixed clinic workload runs while faults hit at random moments, again and
again; afterwards nothing is lost, nothing is applied twice, and the three services agree.

Workload (patients start at a steady pace, each runs its own script concurrently):
purchases, bookings online and by staff in the calendar, bookings from the invoice (HTTP),
reschedules, cancellations, unlinks from the invoice (HTTP, R8) and voids.

Faults, each once per round, in a shuffled order, at random moments (the seed is printed):
SIGKILL of each service and its restart; the relay killed between publish and mark-sent; a Kafka
restart; a PostgreSQL restart; a service frozen with SIGSTOP past its session timeout (its
partitions move), then resumed; a service's consumer groups rewound to replay everything.
Recovery time is from the fault until a probe sent after it has reached all three services.

At the end: every acknowledged operation's effect is in the databases (lost = 0), no effect is
there twice (duplicates = 0), every patient has exactly the links the rules give, reconciliation
finds no disagreement (I3), and no dead letters.

With the authorizer on (R17): each service connects as its own SCRAM principal
(``packline-<service>``) to the broker's SASL_SSL listener, which enforces the registry's ACLs,
applied for this test's topics by ``packline-admin acls --apply``'s code; before the workload a
write outside a principal's job is checked to be refused. The test's own producer, its rewinds
and its dead-letter reads use the development listener's super user.

CI runs one round with 40 patients; the soak is ``deploy/packline faults PATIENTS ROUNDS``.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, TopicAuthorizationFailedError
from packline_contracts.appointments import (
    BookAppointment,
    CancelAppointment,
    RescheduleAppointment,
)
from packline_contracts.client import PacklineProducer
from packline_contracts.envelope import Message
from packline_contracts.ids import derived_id
from packline_contracts.invoices import IssuePackageInvoice, PurchaseChannel, VoidPackageInvoice
from packline_contracts.topics import INVOICING_LINKS, dead_letter_topic
from packline_contracts.types import BookingSource
from packline_core import deadletters
from packline_core.acls import acls, apply_acls, user_name
from packline_core.kafka import KafkaSettings, client_options
from packline_core.reconcile import reconcile
from packline_core.rewind import GroupNotEmpty, rewind_service

from tests.clinic import DR_A, DR_B, MASSAGE_60, NORTHSIDE, SETUP, days_ahead, fee_commands, package
from tests.conftest import CreateDatabase, Infrastructure
from tests.e2e.packline_processes import free_port, service_log
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
SEED = int(os.environ.get("PACKLINE_FAULT_SEED", str(random.randrange(1_000_000))))
NAMES = ("calendar", "invoicing", "matcher")


def principal_settings(name: str) -> dict[str, str]:
    """The environment of a service connecting as its own principal to the SASL_SSL listener
    (local password ``<user>-dev-secret``, made by deploy/kafka/kafka.sh start)."""
    bootstrap = os.environ.get("PACKLINE_TEST_KAFKA_SASL_BOOTSTRAP")
    ca_file = os.environ.get("PACKLINE_TEST_TLS_CA")
    if not bootstrap or not ca_file:
        pytest.fail(
            "the fault suite runs the services under their own Kafka principals: it needs the "
            "broker's SASL_SSL listener and the local CA (PACKLINE_TEST_KAFKA_SASL_BOOTSTRAP, "
            "PACKLINE_TEST_TLS_CA; 'deploy/packline test' sets them)",
            pytrace=False,
        )
    user = user_name(name)
    return {
        "PACKLINE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "PACKLINE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "PACKLINE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
        "PACKLINE_KAFKA_SASL_USERNAME": user,
        "PACKLINE_KAFKA_SASL_PASSWORD": f"{user}-dev-secret",
        "PACKLINE_KAFKA_SSL_CA_FILE": ca_file,
    }


async def refused_outside_its_job(prefix: str) -> str:
    """The authorizer enforces the ACLs for this test's topics: the calendar's principal may not
    write the matcher's links. Returns what was refused, for the table."""
    settings = KafkaSettings.model_validate(
        {k.removeprefix("PACKLINE_").lower(): v for k, v in principal_settings("calendar").items()}
    )
    producer = AIOKafkaProducer(**client_options(settings), request_timeout_ms=15_000)
    await producer.start()
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            await asyncio.wait_for(
                producer.send_and_wait(prefix + INVOICING_LINKS.name, b"{}", key=b"x"), 30
            )
    finally:
        await producer.stop()
    return f"{user_name('calendar')} writing {INVOICING_LINKS.name}"


class Service:
    """One service as a real process on a fixed port, so it can be killed and started again."""

    def __init__(self, name: str, env: dict[str, str], crash_file: Path) -> None:
        self.name, self.port, self.crash_file = name, free_port(), crash_file
        self.env = {**env, "PACKLINE_DRILL_RELAY_CRASH_FILE": str(crash_file)}
        self.process: asyncio.subprocess.Process | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        # Each start's own log (warnings and errors), added to the report when the test fails.
        log = service_log(self.name)
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            f"packline_{self.name}.main",
            "serve",
            env={**self.env, "PACKLINE_HTTP_PORT": str(self.port)},
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
        log.close()

        async def live() -> bool:
            try:
                async with httpx.AsyncClient() as client:
                    return (await client.get(f"{self.url}/health/live")).status_code == 200
            except httpx.TransportError:
                return False

        await eventually(live, within=90, interval=0.3, what=f"{self.name} to start")

    async def signal(self, number: int) -> None:
        assert self.process is not None
        self.process.send_signal(number)

    async def kill(self) -> None:
        await self.signal(signal.SIGKILL)
        assert self.process is not None
        await self.process.wait()

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            await asyncio.wait_for(self.process.wait(), timeout=60)


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


# --- the workload ---------------------------------------------------------------------------


@dataclass
class Tally:
    issued: int = 0
    acknowledged: int = 0
    # How to see each acknowledged operation's effect in the end state: (database, query, args).
    effects: list[tuple[str, str, tuple[Any, ...]]] = field(default_factory=list)
    expected_links: dict[str, int] = field(default_factory=dict)
    expected_appointments: dict[str, int] = field(default_factory=dict)
    voided: set[str] = field(default_factory=set)


class Clinic:
    """Issues the workload: Kafka commands through the contracts' client, staff screens over HTTP;
    every operation is retried until acknowledged, as a real front end would."""

    def __init__(self, producer: PacklineProducer, invoicing: Service) -> None:
        self.producer, self.invoicing, self.tally = producer, invoicing, Tally()
        self.slots = iter(range(1_000_000))
        self.http = httpx.AsyncClient(base_url=invoicing.url, timeout=10)

    def slot(self) -> tuple[str, datetime]:
        """A practitioner and a start no other appointment of the run uses: 5-minute
        appointments every 10 minutes, so the 5 minutes after each slot are free to move to."""
        n = next(self.slots)
        starts = days_ahead(2 + n // 288, hour=0) + timedelta(minutes=10 * (n % 288 // 2))
        return (DR_A if n % 2 else DR_B), starts

    async def send(self, message: Message, effect: tuple[str, str, tuple[Any, ...]]) -> None:
        self.tally.issued += 1
        deadline, attempt = time.monotonic() + 240, 0
        while True:
            try:
                await self.producer.send(message, message_id=derived_id("fault-op", repr(message)))
                break
            except Exception as error:  # the broker is restarting: try again, as any producer would
                attempt += 1
                assert time.monotonic() < deadline, f"could not publish {message!r}: {error!r}"
                await asyncio.sleep(min(0.5 * attempt, 3))
        self.tally.acknowledged += 1
        self.tally.effects.append(effect)

    async def staff(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A staff screen's request, retried through restarts until the service answers."""
        deadline = time.monotonic() + 240
        while True:
            try:
                answer = await self.http.request(method, path, **kwargs)
                if answer.status_code < 500:
                    return answer
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"{method} {path} never answered"
            await asyncio.sleep(0.5)

    async def buy(self, who: str) -> UUID:
        invoice_id = derived_id("fault-invoice", who)
        await self.send(
            IssuePackageInvoice(
                patient_id=who,
                invoice_id=invoice_id,
                package_id="pair",
                channel=PurchaseChannel.ONLINE,
                issued_by="shop",
                issued_at=datetime.now(UTC),
            ),
            ("invoicing", "SELECT 1 FROM package_invoices WHERE invoice_id = $1", (invoice_id,)),
        )
        return invoice_id

    async def book(self, who: str, k: int, source: BookingSource) -> tuple[UUID, datetime]:
        appointment_id = derived_id("fault-appointment", who, k)
        practitioner, starts = self.slot()
        await self.send(
            BookAppointment(
                patient_id=who,
                appointment_id=appointment_id,
                practitioner_id=practitioner,
                location_id=NORTHSIDE,
                starts_at=starts,
                duration_minutes=5,
                fee_ids=[MASSAGE_60],
                source=source,
                booked_by="online" if source == BookingSource.ONLINE else "reception",
            ),
            ("calendar", "SELECT 1 FROM appointments WHERE appointment_id = $1", (appointment_id,)),
        )
        return appointment_id, starts

    async def run(self, n: int) -> None:
        who = f"fault-{SEED}-{n}"
        kind = n % 5
        tally = self.tally
        invoice_id = await self.buy(who)
        if kind == 0:  # online: three bookings, two sessions
            for k in range(3):
                await self.book(who, k, BookingSource.ONLINE)
            tally.expected_links[who], tally.expected_appointments[who] = 2, 3
        elif kind == 1:  # staff book two in the calendar, then cancel one: its session returns
            first, _ = await self.book(who, 0, BookingSource.STAFF)
            await self.book(who, 1, BookingSource.STAFF)
            await self.send(
                CancelAppointment(
                    patient_id=who,
                    appointment_id=first,
                    cancelled_by="reception",
                    cancelled_at=datetime.now(UTC),
                ),
                (
                    "calendar",
                    "SELECT 1 FROM appointments WHERE appointment_id = $1 AND status = 'cancelled'",
                    (first,),
                ),
            )
            tally.expected_links[who], tally.expected_appointments[who] = 1, 2
        elif kind == 2:  # book two, move one: it keeps its link (R10)
            await self.book(who, 0, BookingSource.ONLINE)
            moved, starts = await self.book(who, 1, BookingSource.STAFF)
            new_start = starts + timedelta(minutes=5)  # the free minutes after its slot
            await self.send(
                RescheduleAppointment(
                    patient_id=who,
                    appointment_id=moved,
                    starts_at=new_start,
                    requested_by="reception",
                ),
                (
                    "calendar",
                    "SELECT 1 FROM appointments WHERE appointment_id = $1 AND starts_at = $2",
                    (moved, new_start),
                ),
            )
            tally.expected_links[who], tally.expected_appointments[who] = 2, 2
        elif kind == 3:  # book two, then the invoice is voided: both stay booked, unlinked
            await self.book(who, 0, BookingSource.ONLINE)
            await self.book(who, 1, BookingSource.STAFF)
            await self.send(
                VoidPackageInvoice(
                    patient_id=who, invoice_id=invoice_id, voided_by="manager", reason="mistake"
                ),
                (
                    "invoicing",
                    "SELECT 1 FROM package_invoices WHERE invoice_id = $1 AND status = 'void'",
                    (invoice_id,),
                ),
            )
            tally.voided.add(who)
            tally.expected_links[who], tally.expected_appointments[who] = 0, 2
        else:  # from the invoice: book both lines (R3), then unlink the first (R8)
            await self.from_the_invoice(who, invoice_id)
            tally.expected_links[who], tally.expected_appointments[who] = 1, 2

    async def from_the_invoice(self, who: str, invoice_id: UUID) -> None:
        tally = self.tally

        async def invoice() -> dict[str, Any] | None:
            answer = await self.staff("GET", f"/invoices/{invoice_id}")
            return answer.json() if answer.status_code == 200 else None

        lines = (await eventually(invoice, within=240, interval=0.5, what=f"{who}'s invoice"))[
            "lines"
        ]
        for line in lines:
            practitioner, starts = self.slot()
            tally.issued += 1
            answer = await self.staff(
                "PUT",
                f"/invoices/{invoice_id}/lines/{line['line_id']}/appointment",
                json={
                    "starts_at": starts.isoformat(),
                    "duration_minutes": 5,
                    "practitioner_id": practitioner,
                    "location_id": NORTHSIDE,
                    "booked_by": "reception",
                },
            )
            # 409: a retry after the first request was applied but its answer lost.
            assert answer.status_code in (202, 409), answer.text
            tally.acknowledged += 1
            tally.effects.append(
                (
                    "calendar",
                    "SELECT 1 FROM appointments WHERE line_id = $1 AND status = 'booked'",
                    (UUID(line["line_id"]),),
                )
            )
        first = lines[0]["line_id"]

        async def first_linked() -> bool:
            body = await invoice()
            return bool(body) and body["lines"][0]["status"] == "linked"  # type: ignore[index]

        await eventually(first_linked, within=240, interval=0.5, what=f"{who}'s first link")
        tally.issued += 1
        answer = await self.staff(
            "DELETE",
            f"/invoices/{invoice_id}/lines/{first}/appointment",
            params={"unassigned_by": "reception"},
        )
        assert answer.status_code in (200, 409), answer.text
        tally.acknowledged += 1
        tally.effects.append(
            (
                "invoicing",
                "SELECT 1 FROM invoice_lines WHERE line_id = $1 AND status = 'open'",
                (UUID(first),),
            )
        )


# --- the faults -----------------------------------------------------------------------------


class Faults:
    def __init__(
        self, services: dict[str, Service], kafka: str, prefix: str, rng: random.Random
    ) -> None:
        self.services, self.kafka, self.prefix, self.rng = services, kafka, prefix, rng
        self.recovery: list[tuple[str, float]] = []

    def schedule(self, round_number: int) -> list[tuple[str, Callable[[], Awaitable[None]]]]:
        rotating = NAMES[round_number % 3]
        faults: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            *((f"SIGKILL {name}", self._killer(name)) for name in NAMES),
            (f"relay killed between publish and mark-sent ({rotating})", self._relay(rotating)),
            ("Kafka restart", self._restart_kafka),
            ("PostgreSQL restart", self._restart_postgres),
            (f"SIGSTOP {rotating} 12 s (past the session timeout)", self._freezer(rotating)),
            (
                f"rewind {NAMES[(round_number + 2) % 3]}'s consumer groups",
                self._rewinder(NAMES[(round_number + 2) % 3]),
            ),
        ]
        self.rng.shuffle(faults)
        return faults

    async def run(self) -> None:
        for round_number in range(ROUNDS):
            schedule = self.schedule(round_number)
            for number, (name, inject) in enumerate(schedule, 1):
                await asyncio.sleep(self.rng.uniform(0.5, 4.0))  # a random moment
                started = time.monotonic()
                await inject()
                await self.probe_everywhere()
                self.recovery.append((name, time.monotonic() - started))
                progress(
                    f"round {round_number + 1}/{ROUNDS}, fault {number}/{len(schedule)}: {name},"
                    f" recovered in {time.monotonic() - started:.1f} s"
                )

    def _killer(self, name: str) -> Callable[[], Awaitable[None]]:
        async def fault() -> None:
            await self.services[name].kill()
            await self.services[name].start()

        return fault

    def _relay(self, name: str) -> Callable[[], Awaitable[None]]:
        async def fault() -> None:
            service = self.services[name]
            service.crash_file.touch()
            # The next batch the relay publishes kills it; a probe makes sure there is one.
            probing = asyncio.create_task(self.post_probe(service))
            assert service.process is not None
            await asyncio.wait_for(service.process.wait(), timeout=60)
            probing.cancel()
            assert service.process.returncode == -signal.SIGKILL
            assert not service.crash_file.exists()
            await service.start()

        return fault

    async def _restart_kafka(self) -> None:
        await script("deploy/kafka/kafka.sh", "stop")
        await script("deploy/kafka/kafka.sh", "start")

    async def _restart_postgres(self) -> None:
        await script("deploy/postgres/postgres.sh", "stop")
        await script("deploy/postgres/postgres.sh", "start")

    def _freezer(self, name: str) -> Callable[[], Awaitable[None]]:
        async def fault() -> None:
            await self.services[name].signal(signal.SIGSTOP)
            await asyncio.sleep(12)  # the fault itself lasts this long; nothing waits on it
            await self.services[name].signal(signal.SIGCONT)

        return fault

    def _rewinder(self, name: str) -> Callable[[], Awaitable[None]]:
        async def fault() -> None:
            await self.services[name].stop()  # Kafka moves only the offsets of an empty group
            for _ in range(30):
                try:
                    await rewind_service(self.kafka, name, self.prefix)
                    break
                except (GroupNotEmpty, KafkaError):  # not left yet, or the broker just restarted
                    await asyncio.sleep(1)
            else:
                raise AssertionError(f"{name}'s consumer groups never emptied")
            await self.services[name].start()

        return fault

    async def post_probe(self, service: Service) -> str:
        async with httpx.AsyncClient(base_url=service.url, timeout=10) as client:

            async def sent() -> str | None:
                try:
                    answer = await client.post("/ops/probes")
                except httpx.TransportError:
                    return None
                return str(answer.json()["probe_id"]) if answer.status_code == 202 else None

            return await eventually(sent, within=120, interval=0.5, what="a probe to be accepted")

    async def probe_everywhere(self) -> None:
        probe = await self.post_probe(self.services[self.rng.choice(NAMES)])

        async def everywhere() -> bool:
            async with httpx.AsyncClient(timeout=5) as client:
                for service in self.services.values():
                    try:
                        answer = await client.get(f"{service.url}/ops/probes/{probe}")
                    except httpx.TransportError:
                        return False
                    if answer.status_code != 200:
                        return False
            return True

        await eventually(everywhere, within=180, interval=0.3, what="the probe everywhere")


# --- the test -------------------------------------------------------------------------------


STARTED = [time.monotonic()]  # reset when the test starts


def progress(text: str) -> None:
    """What the soak is doing, as it goes (shown by 'deploy/packline faults', which runs -s)."""
    print(f"[faults {time.monotonic() - STARTED[0]:6.0f} s] {text}", flush=True)


@pytest.mark.timeout(1800)
async def test_nothing_is_lost_or_applied_twice_under_faults(
    infrastructure: Infrastructure,
    topic_prefix: str,
    create_database: CreateDatabase,
    tmp_path: Path,
) -> None:
    STARTED[0] = time.monotonic()
    print(f"\nfault suite: seed {SEED} (PACKLINE_FAULT_SEED={SEED} repeats this schedule)")
    rng = random.Random(SEED)
    env = {
        **os.environ,
        "PACKLINE_TOPIC_PREFIX": topic_prefix,
        "PACKLINE_OUTBOX_POLL_SECONDS": "0.5",
        "PACKLINE_LOG_LEVEL": "WARNING",
    }
    services: dict[str, Service] = {}
    urls: dict[str, str] = {}
    for name in NAMES:
        urls[name] = await create_database(name)
        services[name] = Service(
            name,
            {**env, **principal_settings(name), "PACKLINE_DATABASE_URL": urls[name]},
            tmp_path / f"{name}.crash",
        )
    services["invoicing"].env["PACKLINE_CALENDAR_URL"] = services["calendar"].url
    dbs: dict[str, asyncpg.Connection] = {}
    # The registry's ACLs for this test's topics and groups, as the Helm chart's Job makes them.
    super_user = KafkaSettings(kafka_bootstrap_servers=infrastructure.kafka_bootstrap)
    granted = acls(topic_prefix)
    await apply_acls(super_user, granted)
    try:
        refused = await refused_outside_its_job(topic_prefix)
        for service in services.values():
            await service.start()
        async with PacklineProducer(
            infrastructure.kafka_bootstrap, producer="faults", topic_prefix=topic_prefix
        ) as producer:
            clinic = Clinic(producer, services["invoicing"])
            for message in [*SETUP[:4], *fee_commands(), package("pair", count=2)]:
                await producer.send(message)
            await wait_for_catalogue(urls)
            faults = Faults(services, infrastructure.kafka_bootstrap, topic_prefix, rng)

            async def workload() -> None:
                patients = []
                total = PATIENTS * ROUNDS
                for n in range(total):
                    patients.append(asyncio.create_task(clinic.run(n)))
                    if (n + 1) % 20 == 0 or n + 1 == total:
                        progress(
                            f"patients started {n + 1}/{total},"
                            f" about {(total - n - 1) * 0.5:.0f} s of workload left"
                        )
                    await asyncio.sleep(0.5)  # a steady pace, so faults land mid-workload
                await asyncio.gather(*patients)
                progress("workload done; waiting for every effect and for the services to agree")

            await asyncio.gather(workload(), faults.run())
            await clinic.http.aclose()

        tally = clinic.tally
        dbs = {name: await asyncpg.connect(url) for name, url in urls.items()}

        missing: list[str] = []

        async def applied() -> int:
            missing.clear()
            for database, query, args in tally.effects:
                if not await dbs[database].fetchval(query, *args):
                    missing.append(f"{database}: {query} {args}")
            return len(tally.effects) - len(missing)

        async def links() -> Counter[str]:
            rows = await dbs["invoicing"].fetch(
                "SELECT patient_id, count(*) FILTER (WHERE status = 'linked') AS linked"
                " FROM invoice_lines GROUP BY patient_id"
            )
            return Counter({row["patient_id"]: row["linked"] for row in rows})

        started = time.monotonic()

        async def quiet() -> bool:
            return await applied() == tally.acknowledged and await links() == Counter(
                {who: n for who, n in tally.expected_links.items() if n}
            )

        try:
            await eventually(quiet, within=300, interval=1, what="the workload applied")
        except AssertionError:
            pass  # the table below says what is missing; the asserts after it fail
        drain = time.monotonic() - started
        clients = {
            name: httpx.AsyncClient(base_url=s.url, timeout=30) for name, s in services.items()
        }
        result = None

        async def agreed() -> bool:
            nonlocal result
            result = await reconcile(clients)
            return result.agreed

        try:
            await eventually(agreed, within=60, interval=1, what="the services to agree")
        except AssertionError:
            pass
        for client in clients.values():
            await client.aclose()

        found_links = await links()
        appointments = Counter(
            {
                row["patient_id"]: row["n"]
                for row in await dbs["calendar"].fetch(
                    "SELECT patient_id, count(*) AS n FROM appointments GROUP BY patient_id"
                )
            }
        )
        invoices = Counter(
            {
                row["patient_id"]: row["n"]
                for row in await dbs["invoicing"].fetch(
                    "SELECT patient_id, count(*) AS n FROM package_invoices GROUP BY patient_id"
                )
            }
        )
        done = await applied()
        duplicates = (
            sum(max(0, n - 1) for n in invoices.values())
            + sum(max(0, appointments[w] - n) for w, n in tally.expected_appointments.items())
            + sum(max(0, found_links[w] - n) for w, n in tally.expected_links.items())
        )
        wrong_links = sum(found_links[w] != n for w, n in tally.expected_links.items())
        dead = 0
        for name in NAMES:
            dead += len(
                await deadletters.read_all(
                    infrastructure.kafka_bootstrap, topic_prefix + dead_letter_topic(name).name
                )
            )
        kinds = Counter(fault.split(" ")[0] for fault, _ in faults.recovery)
        table = [
            f"| fault suite, seed {SEED} | {PATIENTS * ROUNDS} patients, {ROUNDS} round(s) |",
            "|---|---|",
            f"| Kafka principals (SASL_SSL, authorizer on) | {', '.join(map(user_name, NAMES))};"
            f" {len(granted)} ACLs; refused: {refused} |",
            f"| operations issued | {tally.issued} |",
            f"| operations acknowledged | {tally.acknowledged} |",
            f"| operations applied | {done} |",
            f"| lost | {tally.acknowledged - done} |",
            f"| duplicate effects | {duplicates} |",
            f"| patients with the wrong links | {wrong_links} |",
            f"| links expected / found | {sum(tally.expected_links.values())} /"
            f" {sum(found_links.values())} |",
            f"| disagreements between services | {len(result.disagreements) if result else '?'} |",
            f"| dead letters | {dead} |",
            f"| faults injected | {len(faults.recovery)}"
            f" ({', '.join(f'{k} x{n}' for k, n in sorted(kinds.items()))}) |",
            *[f"| recovery: {fault} | {seconds:.1f} s |" for fault, seconds in faults.recovery],
            f"| drain after the workload | {drain:.1f} s |",
        ]
        print("\n" + "\n".join(table))
        for effect in missing:
            print(f"not applied: {effect}")
        for who, n in sorted(tally.expected_links.items()):
            if found_links[who] != n:
                print(f"{who}: {found_links[who]} link(s), expected {n}")
        assert tally.acknowledged == tally.issued
        assert done == tally.acknowledged, "lost operations"
        assert duplicates == 0 and wrong_links == 0
        assert result is not None and result.agreed
        assert dead == 0
    finally:
        for db in dbs.values():
            await db.close()
        for service in services.values():
            await service.stop()
        if await script("deploy/kafka/kafka.sh", "status", check=False) != 0:
            await script("deploy/kafka/kafka.sh", "start")
        await script("deploy/postgres/postgres.sh", "start")
        await apply_acls(super_user, granted, remove=True)


async def wait_for_catalogue(urls: dict[str, str]) -> None:
    """The directory, fees and package have keys of their own, not the patients': wait until
    they are applied, or the first bookings would be refused for an unknown practitioner."""
    invoicing = await asyncpg.connect(urls["invoicing"])
    calendar = await asyncpg.connect(urls["calendar"])
    try:
        await eventually(
            lambda: invoicing.fetchval("SELECT count(*) FROM packages"), what="the package"
        )
        await eventually(
            lambda: calendar.fetchval(
                "SELECT (SELECT count(*) FROM fees) = 2"
                " AND (SELECT count(*) FROM practitioners) = 2"
                " AND (SELECT count(*) FROM locations) = 2"
            ),
            what="the calendar's directory and fees",
        )
    finally:
        await invoicing.close()
        await calendar.close()
