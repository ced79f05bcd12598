"""Top-up and transfer (R18, issue #22 point 5) as pure rules: which sessions a transfer moves,
what each refuses (naming the field), the line model's transfer (final, holding nothing), a
top-up's shares adding up to its price, and the balance without transferred sessions (R14)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID

from hypothesis import given
from hypothesis import strategies as st
from packline_contracts.invoices import InvoiceStatus, LineStatus, TransferSessions
from packline_invoicing import lines, report, rules, transfer
from pydantic import ValidationError

LAST = date(2027, 3, 31)
TODAY = date(2027, 3, 1)
NOW = datetime(2027, 3, 1, 10, 0, tzinfo=UTC)


def line(number: int, status: LineStatus = LineStatus.OPEN) -> lines.Line:
    held = status not in (LineStatus.OPEN, LineStatus.EXPIRED, LineStatus.TRANSFERRED)
    return lines.Line(
        line_id=UUID(int=number),
        invoice_id=UUID(int=100),
        line_number=number,
        patient_id="patient-1",
        fee_id="massage-60",
        practitioner_ids=None,
        location_ids=None,
        valid_from=date(2027, 1, 1),
        valid_until=LAST,
        status=status,
        appointment_id=UUID(int=1000 + number) if held else None,
    )


# --- which sessions move --------------------------------------------------------------------------


def test_a_transfer_moves_the_open_lines_with_the_highest_numbers_in_line_order() -> None:
    open_lines = [line(5), line(2), line(4)]
    assert [m.line_number for m in transfer.moving(open_lines, 2)] == [4, 5]
    assert [m.line_number for m in transfer.moving(open_lines, 3)] == [2, 4, 5]
    assert transfer.moving(open_lines, 0) == []


def test_only_an_open_line_is_transferred_and_then_it_is_final() -> None:
    to = UUID(int=77)
    moved = lines.applied(lines.transfer(line(3), to))
    assert moved.line.status == LineStatus.TRANSFERRED and moved.line.version == 2
    assert moved.line.appointment_id is None and moved.event == lines.Transferred(to)
    for status in (LineStatus.LINKED, LineStatus.BOOKING_REQUESTED):
        refused = lines.transfer(line(3, status), to)
        assert isinstance(refused, lines.Refused) and refused.code == lines.Refusal.WRONG_STATUS
    for status in (LineStatus.USED, LineStatus.FORFEITED, LineStatus.EXPIRED):
        refused = lines.transfer(line(3, status), to)
        assert isinstance(refused, lines.Refused) and refused.code == lines.Refusal.FINAL
    # Transferred is final for every other transition too.
    gone = moved.line
    assert isinstance(lines.extend(gone, date(2027, 6, 30)), lines.Refused)
    assert isinstance(lines.expire(gone, LAST), lines.Refused)
    assert isinstance(lines.transfer(gone, to), lines.Refused)
    assert lines.booking_refusal(gone) is not None


# --- refusals, naming the field -------------------------------------------------------------------


def test_a_transfer_is_refused_naming_the_field() -> None:
    def refusal(**given: object) -> str | None:
        args: dict[str, object] = {
            "status": InvoiceStatus.PAID,
            "redeemable": True,
            "patient_id": "patient-1",
            "to_patient_id": "patient-2",
            "unbooked": 3,
            "sessions": 2,
        } | given
        refused = transfer.transfer_refusal(**args)  # type: ignore[arg-type]
        return None if refused is None else refused[0]

    assert refusal() is None
    assert refusal(sessions=3) is None
    assert refusal(status=InvoiceStatus.VOID, redeemable=False) == "invoice_id"
    assert refusal(status=InvoiceStatus.REFUNDED, redeemable=False) == "invoice_id"
    assert refusal(status=InvoiceStatus.ISSUED, redeemable=False) == "invoice_id"
    assert refusal(to_patient_id="patient-1") == "to_patient_id"
    assert refusal(sessions=4) == "sessions"
    refused = transfer.transfer_refusal(InvoiceStatus.PAID, True, "a", "b", 1, 2)
    assert refused is not None and "only 1 session unbooked" in refused[1]


def test_a_top_up_is_refused_naming_the_field() -> None:
    def refusal(**given: object) -> str | None:
        args: dict[str, object] = {
            "status": InvoiceStatus.PAID,
            "fees": ["massage-60", "massage-60"],
            "fee_id": None,
            "last_day": LAST,
            "today": TODAY,
            "price_cents": 40000,
            "added_cents": 5000,
        } | given
        refused = transfer.top_up_refusal(**args)  # type: ignore[arg-type]
        return None if refused is None else refused[0]

    assert refusal() is None
    assert refusal(today=LAST) is None  # the last valid day itself
    assert refusal(added_cents=0) is None  # free sessions
    assert refusal(fee_id="massage-60") is None
    assert refusal(status=InvoiceStatus.VOID) == "invoice_id"
    assert refusal(status=InvoiceStatus.REFUNDED) == "invoice_id"
    assert refusal(today=date(2027, 4, 1)) == "invoice_id"
    assert refusal(fees=["massage-60", "yoga-30"]) == "fee_id"
    assert refusal(fees=["massage-60", "yoga-30"], fee_id="yoga-30") is None
    assert refusal(fee_id="yoga-30") == "fee_id"
    assert refusal(price_cents=2**31 - 1, added_cents=1) == "price_cents"


def test_the_contract_refuses_fewer_than_one_session() -> None:
    common: dict[str, Any] = {
        "patient_id": "patient-1",
        "invoice_id": UUID(int=1),
        "transfer_id": UUID(int=2),
        "to_patient_id": "patient-2",
        "reason": "asked",
        "transferred_by": "manager:li",
    }
    assert TransferSessions(**common, sessions=1).sessions == 1
    try:
        TransferSessions(**common, sessions=0)
    except ValidationError as error:
        assert error.errors()[0]["loc"] == ("sessions",)
    else:
        raise AssertionError("0 sessions was accepted")


# --- shares and balance ---------------------------------------------------------------------------


@given(st.integers(min_value=0, max_value=10**7), st.integers(min_value=1, max_value=100))
def test_a_top_ups_shares_add_up_to_its_price(price: int, sessions: int) -> None:
    shares = rules.session_shares(price, sessions)
    assert sum(shares) == price and len(shares) == sessions
    assert max(shares) - min(shares) <= 1


def test_transferred_sessions_are_not_this_invoices_any_more() -> None:
    counted = rules.balance(
        [
            (LineStatus.LINKED, datetime(2027, 3, 5, tzinfo=UTC)),
            (LineStatus.OPEN, None),
            (LineStatus.TRANSFERRED, None),
            (LineStatus.TRANSFERRED, None),
        ],
        NOW,
        LAST,
    )
    assert (counted.total, counted.booked, counted.used, counted.remaining) == (2, 1, 0, 1)


def test_a_transfers_new_invoice_is_named_by_the_transfer() -> None:
    assert transfer.new_invoice_id(UUID(int=5)) == transfer.new_invoice_id(UUID(int=5))
    assert transfer.new_invoice_id(UUID(int=5)) != transfer.new_invoice_id(UUID(int=6))


def test_the_report_moves_a_transfer_from_one_invoice_to_the_other_to_the_cent() -> None:
    moved = [
        report.Movement("three", "EUR", "sold", None, 10000),
        report.Movement("three", "EUR", "sold", "2027-03", 5001),  # a top-up
        report.Movement("three", "EUR", "transferred_out", "2027-03", 6666),
        report.Movement("three", "EUR", "transferred_in", "2027-03", 6666),
        report.Movement("three", "EUR", "recognised", "2027-03", 3333),
    ]
    (row,) = report.report_rows(moved, date(2027, 3, 1), date(2027, 3, 31))
    assert (row["opening_owed_cents"], row["sold_cents"]) == (10000, 5001)
    assert (row["transferred_in_cents"], row["transferred_out_cents"]) == (6666, 6666)
    assert row["owed_cents"] == 10000 + 5001 + 6666 - 6666 - 3333
    (total,) = report.report_totals([row])
    assert total["owed_cents"] == row["owed_cents"]
    assert report.csv_text([row]).splitlines()[0].split(",") == report.CSV_COLUMNS
