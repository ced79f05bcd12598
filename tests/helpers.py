"""Waiting for outcomes with a deadline, instead of sleeping.

A service applies what it reads from a topic some time after the event is on the topic, and
another service's event says nothing about when this one catches up. So a test never reads a
service's state once and asserts: it waits, with a deadline, until the state shows what it
expects, and when the deadline passes it fails showing the last state it saw.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any, TypeVar
from uuid import UUID

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from packline_contracts.envelope import Envelope

T = TypeVar("T")

# Long enough for a loaded CI machine (one core busy elsewhere), short enough to fail a test in
# well under its own timeout.
WITHIN = 30.0
SHOWN_CHARACTERS = 2000


def shown(value: object) -> str:
    """A value as a failure message shows it: an HTTP answer with its status and body."""
    if isinstance(value, httpx.Response):
        text = f"HTTP {value.status_code} from {value.request.method} {value.request.url}: "
        text += value.text
    else:
        text = repr(value)
    if len(text) > SHOWN_CHARACTERS:
        text = text[:SHOWN_CHARACTERS] + f"... ({len(text) - SHOWN_CHARACTERS} more characters)"
    return text


def about(appointment_id: UUID) -> Callable[[Envelope[Any]], bool]:
    """A ``wait_for`` predicate: the message is about this appointment (its payload's
    ``appointment_id``, or its ``appointment``'s for the events that carry the appointment).
    A function of the id, so a wait inside a loop binds this iteration's appointment."""

    def matches(envelope: Envelope[Any]) -> bool:
        payload = envelope.payload
        appointment = getattr(payload, "appointment", None)
        if appointment is not None:
            return bool(appointment.appointment_id == appointment_id)
        return bool(getattr(payload, "appointment_id", None) == appointment_id)

    return matches


async def eventually(
    probe: Callable[[], Awaitable[T | None]],
    *,
    within: float = WITHIN,
    interval: float = 0.1,
    what: str = "the condition",
    describe: Callable[[], Awaitable[object] | object] | None = None,
) -> T:
    """Call ``probe`` until it returns something truthy, and return that; fail at the deadline,
    showing what the probe last returned and, when given, what ``describe`` says of the state."""
    started = time.monotonic()
    deadline = started + within
    tries = 0
    while True:
        result = await probe()
        tries += 1
        if result:
            return result
        if time.monotonic() > deadline:
            message = f"timed out after {within} s ({tries} tries) waiting for {what}"
            if result is not None and result is not False:  # a falsy value that says something
                message += f"; the probe last returned {shown(result)}"
            if describe is not None:
                message += f"; last seen: {await _describe(describe)}"
            raise AssertionError(message)
        await asyncio.sleep(interval)


async def _describe(describe: Callable[[], Awaitable[object] | object]) -> str:
    try:
        said = describe()
        if inspect.isawaitable(said):
            said = await said
    except Exception as error:  # the explanation must never hide the timeout itself
        return f"(could not describe it: {error!r})"
    return said if isinstance(said, str) else shown(said)


async def read_until(
    read: Callable[[], Awaitable[T]],
    holds: Callable[[T], object],
    *,
    within: float = WITHIN,
    interval: float = 0.1,
    what: str = "the condition",
) -> T:
    """Read ``read()`` until ``holds`` is true of what it returned, and return that value; at the
    deadline fail showing the last value read (an HTTP answer with its status and body)."""
    last: list[T] = []

    async def probe() -> bool:
        value = await read()
        last[:] = [value]
        return bool(holds(value))

    await eventually(
        probe, within=within, interval=interval, what=what, describe=lambda: shown(last[0])
    )
    return last[0]


async def get_until(
    client: httpx.AsyncClient,
    url: str,
    holds: Callable[[Any], object],
    *,
    params: dict[str, Any] | None = None,
    within: float = WITHIN,
    what: str | None = None,
) -> Any:
    """GET ``url`` until it answers 200 with a JSON body of which ``holds`` is true; return the
    body. At the deadline fail showing the last answer (status and body)."""

    async def answer() -> httpx.Response:
        return await client.get(url, params=params)

    def ok(response: httpx.Response) -> bool:
        return response.status_code == 200 and bool(holds(response.json()))

    response = await read_until(answer, ok, within=within, what=what or f"GET {url}")
    return response.json()


async def caught_up(
    bootstrap: str,
    group_id: str,
    topics: Collection[str],
    *,
    within: float = WITHIN,
) -> None:
    """Wait until consumer group ``group_id`` has committed every record now on ``topics``: the
    service has applied them (it commits only what it applied). For state a service keeps but
    does not show over HTTP; fail showing the partitions still behind."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    offsets = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await admin.start()
    await offsets.start()
    try:
        partitions = [
            TopicPartition(topic, partition["partition"])
            for described in await admin.describe_topics(list(topics))
            for partition in described["partitions"]
            for topic in [described["topic"]]
        ]
        ends = await offsets.end_offsets(partitions)

        async def behind() -> dict[str, int]:
            """Records not yet committed, per partition behind (no commit yet: offset -1)."""
            committed = await admin.list_consumer_group_offsets(group_id, partitions=partitions)
            done = {p: committed[p].offset if p in committed else -1 for p in partitions}
            return {
                f"{p.topic}[{p.partition}]": ends[p] - max(done[p], 0)
                for p in partitions
                if ends[p] > max(done[p], 0)
            }

        async def none_behind() -> bool:
            return not await behind()

        await eventually(
            none_behind,
            within=within,
            interval=0.2,
            what=f"{group_id} to apply what is on {', '.join(topics)}",
            describe=behind,
        )
    finally:
        await offsets.stop()
        await admin.close()
