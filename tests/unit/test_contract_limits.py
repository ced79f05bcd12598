"""The contracts' types say what the databases and the events can hold. A value beyond a limit is
refused where a message enters (``decode``, as every consumer reads a record) with an error that
names the field, so it is never retried against the database nor published too big to send."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any

import pytest
from packline_contracts.appointments import CancelAppointment
from packline_contracts.envelope import MAX_MESSAGE_BYTES, Envelope, InvalidMessage, decode, encode
from packline_contracts.examples import example_envelope
from packline_contracts.invoices import (
    InvoiceLine,
    InvoiceStatus,
    LineStatus,
    PackageInvoice,
    PackageInvoiceIssued,
    PurchaseChannel,
)
from packline_contracts.types import (
    MAX_INT32,
    MAX_PACKAGE_SESSIONS,
    MAX_RESTRICTION_IDS,
    Balance,
    LateCancelPolicy,
    Restriction,
)
from pydantic import ValidationError


def message(message_type: str, **payload: Any) -> dict[str, Any]:
    """The example of ``message_type`` as a client would send it, with ``payload`` changed."""
    body = json.loads(encode(example_envelope(message_type)).value)
    body["payload"].update(payload)
    return dict(body)


def refusal(body: dict[str, Any]) -> InvalidMessage:
    with pytest.raises(InvalidMessage) as raised:
        decode(json.dumps(body).encode())
    return raised.value


def refused_fields(body: dict[str, Any]) -> dict[str, str]:
    return {error.field: error.message for error in refusal(body).errors}


def accepted(body: dict[str, Any]) -> Envelope[Any]:
    return decode(json.dumps(body).encode())


# --- text: what PostgreSQL text can hold ---------------------------------------------------------


@pytest.mark.parametrize(
    ("message_type", "field", "text"),
    [
        ("BookAppointment", "booked_by", "reception\x00maria"),
        ("CancelAppointment", "reason", "unwell\x00"),
        ("DefineFee", "name", "60-min\x00massage"),
        ("DefinePractitioner", "name", "Dr\x00Adams"),
        ("UnassignInvoiceLine", "unassigned_by", "\x00"),
        ("VoidPackageInvoice", "reason", "sold in error\x00"),
    ],
)
def test_nul_in_text_is_refused_naming_the_field(message_type: str, field: str, text: str) -> None:
    fields = refused_fields(message(message_type, **{field: text}))
    assert list(fields) == [f"payload.{field}"]
    assert "U+0000" in fields[f"payload.{field}"]
    assert "NUL" in fields[f"payload.{field}"]


def test_control_characters_are_refused_in_one_line_text_but_reasons_keep_line_breaks() -> None:
    escape = refused_fields(message("BookAppointment", booked_by="maria\x1b[31m"))
    assert "control character" in escape["payload.booked_by"]
    assert "U+001B" in escape["payload.booked_by"]
    line_feed = refused_fields(message("DefineLocation", name="North\nside"))
    assert list(line_feed) == ["payload.name"]
    kept = accepted(message("CancelAppointment", reason="Unwell.\nWill call back.\tThanks"))
    assert kept.payload.reason == "Unwell.\nWill call back.\tThanks"


def test_a_lone_surrogate_is_refused() -> None:
    """Not a character, and not encodable as UTF-8. A record's JSON parser already refuses it;
    text parsed by another parser (an HTTP body) is refused by the type, naming the field."""
    assert refused_fields(message("CancelAppointment", reason="unwell \ud800"))
    payload = message("CancelAppointment", reason="unwell \ud800")["payload"]
    with pytest.raises(ValidationError) as raised:
        CancelAppointment.model_validate(payload)
    [problem] = raised.value.errors()
    assert problem["loc"] == ("reason",)
    assert "lone surrogate" in problem["msg"]


# --- instants: what a timestamptz (and an end time) can hold -------------------------------------


@pytest.mark.parametrize(
    "starts_at",
    [
        "9999-12-31T23:00:00+00:00",  # + duration overflows
        "0001-01-01T00:00:00+05:00",  # its UTC form is before year 1
        "9999-12-31T23:00:00-05:00",  # its UTC form is after year 9999
        "1899-12-31T23:59:59+00:00",
        "2200-01-01T00:00:00+00:00",
        "1900-01-01T01:00:00+05:00",  # 1899 in UTC
    ],
)
def test_instants_outside_the_window_are_refused_naming_the_field(starts_at: str) -> None:
    fields = refused_fields(message("BookAppointment", starts_at=starts_at))
    assert list(fields) == ["payload.starts_at"]
    assert "1900-2199" in fields["payload.starts_at"]


def test_every_instant_in_messages_is_bounded() -> None:
    assert "payload.cancelled_at" in refused_fields(
        message("CancelAppointment", cancelled_at="0001-01-01T00:00:00+05:00")
    )
    assert "payload.issued_at" in refused_fields(
        message("IssuePackageInvoice", issued_at="9999-12-31T23:59:59+00:00")
    )
    assert "payload.paid_at" in refused_fields(
        message("RecordPayment", paid_at="0001-01-01T00:00:00+00:00")
    )
    booked = message("AppointmentBooked")
    booked["payload"]["appointment"]["starts_at"] = "9999-12-31T23:00:00+00:00"
    assert "payload.appointment.starts_at" in refused_fields(booked)
    assert "payload.validity.until" in refused_fields(
        message("DefinePackage", validity={"until": "9999-12-31"})
    )


def test_the_edges_of_the_window_are_accepted() -> None:
    for starts_at in ("1900-01-01T00:00:00+00:00", "2199-12-31T23:59:59.999999+00:00"):
        parsed = accepted(message("BookAppointment", starts_at=starts_at)).payload.starts_at
        assert parsed == datetime.fromisoformat(starts_at)
    assert accepted(message("DefinePackage", validity={"until": "2199-12-31"})).payload.validity
    assert datetime(2199, 12, 31, tzinfo=UTC) > datetime(2026, 1, 1, tzinfo=UTC)


# --- money and counters: what an integer column can hold -----------------------------------------


@pytest.mark.parametrize(
    ("message_type", "field"),
    [
        ("DefinePackage", "price_cents"),
        ("DefineFee", "price_cents"),
        ("RecordPayment", "amount_cents"),
        ("RefundPackageInvoice", "amount_cents"),
        ("UnlinkAppointment", "appointment_version"),
    ],
)
def test_numbers_beyond_the_integer_column_are_refused(message_type: str, field: str) -> None:
    fields = refused_fields(message(message_type, **{field: MAX_INT32 + 1}))
    assert list(fields) == [f"payload.{field}"]
    assert str(MAX_INT32) in fields[f"payload.{field}"]
    assert getattr(accepted(message(message_type, **{field: MAX_INT32})).payload, field) == (
        MAX_INT32
    )


def test_an_appointment_version_beyond_the_integer_column_is_refused() -> None:
    booked = message("AppointmentBooked")
    booked["payload"]["appointment"]["version"] = MAX_INT32 + 1
    assert list(refused_fields(booked)) == ["payload.appointment.version"]


# --- a package's sessions: what one event can carry ----------------------------------------------


def test_a_package_of_50_items_of_1000_sessions_is_refused() -> None:
    items = [{"fee_id": f"fee-{n}", "count": 1000} for n in range(50)]
    fields = refused_fields(message("DefinePackage", items=items))
    assert fields and all(field.startswith("payload.items") for field in fields)


def test_the_sessions_of_all_items_together_are_limited() -> None:
    half = MAX_PACKAGE_SESSIONS // 2 + 1
    items = [{"fee_id": "massage-60", "count": half}, {"fee_id": "massage-30", "count": half}]
    fields = refused_fields(message("DefinePackage", items=items))
    assert list(fields) == ["payload.items"]
    assert f"{2 * half} sessions" in fields["payload.items"]
    assert str(MAX_PACKAGE_SESSIONS) in fields["payload.items"]
    items[1]["count"] = MAX_PACKAGE_SESSIONS - half
    assert accepted(message("DefinePackage", items=items))


def test_a_restriction_names_a_limited_number_of_ids() -> None:
    ids = [f"dr-{n}" for n in range(MAX_RESTRICTION_IDS + 1)]
    fields = refused_fields(message("DefinePackage", practitioners={"ids": ids}))
    assert list(fields) == ["payload.practitioners.ids"]
    assert refused_fields(message("IssuePackageInvoice", locations={"ids": ids}))


def test_the_largest_package_invoice_event_fits_with_a_quarter_to_spare() -> None:
    """Every field at its longest: the largest PackageInvoiceIssued a valid package can make."""
    longest_id = "x" * 64
    restriction = Restriction(ids=[f"{n:02d}{longest_id[2:]}" for n in range(MAX_RESTRICTION_IDS)])
    starts = datetime(2199, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    lines = [
        InvoiceLine(
            line_id=example_envelope("BookAppointment").message_id,
            line_number=number,
            fee_id=longest_id,
            practitioners=restriction,
            locations=restriction,
            valid_from=date(2199, 12, 31),
            valid_until=date(2209, 12, 28),
            status=LineStatus.BOOKING_REQUESTED,
            appointment_id=example_envelope("BookAppointment").message_id,
            appointment_starts_at=starts,
            version=MAX_INT32,
        )
        for number in range(1, MAX_PACKAGE_SESSIONS + 1)
    ]
    invoice = PackageInvoice(
        invoice_id=example_envelope("BookAppointment").message_id,
        patient_id=longest_id,
        package_id=longest_id,
        package_name="\U0001f486" * 200,  # four bytes each in UTF-8
        channel=PurchaseChannel.ONLINE,
        issued_at=starts,
        status=InvoiceStatus.REFUNDED,
        price_cents=MAX_INT32,
        paid_cents=MAX_INT32,
        currency="EUR",
        pay_before_use=True,
        redeemable=False,
        late_cancel_policy=LateCancelPolicy(forfeit_within_hours=720, no_show_forfeits=True),
        lines=lines,
        balance=Balance(
            total=MAX_PACKAGE_SESSIONS,
            booked=MAX_PACKAGE_SESSIONS,
            used=0,
            remaining=0,
            expires_on=date(2209, 12, 28),
        ),
    )
    event = Envelope.wrap(
        PackageInvoiceIssued(patient_id=longest_id, invoice_id=invoice.invoice_id, invoice=invoice),
        producer="p" * 128,
    )
    size = len(encode(event).value)
    assert size <= 0.75 * MAX_MESSAGE_BYTES, size
    assert 150_000 < size < 200_000, size  # the figure the types' comment states (~185 KB)
