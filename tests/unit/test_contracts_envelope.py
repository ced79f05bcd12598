"""The envelope at the edge: every message round-trips; bad input is rejected naming the field."""

from __future__ import annotations

import json
from typing import Any

import pytest
from packline_contracts.appointments import BookAppointment
from packline_contracts.envelope import (
    MAX_MESSAGE_BYTES,
    Envelope,
    InvalidMessage,
    UnknownMessageType,
    decode,
    encode,
)
from packline_contracts.examples import EXAMPLES, PATIENT, example_envelope
from packline_contracts.ids import derived_id
from packline_contracts.registry import MESSAGE_TYPES
from packline_contracts.types import Balance, Validity


@pytest.mark.parametrize("message_type", sorted(MESSAGE_TYPES))
def test_every_message_round_trips_through_bytes(message_type: str) -> None:
    envelope = example_envelope(message_type)
    record = encode(envelope)
    # As a consumer receives them: a tuple of (name, value) pairs.
    assert decode(record.value, tuple(record.headers), record.key) == envelope
    assert dict(record.headers)["message-type"] == message_type.encode()


def booking() -> dict[str, Any]:
    return json.loads(encode(example_envelope("BookAppointment")).value)


def rejected(body: dict[str, Any] | bytes) -> str:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(InvalidMessage) as raised:
        decode(raw)
    return str(raised.value)


def test_wrong_type_names_the_field() -> None:
    body = booking()
    body["payload"]["duration_minutes"] = "60"
    assert "payload.duration_minutes" in rejected(body)


def test_missing_field_names_the_field() -> None:
    body = booking()
    del body["payload"]["practitioner_id"]
    assert "payload.practitioner_id: Field required" in rejected(body)


def test_unknown_message_type_is_its_own_error() -> None:
    body = booking()
    body["message_type"] = "BookTaxi"
    with pytest.raises(UnknownMessageType, match="unknown message type 'BookTaxi'"):
        decode(json.dumps(body).encode())


def test_naive_datetime_is_rejected() -> None:
    body = booking()
    body["payload"]["starts_at"] = "2026-03-10T10:00:00"
    assert "payload.starts_at: Input should have timezone info" in rejected(body)
    body = booking()
    body["occurred_at"] = "2026-03-10T10:00:00"
    assert "occurred_at" in rejected(body)


def test_negative_or_zero_duration_is_rejected() -> None:
    for minutes in (-30, 0):
        body = booking()
        body["payload"]["duration_minutes"] = minutes
        assert "payload.duration_minutes: Input should be greater than 0" in rejected(body)


def test_empty_ids_are_rejected() -> None:
    body = booking()
    body["payload"]["patient_id"] = ""
    body["patient_id"] = ""
    message = rejected(body)
    assert "payload.patient_id" in message and "patient_id" in message
    body = booking()
    body["payload"]["fee_ids"] = []
    assert "payload.fee_ids" in rejected(body)


def test_not_json_and_not_an_object_are_rejected() -> None:
    assert "not JSON" in rejected(b"{not json")
    assert "must be a JSON object" in rejected(b"[1, 2]")
    with pytest.raises(InvalidMessage, match="no value"):
        decode(None)


def test_oversized_message_is_rejected() -> None:
    assert "the limit is" in rejected(b" " * (MAX_MESSAGE_BYTES + 1))


def test_headers_and_key_must_agree_with_the_value() -> None:
    record = encode(example_envelope("BookAppointment"))
    lying = tuple(
        (name, b"BookTaxi" if name == "message-type" else value) for name, value in record.headers
    )
    with pytest.raises(InvalidMessage, match="header message-type"):
        decode(record.value, lying, record.key)
    with pytest.raises(InvalidMessage, match="must be keyed by"):
        decode(record.value, tuple(record.headers), b"another-patient")


def test_envelope_patient_must_match_the_payload() -> None:
    body = booking()
    body["patient_id"] = "someone-else"
    assert "differs from the payload" in rejected(body)


def test_unknown_extra_fields_are_tolerated() -> None:
    body = booking()
    body["payload"]["room"] = "3B"
    body["trace_flags"] = 1
    envelope = decode(json.dumps(body).encode())
    assert isinstance(envelope.payload, BookAppointment)


def test_wrap_links_causation_and_correlation() -> None:
    first = example_envelope("BookAppointment")
    answer = Envelope.wrap(EXAMPLES["AppointmentBooked"], producer="calendar", causation=first)
    assert answer.causation_id == first.message_id
    assert answer.correlation_id == first.correlation_id
    assert answer.patient_id == PATIENT == answer.key


def test_catalogue_messages_are_keyed_by_the_thing_they_define() -> None:
    envelope = example_envelope("PackageDefined")
    assert envelope.patient_id is None
    assert encode(envelope).key == b"massage-5x60"
    assert encode(example_envelope("DefinePackage")).key == b"invoicing-catalogue"


def test_value_rules() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        Validity(days=30, until="2026-01-01")
    with pytest.raises(ValueError, match="must equal total"):
        Balance(total=5, booked=1, used=1, remaining=1)


def test_derived_ids_are_deterministic_and_distinct() -> None:
    assert derived_id("link", 1, "a") == derived_id("link", 1, "a")
    assert derived_id("link", 1, "a") != derived_id("link", 1, "b")
