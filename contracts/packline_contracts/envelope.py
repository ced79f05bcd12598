"""The envelope every Packline message travels in, and its encoding on Kafka.

On the wire a message is one Kafka record:

- **key**: the patient id, for every message about a patient (so one patient's messages stay in
  order); for catalogue messages (fees, packages, practitioners, locations) the id of the thing.
- **value**: UTF-8 JSON of the whole envelope. It is self-contained and authoritative::

      {"message_id": "...", "message_type": "BookAppointment", "schema_version": 1,
       "occurred_at": "2026-03-01T09:00:00Z", "correlation_id": "...", "causation_id": null,
       "producer": "online-bookings", "patient_id": "p-17", "payload": {...}}

- **headers**: copies of the envelope's metadata (``message-id``, ``message-type``,
  ``schema-version``, ``correlation-id``, ``causation-id``, ``producer``, ``content-type``), so
  tools and routers can read them without parsing the value. When a header is present it must
  agree with the value, or the message is rejected.

Validation is strict (a number sent as a string is an error; times need a timezone) except that
unknown extra fields are ignored, so a producer may add optional fields before consumers know them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any, ClassVar, Generic, Literal, TypeVar, cast
from uuid import UUID, uuid4

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from packline_contracts.topics import Topic
from packline_contracts.types import Instant, PatientId, Value

MAX_MESSAGE_BYTES = 256 * 1024
CONTENT_TYPE = "application/json"

Kind = Literal["command", "event"]


class Message(Value):
    """The payload of a message. Each concrete class is one message type."""

    MESSAGE_TYPE: ClassVar[str]
    SCHEMA_VERSION: ClassVar[int] = 1
    # True on an intermediate base class that groups message types but is not one itself.
    ABSTRACT: ClassVar[bool] = False
    TOPIC: ClassVar[Topic]
    KIND: ClassVar[Kind]

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if hasattr(cls, "TOPIC") and not cls.__dict__.get("ABSTRACT", False):
            cls.MESSAGE_TYPE = cls.__name__
            previous = MESSAGE_TYPES.setdefault(cls.MESSAGE_TYPE, cls)
            if previous is not cls:
                raise TypeError(f"two message types are named {cls.MESSAGE_TYPE}")

    def kafka_key(self) -> str:
        """The Kafka key: what this message must stay in order with."""
        raise NotImplementedError

    def about_patient(self) -> str | None:
        return None


class PatientMessage(Message):
    """A message about one patient: keyed by the patient id."""

    patient_id: PatientId

    def kafka_key(self) -> str:
        return self.patient_id

    def about_patient(self) -> str | None:
        return self.patient_id


MESSAGE_TYPES: dict[str, type[Message]] = {}

M = TypeVar("M", bound=Message)


class Envelope(BaseModel, Generic[M]):
    """A message with the metadata every consumer relies on."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    message_id: UUID = Field(description="Unique per message; consumers deduplicate on it.")
    message_type: str = Field(min_length=1, description="Which payload this is.")
    schema_version: int = Field(ge=1, description="The payload's schema version.")
    occurred_at: Instant = Field(description="When it happened (timezone required).")
    correlation_id: UUID = Field(description="Shared by every message of one business flow.")
    causation_id: UUID | None = Field(
        default=None, description="The message_id of the message that caused this one."
    )
    producer: str = Field(min_length=1, max_length=128, description="The service that sent it.")
    patient_id: PatientId | None = Field(
        default=None,
        description="The patient it is about (the payload's patient_id), required for a "
        "message about a patient; null for catalogue and directory messages.",
    )
    payload: M

    @classmethod
    def wrap(
        cls,
        payload: M,
        *,
        producer: str,
        message_id: UUID | None = None,
        correlation_id: UUID | None = None,
        causation: Envelope[Any] | None = None,
        occurred_at: datetime | None = None,
    ) -> Envelope[M]:
        """Put ``payload`` in an envelope. A message caused by another (``causation``) inherits
        its correlation id; otherwise it starts a new flow."""
        message_id = message_id or uuid4()
        if correlation_id is None:
            correlation_id = causation.correlation_id if causation else message_id
        return envelope_model(type(payload))(
            message_id=message_id,
            message_type=payload.MESSAGE_TYPE,
            schema_version=payload.SCHEMA_VERSION,
            occurred_at=occurred_at or datetime.now(UTC),
            correlation_id=correlation_id,
            causation_id=causation.message_id if causation else None,
            producer=producer,
            patient_id=payload.about_patient(),
            payload=payload,
        )

    @property
    def key(self) -> str:
        return self.payload.kafka_key()


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class InvalidMessage(ValueError):
    """A message that can never be applied: bad JSON, wrong shape, unknown type, bad value."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("; ".join(str(error) for error in errors))

    @classmethod
    def single(cls, field: str, message: str) -> InvalidMessage:
        return cls([FieldError(field, message)])


class UnknownMessageType(InvalidMessage):
    pass


@cache
def envelope_model(message_class: type[Message]) -> type[Envelope[Any]]:
    """The envelope of one message type, with ``message_type`` pinned (for validation and for
    the JSON Schema of that message)."""
    name = message_class.MESSAGE_TYPE
    pinned: Any = Literal[name]  # a Literal built at run time: opaque to type checkers
    # What decode enforces, said by the schema too: a message about a patient carries the
    # patient's id (the payload's), any other message none.
    patient: Any = (
        (PatientId, Field(description="The patient it is about: the payload's patient_id."))
        if issubclass(message_class, PatientMessage)
        else (None, Field(default=None, description="Always null: not about one patient."))
    )
    newest = message_class.SCHEMA_VERSION
    model = create_model(
        f"{name}Message",
        __base__=Envelope[message_class],  # type: ignore[valid-type]
        message_type=(pinned, Field(description=f"Always {name}.")),
        schema_version=(
            int,
            Field(
                ge=1,
                le=newest,
                description=f"The payload's schema version: at most {newest}, the newest this "
                "contract knows (a reader refuses a newer one).",
            ),
        ),
        patient_id=patient,
    )
    model.__doc__ = message_class.__doc__
    return cast(type[Envelope[Any]], model)


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    """What to hand to a Kafka producer."""

    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


def encode(envelope: Envelope[Any]) -> KafkaRecord:
    value = envelope.model_dump_json().encode()
    if len(value) > MAX_MESSAGE_BYTES:
        raise InvalidMessage.single(
            "payload", f"{len(value)} bytes; the limit is {MAX_MESSAGE_BYTES}"
        )
    return KafkaRecord(key=envelope.key.encode(), value=value, headers=headers_of(envelope))


def headers_of(envelope: Envelope[Any]) -> list[tuple[str, bytes]]:
    return [(name, value.encode()) for name, value in headers_of_text(envelope)]


def headers_of_text(envelope: Envelope[Any]) -> list[tuple[str, str]]:
    headers = [
        ("message-id", str(envelope.message_id)),
        ("message-type", envelope.message_type),
        ("schema-version", str(envelope.schema_version)),
        ("correlation-id", str(envelope.correlation_id)),
        ("producer", envelope.producer),
        ("content-type", CONTENT_TYPE),
    ]
    if envelope.causation_id is not None:
        headers.append(("causation-id", str(envelope.causation_id)))
    return headers


def decode(
    value: bytes | None,
    headers: list[tuple[str, bytes | None]] | tuple[tuple[str, bytes | None], ...] = (),
    key: bytes | None = None,
    *,
    require_key: bool = False,
) -> Envelope[Any]:
    """Validate a Kafka record into an envelope; raise :class:`InvalidMessage` naming the field.

    With ``require_key`` (Packline's consumers) a record without a key is refused: it would have
    landed on any partition, out of order with the rest of its patient's messages. Every header
    that is present must agree with the value; a schema version newer than this reader knows is
    refused rather than read as if it were an old one."""
    if value is None:
        raise InvalidMessage.single("value", "the record has no value")
    if len(value) > MAX_MESSAGE_BYTES:
        raise InvalidMessage.single(
            "value", f"{len(value)} bytes; the limit is {MAX_MESSAGE_BYTES}"
        )
    header_values = _readable_headers(headers)
    envelope = _as_its_header_says(value, header_values)
    if envelope is not None:  # the usual case: the value is parsed once
        return _checked(envelope, header_values, key, require_key)
    try:
        outline = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidMessage.single("value", f"not JSON: {error}") from None
    except RecursionError:
        raise InvalidMessage.single("value", "JSON nested too deeply") from None
    if not isinstance(outline, dict):
        raise InvalidMessage.single("value", "must be a JSON object (the envelope)")
    message_type = outline.get("message_type")
    if not isinstance(message_type, str):
        raise InvalidMessage.single("message_type", "missing or not a string")
    message_class = MESSAGE_TYPES.get(message_type)
    if message_class is None:
        raise UnknownMessageType.single("message_type", f"unknown message type {message_type!r}")
    version = outline.get("schema_version")
    if isinstance(version, int) and version > message_class.SCHEMA_VERSION:
        raise InvalidMessage.single(
            "schema_version",
            f"{version} is unknown; {message_type} is read up to version "
            f"{message_class.SCHEMA_VERSION}",
        )
    try:
        envelope = envelope_model(message_class).model_validate_json(value, strict=True)
    except ValidationError as error:
        raise InvalidMessage(
            [
                FieldError(
                    ".".join(str(part) for part in problem["loc"]) or "value", problem["msg"]
                )
                for problem in error.errors()
            ]
        ) from None
    except RecursionError:
        raise InvalidMessage.single("value", "JSON nested too deeply") from None
    return _checked(envelope, header_values, key, require_key)


def _as_its_header_says(value: bytes, headers: list[tuple[str, str]]) -> Envelope[Any] | None:
    """The value validated as the type its ``message-type`` header names, when it is one this
    reader knows, in its schema version: one parse. None for anything else, which the careful
    path (an outline first, to name what is wrong) then reads."""
    said = [text for name, text in headers if name == "message-type"]
    message_class = MESSAGE_TYPES.get(said[0]) if len(said) == 1 else None
    if message_class is None:
        return None
    try:
        envelope = envelope_model(message_class).model_validate_json(value, strict=True)
    except (ValidationError, RecursionError):
        return None
    if (
        envelope.message_type != message_class.MESSAGE_TYPE
        or envelope.schema_version > message_class.SCHEMA_VERSION
    ):
        return None
    return envelope


def _checked(
    envelope: Envelope[Any],
    headers: list[tuple[str, str]],
    key: bytes | None,
    require_key: bool,
) -> Envelope[Any]:
    if require_key and key is None:
        raise InvalidMessage.single(
            "key", f"missing; this message must be keyed by {envelope.key!r}"
        )
    _check_agreement(envelope, headers, key)
    return envelope


def _readable_headers(
    headers: list[tuple[str, bytes | None]] | tuple[tuple[str, bytes | None], ...],
) -> list[tuple[str, str]]:
    """Packline's headers as text, every copy of each (a repeated header is checked copy by
    copy: a router may read the first, a consumer the last). A name that is not UTF-8, or a
    header of ours without a value or with one that is not UTF-8, is refused naming it."""
    readable: list[tuple[str, str]] = []
    for name, raw in headers:
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            shown = name.encode("utf-8", "surrogateescape")
            raise InvalidMessage.single("headers", f"header name {shown!r} is not UTF-8") from None
        if name not in CHECKED_HEADERS:
            continue
        if raw is None:
            raise InvalidMessage.single(f"header {name}", "has no value (null)")
        try:
            readable.append((name, raw.decode("utf-8")))
        except UnicodeDecodeError:
            raise InvalidMessage.single(f"header {name}", f"{raw[:64]!r} is not UTF-8") from None
    return readable


# The headers Packline writes (see headers_of); each must agree with the value when present.
CHECKED_HEADERS = frozenset(
    {
        "message-id",
        "message-type",
        "schema-version",
        "correlation-id",
        "causation-id",
        "producer",
        "content-type",
    }
)


def _check_agreement(
    envelope: Envelope[Any], headers: list[tuple[str, str]], key: bytes | None
) -> None:
    if envelope.patient_id != envelope.payload.about_patient():
        raise InvalidMessage.single("patient_id", "differs from the payload's patient_id")
    expected = dict(headers_of_text(envelope))
    for name, said in headers:
        if name == "content-type":
            if said.split(";")[0].strip().lower() != CONTENT_TYPE:
                raise InvalidMessage.single(
                    f"header {name}", f"says {said!r}; must be {CONTENT_TYPE}"
                )
            continue
        wanted = expected.get(name)
        if said != wanted:
            raise InvalidMessage.single(
                f"header {name}",
                f"says {said!r}, value says {wanted!r}"
                if wanted
                else f"says {said!r}, value has none",
            )
    if key is not None and key.decode(errors="replace") != envelope.key:
        raise InvalidMessage.single(
            "key", f"is {key!r}; this message must be keyed by {envelope.key!r}"
        )
