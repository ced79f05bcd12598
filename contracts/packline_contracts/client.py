"""A small Kafka client for Python callers: publish commands and read events with the right key,
headers and envelope. Needs the ``kafka`` extra (``pip install 'packline-contracts[kafka]'``).

    async with PacklineProducer("127.0.0.1:9092", producer="online-bookings") as producer:
        booked = await producer.send(BookAppointment(...))

    async with PacklineConsumer("127.0.0.1:9092", [INVOICING_EVENTS], group_id="my-app") as events:
        linked = await events.wait_for(LineLinked, lambda e: e.payload.appointment_id == appt_id)

Both take a ``topic_prefix`` when Packline runs with ``PACKLINE_TOPIC_PREFIX``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable
from types import TracebackType
from typing import Any, Self, TypeVar, cast
from uuid import UUID

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from packline_contracts import registry  # noqa: F401  (registers every message type)
from packline_contracts.envelope import Envelope, InvalidMessage, Message, decode, encode
from packline_contracts.topics import Topic

M = TypeVar("M", bound=Message)


class PacklineProducer:
    """Publishes messages to the topic their type belongs to, waiting for every replica."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        producer: str,
        topic_prefix: str = "",
        **connection: Any,
    ) -> None:
        """``connection``: more aiokafka options, e.g. ``security_protocol="SASL_SSL"``,
        ``sasl_mechanism``, ``sasl_plain_username``, ``sasl_plain_password``, ``ssl_context``."""
        self.producer_name = producer
        self.topic_prefix = topic_prefix
        self._options = dict(
            bootstrap_servers=bootstrap_servers, acks="all", enable_idempotence=True, **connection
        )
        self._producer = AIOKafkaProducer(**self._options)

    async def __aenter__(self) -> Self:
        await self._producer.start()
        return self

    async def _renew(self) -> None:
        """A new producer (a new producer id) in place of a stopped one."""
        with contextlib.suppress(Exception):
            await self._producer.stop()
        self._producer = AIOKafkaProducer(**self._options)
        await self._producer.start()

    async def __aexit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        await self._producer.stop()

    async def send(
        self,
        message: M,
        *,
        message_id: UUID | None = None,
        correlation_id: UUID | None = None,
        causation: Envelope[Any] | None = None,
    ) -> Envelope[M]:
        """Publish ``message``; returns its envelope (keep ``message_id`` to follow the flow).
        Sending the same ``message_id`` again is safe: Packline applies it once."""
        envelope = Envelope.wrap(
            message,
            producer=self.producer_name,
            message_id=message_id,
            correlation_id=correlation_id,
            causation=causation,
        )
        record = encode(envelope)
        topic, headers = self.topic_prefix + message.TOPIC.name, record.headers + _trace_headers()
        try:
            await self._producer.send_and_wait(
                topic, value=record.value, key=record.key, headers=headers
            )
        except Exception:
            if not producer_stopped(self._producer):
                raise
            # Sending the same envelope again is safe (Packline applies a message id once).
            await self._renew()
            await self._producer.send_and_wait(
                topic, value=record.value, key=record.key, headers=headers
            )
        return envelope


def producer_stopped(producer: AIOKafkaProducer) -> bool:
    """Whether aiokafka's idempotent producer has stopped for good: it does when the broker
    answers a fatal error (e.g. ``OutOfOrderSequenceNumber`` after the broker lost its producer
    state in an unclean restart), and every later send then raises that error at once. The only
    way on is a new producer (a new producer id)."""
    sender = getattr(producer, "_sender", None)
    task = getattr(sender, "sender_task", None)
    return task is not None and task.done()


def _trace_headers() -> list[tuple[str, bytes]]:
    """The caller's current OpenTelemetry trace as a W3C ``traceparent`` header, so Packline's
    spans for this message join it; nothing when OpenTelemetry is not installed."""
    try:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    except ImportError:
        return []
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return [(name, value.encode()) for name, value in carrier.items()]


class PacklineConsumer:
    """Reads Packline messages from some topics in a consumer group of the caller's own."""

    def __init__(
        self,
        bootstrap_servers: str,
        topics: Iterable[Topic],
        *,
        group_id: str,
        topic_prefix: str = "",
        from_beginning: bool = True,
        ready_within: float = 30.0,
    ) -> None:
        """``from_beginning=False`` reads only what is published after ``async with`` has
        entered: entering waits (up to ``ready_within`` seconds) until the group has assigned
        this consumer its partitions and their positions are fixed, so a message sent next is
        never missed."""
        self._ready_within = ready_within
        self._consumer = AIOKafkaConsumer(
            *(topic_prefix + topic.name for topic in topics),
            bootstrap_servers=bootstrap_servers,
            group_id=group_id,
            auto_offset_reset="earliest" if from_beginning else "latest",
            enable_auto_commit=True,
        )
        self.received: list[Envelope[Message]] = []
        self.invalid: list[tuple[bytes | None, InvalidMessage]] = []

    async def __aenter__(self) -> Self:
        await self._consumer.start()
        try:
            await self._until_positioned()
        except BaseException:
            await self._consumer.stop()
            raise
        return self

    async def _until_positioned(self) -> None:
        """Join the group and fix every assigned partition's position. Joining happens in the
        background while polling, so poll (keeping whatever arrives) until the assignment is
        there; ``position`` then resolves "earliest" / "latest" to an offset."""
        deadline = time.monotonic() + self._ready_within
        while not self._consumer.assignment():
            if time.monotonic() > deadline:
                topics = ", ".join(sorted(self._consumer.subscription()))
                raise TimeoutError(
                    f"no partition of {topics} was assigned within {self._ready_within} s:"
                    " do the topics exist, and is the broker reachable?"
                )
            await self._poll(0.1)
        for partition in self._consumer.assignment():
            await self._consumer.position(partition)

    async def __aexit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        await self._consumer.stop()

    async def __aiter__(self) -> AsyncIterator[Envelope[Message]]:
        """Every new message, as it arrives."""
        while True:
            for envelope in await self._poll(1.0):
                yield envelope

    async def wait_for(
        self,
        message_type: type[M],
        where: Callable[[Envelope[M]], bool] = lambda _envelope: True,
        *,
        within: float = 30.0,
    ) -> Envelope[M]:
        """The first message of ``message_type`` satisfying ``where`` that this consumer has
        received or receives within ``within`` seconds (then TimeoutError). Everything received
        is kept in ``received``, so waiting for one message never loses another."""
        deadline = time.monotonic() + within
        checked = 0
        while True:
            for envelope in self.received[checked:]:
                if isinstance(envelope.payload, message_type):
                    typed = cast(Envelope[M], envelope)
                    if where(typed):
                        return typed
            checked = len(self.received)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no matching {message_type.MESSAGE_TYPE} within {within} s")
            await self._poll(min(left, 1.0))

    async def wait_for_any(
        self,
        *message_types: type[Message],
        where: Callable[[Envelope[Any]], bool] = lambda _envelope: True,
        within: float = 30.0,
    ) -> Envelope[Message]:
        """The first message of any of ``message_types`` satisfying ``where`` — an outcome and
        its refusal at once, e.g. ``wait_for_any(LineLinked, BookingRefused, where=...)``."""
        deadline = time.monotonic() + within
        checked = 0
        while True:
            for envelope in self.received[checked:]:
                if isinstance(envelope.payload, message_types) and where(envelope):
                    return envelope
            checked = len(self.received)
            left = deadline - time.monotonic()
            if left <= 0:
                names = " or ".join(t.MESSAGE_TYPE for t in message_types)
                raise TimeoutError(f"no matching {names} within {within} s")
            await self._poll(min(left, 1.0))

    async def _poll(self, seconds: float) -> list[Envelope[Message]]:
        batches = await self._consumer.getmany(timeout_ms=int(seconds * 1000))
        new: list[Envelope[Message]] = []
        for records in batches.values():
            for record in records:
                try:
                    new.append(decode(record.value, record.headers, record.key))
                except InvalidMessage as error:  # not ours to fix; kept for the caller to see
                    self.invalid.append((record.value, error))
        self.received.extend(new)
        return new
