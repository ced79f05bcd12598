"""The load generator: publishes commands as front ends would, on a schedule, and times each one
to the event that completes it and, for bookings, to the calendar's committed package note.

Timing rules:

- Every command has a *scheduled* send time (the run's start + i / rate). Latency is measured
  from it, not from the moment the generator got round to sending, so a generator (or a broker)
  that falls behind shows up as latency instead of hiding it. The achieved send rate is kept
  beside the asked one.
- Each command carries a correlation id of its own; every event a service publishes because of
  it carries the same id in its ``correlation-id`` header. The generator's reader (assigned to
  the event topics' partitions, no consumer group) notes the first time it receives each
  (message type, correlation id) without parsing the record.
- A booking's package note is "committed" when a reader of the calendar's database can see it:
  a watcher asks the calendar's ``package_notes`` for the bookings in flight every few
  milliseconds (only while one is in flight) and keeps the time of the answer that first shows
  the note (the commit happened between the previous look and that answer: the figure is an
  upper bound, by at most one look). The note row's own ``updated_at`` (the start of the
  calendar's transaction, before its commit) is kept as the lower bound.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from packline_contracts import registry  # noqa: F401  (registers every message type)
from packline_contracts.appointments import (
    BookAppointment,
    CancelAppointment,
    RescheduleAppointment,
)
from packline_contracts.catalogue import (
    DefineFee,
    DefineLocation,
    DefinePackage,
    DefinePractitioner,
)
from packline_contracts.envelope import Envelope, Message, encode
from packline_contracts.invoices import (
    IssuePackageInvoice,
    PurchaseChannel,
    RecordPayment,
    VoidPackageInvoice,
)
from packline_contracts.topics import CALENDAR_EVENTS, INVOICING_EVENTS, MATCHER_EVENTS
from packline_contracts.types import BookingSource, PackageItem, Restriction, Validity

from benchmarks import machine
from benchmarks.offsets import Broker, partitions_of
from benchmarks.system import System

PRACTITIONERS = [f"bench-dr-{n:02d}" for n in range(24)]
LOCATION = "bench-clinic"
FEE = "bench-massage"
# Packages by their number of lines (a package holds at most 100 sessions: 1,000 lines per
# patient are ten invoices of 100).
PACKAGES = {1: "bench-1", 5: "bench-5", 20: "bench-20", 100: "bench-100"}
PRICE_CENTS = 1_000_000  # payments of one cent never make an invoice paid in full
# What completes each kind of command: the last event of its chain.
DONE = {
    "book": "LineLinked",  # calendar books, the matcher asks, invoicing links (then the note)
    "reschedule": "LineLinked",  # the matcher keeps the line and invoicing re-links it
    "cancel": "LineUnlinked",  # the matcher releases the line, invoicing unlinks it
    "purchase": "PackageInvoiceIssued",
    "payment": "PaymentRecorded",
    "void": "PackageInvoiceVoided",
}
FAILURES = {
    "BookingRefused",
    "AppointmentChangeRefused",
    "InvoiceCommandRefused",
    "LinkRefused",
    "AppointmentNotMatched",
}


@dataclass
class Patient:
    patient_id: str
    invoices: list[uuid.UUID] = field(default_factory=list)
    free: int = 0  # lines not booked


@dataclass
class Command:
    kind: str
    message: Message
    note: bool = False  # wait for (and time) the calendar's package note of this booking


@dataclass
class Sent:
    command: Command
    cid: uuid.UUID
    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]
    scheduled: float = 0.0
    sent: float = 0.0

    @property
    def appointment_id(self) -> uuid.UUID:
        message = self.command.message
        assert isinstance(message, BookAppointment)
        return message.appointment_id


class Driver:
    def __init__(self, system: System) -> None:
        self.system = system
        self.config = system.config
        self.producer = AIOKafkaProducer(
            bootstrap_servers=self.config.kafka, acks="all", linger_ms=5
        )
        self.reader = AIOKafkaConsumer(bootstrap_servers=self.config.kafka)
        self.broker = Broker(self.config.kafka, system.prefix, set())
        self.infrastructure = machine.Infrastructure.find(
            int(self.config.kafka.rsplit(":", 1)[1]),
            urlsplit(self.config.admin_url).port or 5432,
        )
        self.seen: dict[tuple[str, uuid.UUID], float] = {}  # (type, correlation) -> received
        self.failed: dict[uuid.UUID, str] = {}  # correlation -> the refusal's type
        self.notes: dict[uuid.UUID, tuple[float, float]] = {}  # appointment -> (seen, row time)
        self.pending: dict[uuid.UUID, Sent] = {}  # correlation -> command in flight
        self.waiting: set[tuple[str, uuid.UUID]] = set()  # (type or "note", id) not seen yet
        self.note_pending: set[uuid.UUID] = set()
        self.progress = asyncio.Event()
        self.notes_wanted = asyncio.Event()
        self.pool: list[Patient] = []  # patients who bought 100-line packages for bookings
        self.cursor = 0
        self.slot = 0
        self.moved = 0
        self.patients = 0
        self.tasks: list[asyncio.Task[None]] = []
        self.note_looks = 0

    # --- lifecycle ---

    async def start(self) -> None:
        await self.producer.start()
        await self.reader.start()
        await self.broker.start()
        partitions = await partitions_of(
            self.broker.admin,
            [
                self.system.prefix + t.name
                for t in (CALENDAR_EVENTS, INVOICING_EVENTS, MATCHER_EVENTS)
            ],
        )
        self.reader.assign(partitions)
        await self.reader.seek_to_end()
        for tp in partitions:  # resolve the end positions now: nothing sent later is skipped
            await self.reader.position(tp)
        self.tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._watch_notes())]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.reader.stop()
        await self.producer.stop()
        await self.broker.stop()

    async def _read(self) -> None:
        while True:
            batches = await self.reader.getmany(timeout_ms=500, max_records=10_000)
            now = time.time()
            for records in batches.values():
                for record in records:
                    headers = dict(record.headers)
                    kind = headers.get("message-type", b"").decode()
                    try:
                        cid = uuid.UUID(headers.get("correlation-id", b"").decode())
                    except ValueError:
                        continue
                    self.seen.setdefault((kind, cid), now)
                    self.waiting.discard((kind, cid))
                    if kind in FAILURES and cid in self.pending and cid not in self.failed:
                        self.failed[cid] = kind
                        sent = self.pending[cid]
                        self.waiting.discard((DONE[sent.command.kind], cid))
                        if sent.command.note:
                            self.waiting.discard(("note", sent.appointment_id))
                            self.note_pending.discard(sent.appointment_id)
            if batches:
                self.progress.set()

    async def _watch_notes(self) -> None:
        conn = await asyncpg.connect(self.system.urls["calendar"])
        try:
            while True:
                if not self.note_pending:
                    self.notes_wanted.clear()
                    await self.notes_wanted.wait()
                    continue
                asked = time.monotonic()
                rows = await conn.fetch(
                    "SELECT appointment_id, extract(epoch FROM updated_at)::float8 AS at"
                    " FROM package_notes WHERE appointment_id = ANY($1::uuid[])"
                    " AND state = 'linked'",
                    list(self.note_pending),
                )
                now = time.time()
                self.note_looks += 1
                for row in rows:
                    appointment = row["appointment_id"]
                    self.notes.setdefault(appointment, (now, row["at"]))
                    self.note_pending.discard(appointment)
                    self.waiting.discard(("note", appointment))
                if rows:
                    self.progress.set()
                took = time.monotonic() - asked
                # Look again soon, but never spend more than a third of the time asking.
                await asyncio.sleep(max(self.config.note_poll_seconds, 2 * took))
        finally:
            await conn.close()

    # --- sending ---

    def prepare(self, commands: Iterable[Command]) -> list[Sent]:
        """Encode every command before its run starts (so the sender keeps its schedule)."""
        prepared = []
        for command in commands:
            cid = uuid.uuid4()
            record = encode(
                Envelope.wrap(command.message, producer="bench", message_id=cid, correlation_id=cid)
            )
            prepared.append(
                Sent(
                    command,
                    cid,
                    self.system.prefix + command.message.TOPIC.name,
                    record.key,
                    record.value,
                    record.headers,
                )
            )
        return prepared

    async def send(self, batch: Sequence[Sent], rate: float | None) -> float:
        """Send ``batch`` on schedule: command i at start + i / rate (None: all at once, each
        scheduled at the start). Returns the start (wall clock)."""
        start_wall, start = time.time(), time.monotonic()
        i = 0
        while i < len(batch):
            due = (
                len(batch)
                if not rate
                else min(len(batch), int((time.monotonic() - start) * rate) + 1)
            )
            while i < due:
                item = batch[i]
                item.scheduled = start_wall + (i / rate if rate else 0.0)
                self._expect(item)
                item.sent = time.time()
                await self.producer.send(
                    item.topic, value=item.value, key=item.key, headers=item.headers
                )
                i += 1
            if rate and i < len(batch):
                await asyncio.sleep(max(start + i / rate - time.monotonic(), 0.0))
        await self.producer.flush()
        return start_wall

    def _expect(self, item: Sent) -> None:
        self.pending[item.cid] = item
        done = (DONE[item.command.kind], item.cid)
        if done not in self.seen:
            self.waiting.add(done)
        if item.command.note:
            self.waiting.add(("note", item.appointment_id))
            self.note_pending.add(item.appointment_id)
            self.notes_wanted.set()

    async def until_done(self, batch: Sequence[Sent], within: float) -> None:
        """Wait until every command of ``batch`` is done (or refused) and every note it waits
        for is committed. TimeoutError after ``within`` seconds."""
        keys = {(DONE[s.command.kind], s.cid) for s in batch}
        keys |= {("note", s.appointment_id) for s in batch if s.command.note}
        deadline = time.monotonic() + within
        while True:
            self.progress.clear()  # before looking: a result arriving meanwhile sets it again
            if not keys & self.waiting:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{len(keys & self.waiting)} of {len(keys)} results missing")
            try:
                await asyncio.wait_for(self.progress.wait(), timeout=min(left, 1.0))
            except TimeoutError:
                pass

    def forget(self, batch: Sequence[Sent]) -> None:
        """Stop waiting for what ``batch`` left missing (after its deadline)."""
        for s in batch:
            self.waiting.discard((DONE[s.command.kind], s.cid))
            if s.command.note:
                self.waiting.discard(("note", s.appointment_id))
                self.note_pending.discard(s.appointment_id)

    async def publish_now(self, messages: Sequence[Message]) -> None:
        for message in messages:
            record = encode(Envelope.wrap(message, producer="bench"))
            await self.producer.send(
                self.system.prefix + message.TOPIC.name,
                value=record.value,
                key=record.key,
                headers=record.headers,
            )
        await self.producer.flush()

    # --- the clinic and its patients ---

    async def clinic(self) -> None:
        messages: list[Message] = [
            DefinePractitioner(practitioner_id=p, name=p) for p in PRACTITIONERS
        ]
        messages.append(DefineLocation(location_id=LOCATION, name="Bench clinic"))
        messages.append(
            DefineFee(
                fee_id=FEE, name="Massage", duration_minutes=5, price_cents=100, currency="EUR"
            )
        )
        for sessions, package in PACKAGES.items():
            messages.append(
                DefinePackage(
                    package_id=package,
                    name=f"{sessions} x massage",
                    items=[PackageItem(fee_id=FEE, count=sessions)],
                    practitioners=Restriction(),
                    locations=Restriction(),
                    validity=Validity(days=3650),
                    price_cents=PRICE_CENTS,
                    currency="EUR",
                    pay_before_use=False,
                    online_purchase=True,  # the load is online purchases
                )
            )
        await self.publish_now(messages)

    def new_patients(self, count: int, label: str) -> list[Patient]:
        made = [Patient(f"bench-{label}-{self.patients + n}") for n in range(count)]
        self.patients += count
        return made

    def purchase(self, patient: Patient, sessions: int) -> Command:
        invoice = uuid.uuid4()
        patient.invoices.append(invoice)
        patient.free += sessions
        return Command(
            "purchase",
            IssuePackageInvoice(
                patient_id=patient.patient_id,
                invoice_id=invoice,
                package_id=PACKAGES[sessions],
                channel=PurchaseChannel.ONLINE,
                issued_by="bench",
                issued_at=datetime.now(UTC),
            ),
        )

    async def buy(self, patients: Sequence[Patient], lines_each: int, within: float) -> None:
        """Each patient buys packages up to ``lines_each`` more lines; returns once every
        service has applied them (not timed)."""
        commands = []
        for patient in patients:
            left = lines_each
            while left > 0:
                sessions = max(s for s in PACKAGES if s <= left)
                commands.append(self.purchase(patient, sessions))
                left -= sessions
        for start in range(0, len(commands), 2_000):
            batch = self.prepare(commands[start : start + 2_000])
            await self.send(batch, None)
            await self.until_done(batch, within)
        await self.broker.quiet(within)

    async def ensure_free(self, bookings: int) -> None:
        """Enough open lines in the pool for ``bookings`` more bookings (bought untimed)."""
        free = sum(p.free for p in self.pool)
        if free < bookings:
            more = self.new_patients((bookings - free) // 100 + 1, "pool")
            self.pool.extend(more)
            await self.buy(more, 100, within=600)

    # --- commands ---

    def booking(self, patient: Patient | None = None, note: bool = True) -> Command:
        if patient is None:  # spread bookings over the pool's patients (every partition)
            for _ in range(len(self.pool)):
                patient = self.pool[self.cursor % len(self.pool)]
                self.cursor += 1
                if patient.free > 0:
                    break
            else:
                raise AssertionError("every line is booked: buy more packages first")
        assert patient is not None and patient.free > 0
        patient.free -= 1
        n = self.slot
        self.slot += 1
        practitioner = PRACTITIONERS[n % len(PRACTITIONERS)]
        day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        return Command(
            "book",
            BookAppointment(
                patient_id=patient.patient_id,
                appointment_id=uuid.uuid4(),
                practitioner_id=practitioner,
                location_id=LOCATION,
                starts_at=day + timedelta(days=2, minutes=5 * (n // len(PRACTITIONERS))),
                duration_minutes=5,
                fee_ids=[FEE],
                source=BookingSource.ONLINE,
                booked_by="bench",
            ),
            note=note,
        )

    def reschedule(self, booked: BookAppointment) -> Command:
        # A time of its own, far from every booking's: never a clash.
        self.moved += 1
        day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        return Command(
            "reschedule",
            RescheduleAppointment(
                patient_id=booked.patient_id,
                appointment_id=booked.appointment_id,
                starts_at=day + timedelta(days=1000, minutes=5 * self.moved),
                requested_by="bench",
            ),
        )

    def cancel(self, booked: BookAppointment) -> Command:
        return Command(
            "cancel",
            CancelAppointment(
                patient_id=booked.patient_id,
                appointment_id=booked.appointment_id,
                cancelled_by="bench",
                cancelled_at=datetime.now(UTC),
            ),
        )

    def payment(self, patient: Patient, invoice: uuid.UUID) -> Command:
        return Command(
            "payment",
            RecordPayment(
                patient_id=patient.patient_id,
                invoice_id=invoice,
                payment_id=uuid.uuid4(),
                amount_cents=1,
                paid_at=datetime.now(UTC),
                recorded_by="bench",
            ),
        )

    def void(self, patient: Patient, invoice: uuid.UUID) -> Command:
        return Command(
            "void",
            VoidPackageInvoice(
                patient_id=patient.patient_id,
                invoice_id=invoice,
                voided_by="bench",
                reason="benchmark",
            ),
        )

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
