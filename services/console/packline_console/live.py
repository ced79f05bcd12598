"""Live updates for the console's pages: what happens in the calendar, invoicing and the matcher,
pushed to each signed-in page as Server-Sent Events (``GET /live``), so a grid shows a booking,
a package note or a refusal as soon as the event is published instead of polling.

The console reads the three services' event topics itself, as any outside reader may (its
principal READs them, packline_contracts.topics.OUTSIDE_READERS), from their ends and without a
consumer group: every console replica tells its own pages. Each event becomes a short
:class:`Notice`; each page gets only what its staff member may see (:func:`shown_to`): changes at
their clinics, and a refusal only by whoever gave the refused command. A page that falls behind
(its queue full) is told to reload instead of being given a partial story.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any
from uuid import UUID

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from packline_contracts import registry  # noqa: F401  (registers every message type)
from packline_contracts.appointments import (
    AppointmentChangeRefused,
    AppointmentEvent,
    BookingRefused,
)
from packline_contracts.envelope import Envelope, InvalidMessage, decode
from packline_contracts.invoices import LineForfeited, LineLinked, LineUnlinked, LineUsed
from packline_contracts.matching import AppointmentNotMatched
from packline_contracts.topics import OUTSIDE_READERS

log = structlog.get_logger(__name__)

READER = "staff-front-end"
QUEUE = 1_000  # notices a page may have waiting before it is told to reload
REMEMBERED = 50_000  # appointments whose location (and who asked) the console keeps in mind
HEARTBEAT_SECONDS = 15.0  # a comment line, so proxies and the browser keep the stream open
READY_WITHIN_SECONDS = 5.0
LIVE_EVENTS = ("ready", "appointment", "package", "not_matched", "refused", "reload")
RELOAD = b"event: reload\ndata: {}\n\n"  # show everything afresh: notices were missed


@dataclass(frozen=True)
class Notice:
    """One thing a page may want to show again: ``kind`` is appointment (booked, moved, changed,
    cancelled, deleted, attended), package (its package note changed), not_matched (with the
    matcher's summary) or refused (with the calendar's code and reason)."""

    kind: str
    appointment_id: UUID
    patient_id: str
    location_id: str | None = None
    practitioner_id: str | None = None
    message_type: str = ""
    code: str | None = None
    reason: str | None = None

    def event(self) -> bytes:
        fields = {k: str(v) if isinstance(v, UUID) else v for k, v in asdict(self).items()}
        body = json.dumps({k: v for k, v in fields.items() if v is not None})
        return f"event: {self.kind}\ndata: {body}\n\n".encode()


def notice_of(envelope: Envelope[Any]) -> Notice | None:
    """The notice an event gives, or None (an event no page shows)."""
    event, kind = envelope.payload, envelope.message_type
    if isinstance(event, AppointmentEvent):
        a = event.appointment
        return Notice(
            "appointment", a.appointment_id, a.patient_id, a.location_id, a.practitioner_id, kind
        )
    if isinstance(event, BookingRefused | AppointmentChangeRefused):
        return Notice(
            "refused",
            event.appointment_id,
            event.patient_id,
            message_type=kind,
            code=event.code.value,
            reason=event.reason,
        )
    if isinstance(event, LineLinked | LineUnlinked | LineUsed | LineForfeited):
        return Notice("package", event.appointment_id, event.patient_id, message_type=kind)
    if isinstance(event, AppointmentNotMatched):
        return Notice(
            "not_matched",
            event.appointment_id,
            event.patient_id,
            message_type=kind,
            reason=event.summary,
        )
    return None


@dataclass(frozen=True)
class Viewer:
    """A signed-in page's staff member, as the calendar's ``/whoami`` says."""

    actor: str
    clinics: frozenset[str] | None  # None: every clinic
    practitioner_id: str | None = None  # a practitioner sees only their own appointments

    @classmethod
    def of(cls, who: Mapping[str, Any], actor: str) -> Viewer:
        clinics = who.get("clinics")
        return cls(
            actor, None if clinics is None else frozenset(clinics), who.get("practitioner_id")
        )


@dataclass(frozen=True)
class Placed:
    """Where an appointment is, as its last event said."""

    location_id: str
    practitioner_id: str


def shown_to(
    notice: Notice,
    viewer: Viewer,
    placed: Mapping[UUID, Placed],
    asked_by: Mapping[UUID, str],
) -> bool:
    """Whether ``viewer``'s page is told ``notice`` (clinic scope, docs/identity.md): a refusal
    only to whoever gave the command; anything else only when its appointment is at one of the
    viewer's clinics (with a practitioner's, theirs), known from its own event or an earlier
    one. An appointment the console has not seen is shown only to staff of every clinic."""
    if notice.kind == "refused":
        return asked_by.get(notice.appointment_id) == viewer.actor
    if viewer.clinics is None and viewer.practitioner_id is None:
        return True
    where = placed.get(notice.appointment_id)
    if notice.location_id is not None and notice.practitioner_id is not None:
        where = Placed(notice.location_id, notice.practitioner_id)
    if where is None:
        return False
    if viewer.clinics is not None and where.location_id not in viewer.clinics:
        return False
    return viewer.practitioner_id is None or where.practitioner_id == viewer.practitioner_id


class Remembered(OrderedDict[UUID, Any]):
    """The most recent ``REMEMBERED`` entries."""

    def remember(self, key: UUID, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > REMEMBERED:
            self.popitem(last=False)


class Page:
    """One open stream: its viewer and the notices waiting to be sent."""

    def __init__(self, viewer: Viewer) -> None:
        self.viewer = viewer
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(QUEUE)
        self.behind = False

    def tell(self, event: bytes) -> None:
        if self.behind:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.behind = True  # the page reloads what it shows rather than miss a change
            self.queue.get_nowait()
            self.queue.put_nowait(RELOAD)


class LiveFeed:
    """Reads the event topics and tells every open page what it may see."""

    def __init__(self, kafka_options: Mapping[str, Any], topic_prefix: str) -> None:
        self._options = dict(kafka_options)
        self._topics = [topic_prefix + topic.name for topic in OUTSIDE_READERS[READER]]
        self._pages: set[Page] = set()
        self.placed: Remembered = Remembered()
        self.asked_by: Remembered = Remembered()
        self.reading = asyncio.Event()  # set once the feed reads from the topics' ends
        self._lost = False

    def asked(self, appointment_id: UUID, actor: str) -> None:
        """``actor`` gave a command about this appointment: a refusal of it is theirs to see."""
        self.asked_by.remember(appointment_id, actor)

    def take(self, envelope: Envelope[Any]) -> None:
        notice = notice_of(envelope)
        if notice is None:
            return
        if notice.location_id is not None and notice.practitioner_id is not None:
            self.placed.remember(
                notice.appointment_id, Placed(notice.location_id, notice.practitioner_id)
            )
        event = notice.event()
        for page in list(self._pages):
            if shown_to(notice, page.viewer, self.placed, self.asked_by):
                page.tell(event)

    async def stream(self, viewer: Viewer) -> AsyncIterator[bytes]:
        """A page's events, with a heartbeat, until the page goes away."""
        page = Page(viewer)
        self._pages.add(page)
        try:
            # Said once the feed reads (or after a few seconds without: the broker is away):
            # from then on, nothing published is missed.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.reading.wait(), READY_WITHIN_SECONDS)
            ready = json.dumps({"reading": self.reading.is_set()})
            yield f"retry: 3000\nevent: ready\ndata: {ready}\n\n".encode()
            while True:
                try:
                    yield await asyncio.wait_for(page.queue.get(), HEARTBEAT_SECONDS)
                except TimeoutError:
                    yield b": still here\n\n"
        finally:
            self._pages.discard(page)

    async def run(self) -> None:
        """Read until cancelled; a broker that goes away is read again from where it was."""
        delay = 1.0
        while True:
            try:
                await self._read()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self.reading.clear()
                self._lost = True
                log.warning("the live feed lost the broker; reading again", error=repr(error))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def _read(self) -> None:
        # Without a consumer group, a subscription is given every partition of its topics.
        consumer = AIOKafkaConsumer(
            *self._topics,
            **self._options,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
        )
        await consumer.start()
        try:
            while not consumer.assignment():  # assigned while polling
                self._tell(await consumer.getmany(timeout_ms=100))
            for partition in consumer.assignment():
                await consumer.position(partition)  # fixed now: nothing published is missed
            if self._lost:  # what happened meanwhile was not read: pages show it afresh
                for page in list(self._pages):
                    page.tell(RELOAD)
                self._lost = False
            self.reading.set()
            while True:
                self._tell(await consumer.getmany(timeout_ms=1_000, max_records=500))
        finally:
            await consumer.stop()

    def _tell(self, batches: Mapping[Any, list[ConsumerRecord[bytes, bytes]]]) -> None:
        for records in batches.values():
            for record in records:
                with contextlib.suppress(InvalidMessage):  # not ours to judge: the services do
                    self.take(decode(record.value, record.headers, record.key))
