"""A property-based fuzz of the consumer edge (I5: nothing accepted is lost; I7: a bad message
never blocks a partition and never disappears).

Hypothesis makes batches that mix valid probes with what any client can put on a topic:
arbitrary bytes for key, value and headers, header names that are not UTF-8, null header values,
deep nesting, sizes at and around the limits, valid envelopes with one thing broken, valid
envelopes on the wrong partition for their key, redeliveries. Many of them share keys with valid
probes, before and after them. Every batch goes through the real decode and dispatch path of a
consumer of a running calendar service (real PostgreSQL and Kafka), and after each batch:

- ``process()`` did not raise;
- every valid message was applied exactly once (a row per message id), a redelivery added none;
- every hostile record is on the dead-letter topic once, with a reason, its bytes kept (on the
  topic, or in the service's database with a reference on the topic);
- nothing else was dead-lettered, and a record the contract leaves open (an unknown field nested
  very deeply) was either applied or dead-lettered, never both, never neither.

What the fuzz found is kept as the regression tests in the middle of this file (each failed before
its fix): a repeated header whose first copy contradicted the value, and dead letters whose
reference no producer could write.

A second test sends a generated batch through the broker itself (aiokafka, and kcat for header
names that are not UTF-8) to the running service, and also checks that the consumer group's
commits reach the end of every partition: nothing left behind, no partition stuck.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import itertools
import json
import time
from collections import Counter
from collections.abc import Coroutine, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import murmur2
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from packline_contracts.envelope import (
    CHECKED_HEADERS,
    MAX_MESSAGE_BYTES,
    MESSAGE_TYPES,
    Envelope,
    encode,
)
from packline_contracts.probes import ProbeSent
from packline_contracts.topics import OPS_PROBES, Consumer, dead_letter_topic
from packline_core import deadletters
from packline_core.consumer import MessageConsumer
from packline_core.deadletters import INLINE_LIMIT, PREFIX, UNREADABLE_HEADER, DeadLetter
from packline_core.outbox import Transaction
from packline_core.service import Service

from tests.conftest import TEST_PARTITIONS, Infrastructure, StartService
from tests.helpers import caught_up, eventually
from tests.kcat import kcat

pytestmark = pytest.mark.infra

CONSUMER = "fuzz"
PRODUCER = "fuzz-client"
KEYS = 6  # probes (keys) per batch: hostile records share them with valid ones
MESSAGES = 3  # messages per key: a hostile copy of one may come before or after the valid one
# A record just under the broker's own limit (message.max.bytes, 1,048,588 by default).
NEAR_BROKER_LIMIT = 1_048_000  # the headers and the key take it to about 1,048,300
SIZES = (
    MAX_MESSAGE_BYTES - 1,
    MAX_MESSAGE_BYTES,
    MAX_MESSAGE_BYTES + 1,
    INLINE_LIMIT - 200,
    INLINE_LIMIT + 1,
    NEAR_BROKER_LIMIT,
)
PADDING_POINT = b"}"  # padding goes before the envelope's closing brace: still one JSON object

Headers = tuple[tuple[str, bytes | None], ...]


# --- what may become of a record -----------------------------------------------------------


class Fate(enum.Enum):
    APPLIED = "applied once"
    REDELIVERED = "skipped as a redelivery (its message applied once)"
    DEAD_LETTERED = "dead-lettered with a reason"
    EITHER = "applied once or dead-lettered, not both"


# --- the steps a batch is made of (their reprs are what a failing example shows) ------------


@dataclass(frozen=True)
class Valid:
    """Message ``message`` of probe ``key``, as Packline's producers write it; ``bare``: without
    the (optional) metadata headers; ``noise``: extra headers Packline does not read, any bytes,
    null values; ``size``: the value padded with JSON whitespace to that many bytes."""

    key: int
    message: int
    bare: bool = False
    noise: Headers = ()
    size: int | None = None


@dataclass(frozen=True)
class Mutated:
    """Message ``message`` of probe ``key`` with one thing broken. ``where``: ``value`` (the
    JSON path ``what`` set to ``to``, or deleted when ``to`` is DELETE), ``header`` (header
    ``what`` set to ``to``, added when absent), ``contradicting-copy`` (a second ``what``
    header saying ``to``, before the true one) or ``key`` (the record's key set to ``to``)."""

    key: int
    message: int
    where: str
    what: str
    to: Any


@dataclass(frozen=True)
class WrongPartition:
    """A valid message of probe ``key``, ``shift`` partitions away from where murmur2 puts its
    key (the sender used another partitioner)."""

    key: int
    message: int
    shift: int


@dataclass(frozen=True)
class UnreadableHeaderName:
    """A valid message of probe ``key`` with one more header whose name is not UTF-8."""

    key: int
    message: int
    name: bytes
    value: bytes | None


@dataclass(frozen=True)
class DeeplyNested:
    """A new valid message of probe ``key`` with an unknown field nested ``depth`` deep, in the
    envelope or in the payload. Unknown fields are ignored, but how deep a reader follows them
    is the reader's limit: applied or dead-lettered, either is right, never both or neither."""

    key: int
    depth: int
    in_payload: bool


@dataclass(frozen=True, repr=False)
class Raw:
    """Any bytes a client can send: ``key`` an int means probe ``key``'s key; ``partition`` is
    used when the record has no key (a keyed one goes where murmur2 puts it)."""

    key: int | bytes | None
    value: bytes | None
    headers: Headers
    partition: int

    def __repr__(self) -> str:
        value = self.value
        shown = (
            repr(value)
            if value is None or len(value) <= 80
            else f"<{len(value)} bytes: {value[:40]!r}...>"
        )
        return (
            f"Raw(key={self.key!r}, value={shown}, headers={self.headers!r},"
            f" partition={self.partition})"
        )


Step = Valid | Mutated | WrongPartition | UnreadableHeaderName | DeeplyNested | Raw

DELETE = "<deleted>"


# --- strategies ------------------------------------------------------------------------------


def _not_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


keys = st.integers(0, KEYS - 1)
messages = st.integers(0, MESSAGES - 1)
bad_bytes = st.sampled_from([b"\xff", b"\xfe", b"\x80", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8"])
not_utf8 = st.builds(
    lambda before, bad, after: before + bad + after,
    st.binary(max_size=6),
    bad_bytes,
    st.binary(max_size=6),
).filter(_not_utf8)
header_values = st.none() | st.binary(max_size=48)
noise_names = st.text(max_size=24).filter(lambda name: name not in CHECKED_HEADERS)
noise_headers = st.lists(st.tuples(noise_names, header_values), max_size=4).map(tuple)
any_header_names = (
    st.text(max_size=16)
    | st.sampled_from(sorted(CHECKED_HEADERS))
    | st.just(PREFIX + "reason")
    | not_utf8.map(lambda raw: raw.decode("utf-8", "surrogateescape"))
)
any_headers = st.lists(st.tuples(any_header_names, header_values), max_size=5).map(tuple)

# JSON that is not a string (so never a UUID, a time or a name).
not_text = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.lists(st.integers(), max_size=2)
    | st.dictionaries(st.text(max_size=4), st.integers(), max_size=2)
)
not_a_uuid = not_text | st.text(max_size=20).map(lambda text: "not-a-uuid " + text)
naive_time = st.datetimes().map(datetime.isoformat)
not_a_time = not_text | naive_time | st.text(max_size=20).map(lambda text: "when? " + text)
out_of_window = st.datetimes(timezones=st.just(UTC)).filter(lambda t: not 1900 <= t.year <= 2199)
bad_actor = (
    not_text.filter(lambda value: value is not None)
    | st.just("")
    | st.text(min_size=129, max_size=140).filter(lambda text: len(text.strip()) > 0)
    | st.builds(
        lambda a, c, b: a + c + b,
        st.text(max_size=5),
        st.sampled_from("\x00\n\x1f\x7f"),
        st.text(max_size=5),
    )
)

value_mutations = st.one_of(
    st.tuples(st.just("message_id"), not_a_uuid),
    st.tuples(st.just("correlation_id"), not_a_uuid),
    st.tuples(st.just("causation_id"), not_a_uuid.filter(lambda value: value is not None)),
    st.tuples(
        st.just("message_type"),
        not_text
        | st.text(max_size=20).filter(lambda name: name not in MESSAGE_TYPES)
        | st.sampled_from(sorted(set(MESSAGE_TYPES) - {"ProbeSent"})),
    ),
    st.tuples(
        st.just("schema_version"),
        st.integers(max_value=0)
        | st.integers(min_value=2)
        | st.sampled_from(["1", True, None, 1.5, [1], {}]),
    ),
    st.tuples(st.just("occurred_at"), not_a_time),
    st.tuples(
        st.just("producer"),
        st.just("") | st.text(min_size=129, max_size=140) | not_text,
    ),
    st.tuples(
        st.just("patient_id"),
        st.from_regex(r"\A[a-z0-9]{1,12}\Z") | not_text.filter(lambda value: value is not None),
    ),
    st.tuples(st.just("payload"), not_text | st.just({})),
    st.tuples(st.just("payload.probe_id"), not_a_uuid),
    st.tuples(st.just("payload.sent_by"), bad_actor),
    st.tuples(
        st.just("payload.sent_at"),
        not_a_time | out_of_window.map(datetime.isoformat),
    ),
    st.tuples(
        st.sampled_from(
            [
                "message_id",
                "message_type",
                "schema_version",
                "occurred_at",
                "correlation_id",
                "producer",
                "payload",
                "payload.probe_id",
                "payload.sent_by",
                "payload.sent_at",
            ]
        ),
        st.just(DELETE),
    ),
)


def _differs_from_header(name: str, said: str) -> bool:
    if name == "content-type":
        return said.split(";")[0].strip().lower() != "application/json"
    return said not in {"ProbeSent", "1", PRODUCER}


header_mutations = st.one_of(
    st.tuples(st.sampled_from(sorted(CHECKED_HEADERS)), st.none() | not_utf8),
    st.tuples(st.sampled_from(sorted(CHECKED_HEADERS)), st.text(max_size=40))
    .filter(lambda pair: _differs_from_header(*pair))
    .map(lambda pair: (pair[0], pair[1].encode())),
)


def _mutated(where: str, mutation: tuple[str, Any]) -> Any:
    what, to = mutation
    return st.builds(Mutated, keys, messages, st.just(where), st.just(what), st.just(to))


mutated = st.one_of(
    value_mutations.flatmap(lambda m: _mutated("value", m)),
    header_mutations.flatmap(lambda m: _mutated("header", m)),
    header_mutations.filter(lambda m: m[0] != "causation-id").flatmap(
        lambda m: _mutated("contradicting-copy", m)
    ),
    st.builds(
        Mutated, keys, messages, st.just("key"), st.just("key"), st.none() | st.binary(max_size=40)
    ),
)

deep = st.sampled_from([50, 200, 300, 1_000, 5_000])
raw_values = st.one_of(
    st.none(),
    st.binary(max_size=200),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(
                st.sampled_from(["message_type", "payload", "message_id", "x"])
                | st.text(max_size=5),
                inner,
                max_size=4,
            )
        ),
        max_leaves=12,
    ).map(lambda outline: json.dumps(outline).encode()),
    st.builds(
        lambda opener, depth: opener * depth,
        st.sampled_from([b"[", b'{"a":', b'{"payload":']),
        st.sampled_from([100, 1_000, 50_000]),  # within the broker's limit
    ),
    st.builds(
        lambda size, fill: fill * size, st.sampled_from(SIZES), st.sampled_from([b" ", b"x"])
    ),
)


def _weighted(*choices: tuple[int, st.SearchStrategy[Step]]) -> st.SearchStrategy[Step]:
    """One of ``choices``, each as often as its weight says (``st.one_of`` would flatten the
    nested choices of ``mutated`` and favour them)."""
    return st.sampled_from([s for weight, s in choices for _ in range(weight)]).flatmap(
        lambda chosen: chosen
    )


valid = st.builds(
    Valid,
    keys,
    messages,
    st.booleans(),
    noise_headers,
    st.sampled_from([None] * 6 + list(SIZES[:2])),  # now and then exactly at the value limit
)
wrong_partition = st.builds(WrongPartition, keys, messages, st.integers(1, TEST_PARTITIONS - 1))
raw = st.builds(
    Raw,
    st.none() | keys | st.binary(max_size=40),
    raw_values,
    any_headers,
    st.integers(0, TEST_PARTITIONS - 1),
)
# Over the value limit, then over what the dead-letter topic takes inline, then near the
# broker's own limit.
oversized = st.builds(
    Valid, keys, messages, st.just(False), st.just(()), st.sampled_from(SIZES[2:])
)
steps = _weighted(
    (5, valid),
    (4, mutated),
    (1, wrong_partition),
    (1, st.builds(UnreadableHeaderName, keys, messages, not_utf8, header_values)),
    (1, st.builds(DeeplyNested, keys, deep, st.booleans())),
    (2, raw),
    (1, oversized),
)


# --- building records from steps -------------------------------------------------------------


@dataclass
class Planned:
    step: Step
    key: bytes | None
    value: bytes | None
    headers: Headers
    partition: int
    fate: Fate
    message_id: UUID | None  # the id its row carries if it is applied
    offset: int = -1

    def __repr__(self) -> str:
        return (
            f"{self.step!r} -> {self.fate.value} (partition {self.partition}, offset {self.offset})"
        )


def partition_of(key: bytes) -> int:
    return int((murmur2(key) & 0x7FFFFFFF) % TEST_PARTITIONS)


class Batch:
    """Fresh probes for one example (a hypothesis example may run more than once), and the
    records its steps stand for."""

    def __init__(self) -> None:
        now = datetime.now(UTC)
        self.probes = [
            ProbeSent(probe_id=uuid4(), sent_by="fuzz", sent_at=now) for _ in range(KEYS)
        ]
        self.envelopes = {
            (key, message): Envelope.wrap(self.probes[key], producer=PRODUCER)
            for key in range(KEYS)
            for message in range(MESSAGES)
        }
        self.planned: list[Planned] = []
        self._applied: set[UUID] = set()

    def plan(self, step_list: Sequence[Step]) -> list[Planned]:
        for step in step_list:
            self.planned.append(self._plan(step))
        return self.planned

    def _plan(self, step: Step) -> Planned:
        if isinstance(step, Valid):
            envelope = self.envelopes[step.key, step.message]
            record = encode(envelope)
            headers: Headers = () if step.bare else tuple(record.headers)
            value = record.value if step.size is None else _padded(record.value, step.size)
            fate = Fate.DEAD_LETTERED
            if len(value) <= MAX_MESSAGE_BYTES:
                fate = Fate.REDELIVERED if envelope.message_id in self._applied else Fate.APPLIED
                self._applied.add(envelope.message_id)
            return self._keyed(step, record.key, value, headers + step.noise, fate, envelope)
        if isinstance(step, Mutated):
            envelope = self.envelopes[step.key, step.message]
            fate = Fate.DEAD_LETTERED
            if step.where == "contradicting-copy":
                # Every copy of a repeated header is checked: a contradicting first copy is
                # refused, so the envelope is fresh (its id is not expected to be applied).
                envelope = Envelope.wrap(self.probes[step.key], producer=PRODUCER)
            key, value, headers = _mutate(encode(envelope), step)
            planned = self._keyed(step, key, value, headers, fate, envelope)
            if key is None:
                planned.partition = partition_of(encode(envelope).key)
            return planned
        if isinstance(step, WrongPartition):
            envelope = self.envelopes[step.key, step.message]
            record = encode(envelope)
            planned = self._keyed(
                step, record.key, record.value, tuple(record.headers), Fate.DEAD_LETTERED, envelope
            )
            planned.partition = (planned.partition + step.shift) % TEST_PARTITIONS
            return planned
        if isinstance(step, UnreadableHeaderName):
            envelope = self.envelopes[step.key, step.message]
            record = encode(envelope)
            name = step.name.decode("utf-8", "surrogateescape")
            headers = (*record.headers, (name, step.value))
            return self._keyed(
                step, record.key, record.value, headers, Fate.DEAD_LETTERED, envelope
            )
        if isinstance(step, DeeplyNested):
            envelope = Envelope.wrap(self.probes[step.key], producer=PRODUCER)
            record = encode(envelope)
            # Written out by hand: json.dumps itself stops at Python's recursion limit.
            nested = b'{"deeper":' * step.depth + b"1" + b"}" * step.depth
            closing = b"}}" if step.in_payload else b"}"
            assert record.value.endswith(closing)
            value = record.value[: -len(closing)] + b',"unknown":' + nested + closing
            return self._keyed(
                step, record.key, value, tuple(record.headers), Fate.EITHER, envelope
            )
        key = self.probes[step.key].kafka_key().encode() if isinstance(step.key, int) else step.key
        planned = Planned(
            step, key, step.value, step.headers, step.partition, Fate.DEAD_LETTERED, None
        )
        if key is not None:
            planned.partition = partition_of(key)
        return planned

    def _keyed(
        self,
        step: Step,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        fate: Fate,
        envelope: Envelope[Any],
    ) -> Planned:
        partition = partition_of(key) if key is not None else 0
        return Planned(step, key, value, headers, partition, fate, envelope.message_id)


def _padded(value: bytes, size: int) -> bytes:
    assert value.endswith(PADDING_POINT) and size >= len(value)
    return value[:-1] + b" " * (size - len(value)) + PADDING_POINT


def _mutate(record: Any, step: Mutated) -> tuple[bytes | None, bytes, Headers]:
    key: bytes | None = record.key
    value: bytes = record.value
    headers: list[tuple[str, bytes | None]] = list(record.headers)
    if step.where == "value":
        outline = json.loads(value)
        *parents, last = step.what.split(".")
        holder = outline
        for part in parents:
            holder = holder[part]
        if step.to == DELETE:
            del holder[last]
        else:
            holder[last] = step.to
        value = json.dumps(outline).encode()
    elif step.where == "header":
        names = [name for name, _ in headers]
        if step.what in names:
            headers[names.index(step.what)] = (step.what, step.to)
        else:
            headers.append((step.what, step.to))
    elif step.where == "contradicting-copy":
        names = [name for name, _ in headers]
        headers.insert(names.index(step.what), (step.what, step.to))
    else:
        assert step.where == "key"
        key = step.to
        if key == record.key:
            key = None if key is None else key + b"!"
    return key, value, tuple(headers)


# --- the consumer under test and what it did ---------------------------------------------------


def add_fuzz_consumer(service: Service) -> MessageConsumer:
    """A consumer of the probes topic whose handler records each message it applies."""
    fuzz = MessageConsumer(service, Consumer(service.name, CONSUMER, (OPS_PROBES,)))

    @fuzz.handles(ProbeSent)
    async def record(tx: Transaction, envelope: Envelope[ProbeSent]) -> None:
        await tx.conn.execute(
            "INSERT INTO fuzz_applied (message_id, probe_id) VALUES ($1, $2)",
            envelope.message_id,
            envelope.payload.probe_id,
        )

    return fuzz


async def create_applied_table(service: Service) -> None:
    # No unique constraint: a message applied twice must show as two rows, not as an error.
    await service.pool.execute("CREATE TABLE fuzz_applied (message_id uuid, probe_id uuid)")


def dead_lettered_metric(service: Service) -> float:
    name = f"{service.name}.{CONSUMER}"
    return (
        service.metrics.registry.get_sample_value(
            "packline_messages_dead_lettered_total", {"consumer": name}
        )
        or 0.0
    )


async def check_outcome(
    service: Service,
    planned: Sequence[Planned],
    letters: Sequence[DeadLetter],
    topic: str,
    unpublished: list[Planned],
) -> Counter[str]:
    """Each planned record met its fate; the failure names the records that did not. A record
    set aside in the service's database whose reference is not on the topic is added to
    ``unpublished`` (it is kept, with its reason, but no one reading the topic sees it)."""
    consumer = f"{service.name}.{CONSUMER}"
    ours = {(p.partition, p.offset): p for p in planned}
    origins: Counter[tuple[int, int]] = Counter()
    by_origin: dict[tuple[int, int], DeadLetter] = {}
    for seen in letters:
        if seen.header("consumer") != consumer:
            continue
        origin_topic, partition, offset = seen.origin
        if origin_topic == topic and (partition, offset) in ours:
            origins[partition, offset] += 1
            by_origin[partition, offset] = seen
    ids = [p.message_id for p in planned if p.message_id is not None]
    rows = Counter(
        {
            row["message_id"]: row["count"]
            for row in await service.pool.fetch(
                "SELECT message_id, count(*) FROM fuzz_applied WHERE message_id = ANY($1::uuid[])"
                " GROUP BY message_id",
                ids,
            )
        }
    )
    # Set aside in the database only: its reference could not reach the topic (yet).
    stored_only = {
        (row["kafka_partition"], row["kafka_offset"]): row["reason"]
        for row in await service.pool.fetch(
            "SELECT kafka_partition, kafka_offset, reason FROM dead_letter_store"
            " WHERE consumer = $1 AND topic = $2 AND published_at IS NULL",
            consumer,
            topic,
        )
        if (row["kafka_partition"], row["kafka_offset"]) in ours
    }
    wrong: list[str] = []
    resolved: Counter[str] = Counter()  # what became of the records the contract leaves open
    for once in [origin for origin, count in origins.items() if count > 1]:
        wrong.append(f"{ours[once]!r}: dead-lettered {origins[once]} times")
    must_apply = {p.message_id for p in planned if p.fate is Fate.APPLIED}
    for p in planned:
        letter: DeadLetter | None = by_origin.get((p.partition, p.offset))
        if letter is None and (p.partition, p.offset) in stored_only:
            # Every reference is writable now: one that is not on the topic is a failure.
            wrong.append(f"{p!r}: kept in the database, its reference not on the topic")
            unpublished.append(p)
            letter = _STORED_ONLY
        applied = rows[p.message_id] if p.message_id is not None else 0
        if p.fate is Fate.EITHER:
            if (letter is None) == (applied != 1) or applied > 1:
                wrong.append(f"{p!r}: applied {applied} times, dead-lettered: {letter is not None}")
            if applied:
                must_apply.add(p.message_id)
            resolved[f"{_open_case(p.step)}: {'applied' if applied else 'dead-lettered'}"] += 1
        elif p.fate is Fate.DEAD_LETTERED:
            if letter is None:
                wrong.append(f"{p!r}: not dead-lettered")
        elif letter is not None:
            reason = stored_only.get((p.partition, p.offset)) or letter.header("reason")
            wrong.append(f"{p!r}: dead-lettered: {reason}")
        if letter is not None and letter is not _STORED_ONLY:
            wrong.extend(f"{p!r}: {problem}" for problem in await _kept(service, p, letter))
    for message_id in {p.message_id for p in planned if p.message_id is not None}:
        wanted = 1 if message_id in must_apply else 0
        if rows[message_id] != wanted:
            shown = [p for p in planned if p.message_id == message_id]
            wrong.append(
                f"message {message_id} applied {rows[message_id]} times, not {wanted}: {shown}"
            )
    assert not wrong, "\n".join(["the consumer edge broke its promise:", *wrong])
    return resolved


def _open_case(step: Step) -> str:
    if isinstance(step, DeeplyNested):
        return (
            f"unknown field {step.depth} deep in the {'payload' if step.in_payload else 'envelope'}"
        )
    assert isinstance(step, Mutated)
    return f"contradicting first copy of header {step.what}"


async def _kept(service: Service, planned: Planned, letter: DeadLetter) -> list[str]:
    """What of the record its dead letter lost (nothing, when all is well)."""
    problems = []
    if not letter.header("reason").strip():
        problems.append("dead letter without a reason")
    if letter.stored_id is not None:
        row = await service.pool.fetchrow(
            "SELECT kafka_key, value, header_names, header_values FROM dead_letter_store"
            " WHERE id = $1",
            UUID(letter.stored_id),
        )
        if row is None:
            return [*problems, f"stored dead letter {letter.stored_id} is not in the database"]
        names = [name.encode("utf-8", "surrogateescape") for name, _ in planned.headers]
        if (row["kafka_key"], row["value"]) != (planned.key, planned.value):
            problems.append("the stored dead letter's key or value differs from the record's")
        if (list(row["header_names"]), list(row["header_values"])) != (
            names,
            [value for _, value in planned.headers],
        ):
            problems.append("the stored dead letter's headers differ from the record's")
        return problems
    if (letter.key, letter.value) != (planned.key, planned.value):
        problems.append("the dead letter's key or value differs from the record's")
    # A record's own headers named dead-letter-* are not kept: on the dead-letter topic they
    # would pass for the consumer's verdict.
    readable, unreadable = [], []
    for name, value in planned.headers:
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            unreadable.append(name.encode("utf-8", "surrogateescape") + b"=" + (value or b""))
        else:
            if not name.startswith(PREFIX):
                readable.append((name, value))
    kept = [(name, value) for name, value in letter.headers if not name.startswith(PREFIX)]
    if kept != readable:
        problems.append(f"the dead letter's headers {kept!r} are not the record's {readable!r}")
    if [value for name, value in letter.headers if name == UNREADABLE_HEADER] != unreadable:
        problems.append("a header name that is not UTF-8 was not kept with its value")
    return problems


_STORED_ONLY = DeadLetter(-1, -1, None, None, ())


class DeadLetterReader:
    """Reads the service's dead-letter topic as it grows, from its beginning."""

    def __init__(self, infrastructure: Infrastructure, topic: str) -> None:
        self.topic = topic
        self.bootstrap = infrastructure.kafka_bootstrap
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=infrastructure.kafka_bootstrap,
            enable_auto_commit=False,
            fetch_max_wait_ms=50,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        self.partitions: list[TopicPartition] = []

    async def start(self) -> None:
        await self.consumer.start()
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            (described,) = await admin.describe_topics([self.topic])
        finally:
            await admin.close()
        self.partitions = [
            TopicPartition(self.topic, p["partition"]) for p in described["partitions"]
        ]
        assert self.partitions, f"no dead-letter topic {self.topic}"
        self.consumer.assign(self.partitions)
        await self.consumer.seek_to_beginning(*self.partitions)

    async def stop(self) -> None:
        await self.consumer.stop()

    async def new(self) -> list[DeadLetter]:
        """The dead letters published since the last call (all of them are on the broker: a
        consumer's dead-letter publish is acknowledged before its batch returns)."""
        ends = await self.consumer.end_offsets(self.partitions)
        letters: list[DeadLetter] = []
        deadline = time.monotonic() + 30
        while [p for p in self.partitions if await self.consumer.position(p) < ends[p]]:
            assert time.monotonic() < deadline, "the dead-letter topic could not be read"
            for records in (await self.consumer.getmany(timeout_ms=200)).values():
                letters.extend(
                    DeadLetter(r.partition, r.offset, r.key, r.value, tuple(r.headers))
                    for r in records
                )
        return letters


def _consumer_record(topic: str, planned: Planned) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic,
        planned.partition,
        planned.offset,
        int(time.time() * 1000),
        0,
        planned.key,
        planned.value,
        None,
        len(planned.key or b""),
        len(planned.value or b""),
        planned.headers,
    )


STALL_SECONDS = 90  # one batch (through the broker: produced, applied and checked) at most


def _run_example(
    loop: asyncio.AbstractEventLoop, example: Coroutine[Any, Any, None], steps: list[Step]
) -> None:
    """Run one example on the service's event loop (hypothesis drives it from a thread)."""
    future = asyncio.run_coroutine_threadsafe(example, loop)
    try:
        future.result(timeout=STALL_SECONDS)
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise AssertionError(
            f"a batch was not done within {STALL_SECONDS} s (a stalled consumer?): {steps}"
        ) from None


def _tally(planned: Sequence[Planned]) -> Iterator[str]:
    yield from (type(p.step).__name__ + "/" + p.fate.name for p in planned)


# --- the property, in the consumer's own process ---------------------------------------------


# Hypothesis runs in a worker thread while the service runs in the event loop, whose clients
# (aiokafka) use the random module: that is not the strategies' doing.
_SERVICE_USES_RANDOM = pytest.mark.filterwarnings(
    "ignore::hypothesis.errors.HypothesisDeprecationWarning"
)
# The strategies' own repr is long (many choices); a failure names its records itself.
_LONG_REPRS = pytest.mark.filterwarnings("ignore:Generating overly large repr")


@_SERVICE_USES_RANDOM
@_LONG_REPRS
@pytest.mark.timeout(300)  # room to shrink a failing batch to its smallest form
async def test_every_record_is_applied_once_or_dead_lettered_with_a_reason(
    start_service: StartService, infrastructure: Infrastructure
) -> None:
    calendar = await start_service("calendar")
    await create_applied_table(calendar)
    fuzz = add_fuzz_consumer(calendar)  # not subscribed: batches are handed to it directly
    topic = calendar.settings.topic(OPS_PROBES)
    reader = DeadLetterReader(
        infrastructure, calendar.settings.topic(dead_letter_topic("calendar"))
    )
    offsets = itertools.count()  # unique across examples: a dead letter names its origin
    tried: Counter[str] = Counter()
    open_cases: Counter[str] = Counter()
    unpublished: list[Planned] = []
    loop = asyncio.get_running_loop()

    async def run(step_list: list[Step]) -> None:
        planned = Batch().plan(step_list)
        for p in planned:
            p.offset = next(offsets)
        before = dead_lettered_metric(calendar)
        await fuzz.process(
            [_consumer_record(topic, p) for p in planned], lambda _: set(range(TEST_PARTITIONS))
        )
        tried.update(_tally(planned))
        letters = await reader.new()
        open_cases.update(await check_outcome(calendar, planned, letters, topic, unpublished))
        mine = [letter for letter in letters if letter.header("consumer") == fuzz.name]
        assert dead_lettered_metric(calendar) - before == len(mine)

    @settings(
        max_examples=200,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.lists(steps, min_size=1, max_size=30))
    def every_batch(step_list: list[Step]) -> None:
        _run_example(loop, run(step_list), step_list)

    try:
        await reader.start()
        await asyncio.to_thread(every_batch)
    finally:
        await reader.stop()
        print(
            f"consumer edge fuzz: {sum(tried.values())} records tried:", dict(sorted(tried.items()))
        )
        print("records the contract leaves open:", dict(sorted(open_cases.items())))
        print(f"kept in the database, reference not on the topic: {unpublished}")


# --- what the fuzz found: the smallest records that broke a promise, kept as regressions ---------
# A repeated header whose first copy contradicted the value was applied; a record with neither key
# nor value, and a large one without a short key, got a reference no producer could write.


async def _one_record(
    start_service: StartService,
    infrastructure: Infrastructure,
    key: bytes | None,
    value: bytes | None,
    headers: Headers = (),
) -> tuple[Service, list[DeadLetter], int]:
    """Hand one record to a consumer of a running calendar: its dead letters on the topic, and
    how many rows it applied."""
    calendar = await start_service("calendar")
    await create_applied_table(calendar)
    fuzz = add_fuzz_consumer(calendar)
    topic = calendar.settings.topic(OPS_PROBES)
    reader = DeadLetterReader(
        infrastructure, calendar.settings.topic(dead_letter_topic("calendar"))
    )
    try:
        await reader.start()
        partition = partition_of(key) if key is not None else 0
        planned = Planned(
            Raw(key, value, headers, partition),
            key,
            value,
            headers,
            partition,
            Fate.DEAD_LETTERED,
            None,
            0,
        )
        await fuzz.process(
            [_consumer_record(topic, planned)], lambda _: set(range(TEST_PARTITIONS))
        )
        letters = [
            letter for letter in await reader.new() if letter.header("consumer") == fuzz.name
        ]
    finally:
        await reader.stop()
    applied: int = await calendar.pool.fetchval("SELECT count(*) FROM fuzz_applied")
    return calendar, letters, applied


async def test_a_repeated_header_that_contradicts_the_value_is_refused(
    start_service: StartService, infrastructure: Infrastructure
) -> None:
    probe = ProbeSent(probe_id=uuid4(), sent_by="fuzz", sent_at=datetime.now(UTC))
    record = encode(Envelope.wrap(probe, producer=PRODUCER))
    headers = (("message-type", b"BookAppointment"), *record.headers)  # then the true one

    _, letters, applied = await _one_record(
        start_service, infrastructure, record.key, record.value, headers
    )

    assert applied == 0
    assert len(letters) == 1
    assert "header message-type" in letters[0].header("reason")


async def test_a_record_with_neither_key_nor_value_is_on_the_dead_letter_topic(
    start_service: StartService, infrastructure: Infrastructure
) -> None:
    calendar, letters, _ = await _one_record(start_service, infrastructure, None, None)

    # Dead letters are sent at least once: a publish that timed out on a loaded machine may have
    # landed, and the record is then kept and its reference sent too. Each says why.
    assert letters, "no dead letter"
    assert all("value" in letter.header("reason") for letter in letters)
    assert len({letter.stored_id for letter in letters} - {None}) <= 1
    assert await deadletters.publish_stored(calendar) == 0


@pytest.mark.parametrize("key", [None, b"k" * 1025], ids=["no key", "a key over 1024 bytes"])
async def test_a_large_record_without_a_short_key_has_its_reference_on_the_topic(
    start_service: StartService, infrastructure: Infrastructure, key: bytes | None
) -> None:
    value = b"x" * NEAR_BROKER_LIMIT
    calendar, letters, _ = await _one_record(start_service, infrastructure, key, value)

    # One reference to one stored record. Dead letters are sent at least once: a publish that
    # timed out on a loaded machine may have landed and is sent again, naming the same record.
    assert letters, "no dead letter"
    assert {letter.stored_id for letter in letters} == {letters[0].stored_id} != {None}
    assert await deadletters.publish_stored(calendar) == 0


# --- the same through the broker, to the running service ---------------------------------------


def _kcat_can_send(step: Step) -> bool:
    """kcat reads one line per record (key before a tab) and takes headers as name=value
    arguments: such records must hold no line feed, tab, NUL or '=' in those places."""
    if isinstance(step, UnreadableHeaderName):
        return b"=" not in step.name and b"\x00" not in step.name + (step.value or b"x")
    if isinstance(step, Raw):
        names = [name.encode("utf-8", "surrogateescape") for name, _ in step.headers]
        if all(not _not_utf8(name) for name in names):
            return True
        key = step.key if isinstance(step.key, bytes) else b"k"
        return (
            bool(step.value)
            and b"\n" not in (step.value or b"")
            and b"\x00" not in (step.value or b"")
            and key != b""
            and not any(c in key for c in (b"\t", b"\n", b"\x00"))
            and all(b"=" not in n and b"\x00" not in n and n for n in names)
            and all(v is not None and b"\x00" not in v for _, v in step.headers)
        )
    return True


hostile_steps = _weighted(
    (5, mutated),
    (1, wrong_partition),
    (1, st.builds(UnreadableHeaderName, keys, messages, not_utf8, st.binary(max_size=16))),
    (2, raw),
    (1, oversized),
).filter(_kcat_can_send)
valid_steps = st.builds(Valid, keys, messages, st.booleans(), noise_headers)
broker_batches = st.tuples(
    st.lists(hostile_steps, min_size=100, max_size=100),
    st.lists(valid_steps, min_size=30, max_size=30),
).flatmap(lambda lists: st.permutations([*lists[0], *lists[1]]))


async def _produce(
    producer: AIOKafkaProducer, infrastructure: Infrastructure, topic: str, planned: Planned
) -> None:
    readable = True
    for name, _ in planned.headers:
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            readable = False
    if readable and planned.key is None and planned.value is None:
        # aiokafka's send() refuses a record with neither key nor value; other clients send it.
        batch = producer.create_batch()
        batch.append(key=None, value=None, timestamp=None, headers=list(planned.headers))
        planned.offset = (
            await (await producer.send_batch(batch, topic, partition=planned.partition))
        ).offset
        return
    if readable:
        sent = await producer.send_and_wait(
            topic,
            planned.value,
            planned.key,
            partition=planned.partition,
            headers=list(planned.headers),
        )
        planned.offset = sent.offset
        return
    # Only kcat (librdkafka) writes a header name that is not UTF-8.
    headers = [
        (name.encode("utf-8", "surrogateescape"), value or b"") for name, value in planned.headers
    ]
    await kcat(
        infrastructure,
        topic,
        planned.value or b"",
        key=planned.key,
        headers=headers,
        partition=planned.partition,
    )
    planned.offset = -1  # kcat does not say: read from the partition's end offset


@_SERVICE_USES_RANDOM
@_LONG_REPRS
@pytest.mark.timeout(300)
async def test_through_the_broker_every_hostile_record_is_set_aside_and_no_partition_stays_behind(
    start_service: StartService, infrastructure: Infrastructure
) -> None:
    holder: list[MessageConsumer] = []

    def subscribe_fuzz_consumer(service: Service) -> None:
        fuzz = add_fuzz_consumer(service)
        service.consumers.append(fuzz)
        holder.append(fuzz)

    calendar = await start_service("calendar", customize=subscribe_fuzz_consumer)
    await create_applied_table(calendar)
    topic = calendar.settings.topic(OPS_PROBES)
    dead_letter_topic_name = calendar.settings.topic(dead_letter_topic("calendar"))
    producer = AIOKafkaProducer(
        bootstrap_servers=infrastructure.kafka_bootstrap, max_request_size=2_000_000, acks="all"
    )
    ends = AIOKafkaConsumer(bootstrap_servers=infrastructure.kafka_bootstrap)
    await producer.start()
    await ends.start()
    loop = asyncio.get_running_loop()
    tried: Counter[str] = Counter()
    open_cases: Counter[str] = Counter()
    unpublished: list[Planned] = []

    async def run(step_list: list[Step]) -> None:
        planned = Batch().plan(step_list)
        for p in planned:
            await _produce(producer, infrastructure, topic, p)
            if p.offset < 0:  # sent by kcat: it is the last record of its partition
                partition = TopicPartition(topic, p.partition)
                p.offset = (await ends.end_offsets([partition]))[partition] - 1
        tried.update(_tally(planned))
        applied = [p.message_id for p in planned if p.fate is Fate.APPLIED]
        hostile = [p for p in planned if p.fate is Fate.DEAD_LETTERED]

        async def all_applied() -> bool:
            count = await calendar.pool.fetchval(
                "SELECT count(DISTINCT message_id) FROM fuzz_applied"
                " WHERE message_id = ANY($1::uuid[])",
                applied,
            )
            return bool(count == len(set(applied)))

        await eventually(all_applied, within=60, what="every valid probe to be applied")
        await caught_up(
            infrastructure.kafka_bootstrap,
            calendar.settings.group_id("calendar", CONSUMER),
            [topic],
            within=60,
        )

        missing: list[Planned] = []

        async def all_set_aside() -> list[DeadLetter] | None:
            letters = await deadletters.read_all(
                infrastructure.kafka_bootstrap, dead_letter_topic_name
            )
            found = {
                letter.origin[1:]
                for letter in letters
                if letter.header("consumer") == holder[0].name and letter.origin[0] == topic
            }
            stored = {
                (row["kafka_partition"], row["kafka_offset"])
                for row in await calendar.pool.fetch(
                    "SELECT kafka_partition, kafka_offset FROM dead_letter_store"
                    " WHERE consumer = $1",
                    holder[0].name,
                )
            }
            missing[:] = [p for p in hostile if (p.partition, p.offset) not in found | stored]
            return None if missing else letters

        letters = await eventually(
            all_set_aside,
            within=60,
            what="every hostile record set aside",
            describe=lambda: f"not set aside: {missing}",
        )
        open_cases.update(await check_outcome(calendar, planned, letters, topic, unpublished))

    @settings(
        max_examples=2,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # through the broker: no long shrinking
        suppress_health_check=list(HealthCheck),
    )
    @given(broker_batches)
    def every_batch(step_list: list[Step]) -> None:
        _run_example(loop, run(step_list), step_list)

    try:
        await asyncio.to_thread(every_batch)
    finally:
        await producer.stop()
        await ends.stop()
        print(
            f"through the broker: {sum(tried.values())} records tried:", dict(sorted(tried.items()))
        )
        print("records the contract leaves open:", dict(sorted(open_cases.items())))
        print(f"kept in the database, reference not on the topic: {unpublished}")
    name = holder[0].name
    failures = calendar.metrics.registry
    assert failures.get_sample_value(
        "packline_consumer_batch_failures_total", {"consumer": name}
    ) in (None, 0.0)
    assert failures.get_sample_value(
        "packline_consumer_fetch_failures_total", {"consumer": name}
    ) in (None, 0.0)
