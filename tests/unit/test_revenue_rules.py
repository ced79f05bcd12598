"""Revenue per session and the deferred-revenue report's arithmetic (issue #22, docs/revenue.md),
as pure functions."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st
from packline_invoicing import report, rules
from packline_invoicing.report import Movement


@given(price=st.integers(min_value=0, max_value=2**31 - 1), sessions=st.integers(1, 200))
def test_shares_add_up_to_the_price_and_each_is_within_a_cent_of_an_even_split(
    price: int, sessions: int
) -> None:
    shares = rules.session_shares(price, sessions)
    assert len(shares) == sessions
    assert sum(shares) == price
    assert all(abs(share * sessions - price) < sessions for share in shares)  # |share - p/n| < 1
    # The cents left over go to the lowest line numbers: never a later line above an earlier.
    assert shares == sorted(shares, reverse=True)


def test_the_cents_left_over_go_one_each_to_the_first_lines() -> None:
    assert rules.session_shares(10000, 3) == [3334, 3333, 3333]
    assert rules.session_shares(40000, 5) == [8000] * 5
    assert rules.session_shares(2, 3) == [1, 1, 0]
    with pytest.raises(ValueError):
        rules.session_shares(100, 0)


@given(owed=st.integers(0, 10**9), amount=st.integers(0, 10**9))
def test_what_is_taken_never_leaves_less_than_nothing_owed(owed: int, amount: int) -> None:
    taken = rules.taken_from_owed(owed, amount)
    assert 0 <= taken <= amount and owed - taken >= 0
    assert taken == amount or owed - taken == 0


def test_months_of_a_period_and_its_limits() -> None:
    assert report.months(date(2026, 11, 20), date(2027, 2, 1)) == [
        "2026-11",
        "2026-12",
        "2027-01",
        "2027-02",
    ]
    assert report.period_refusal(date(2026, 2, 1), date(2026, 1, 31)) is not None
    assert report.period_refusal(date(2020, 1, 1), date(2024, 12, 31)) is None
    assert report.period_refusal(date(2020, 1, 1), date(2025, 1, 1)) is not None


def test_rows_carry_what_is_owed_from_month_to_month_and_totals_add_up() -> None:
    moved = [
        Movement("five", "EUR", "sold", None, 50000),  # before the period: opening
        Movement("five", "EUR", "recognised", None, 10000),
        Movement("five", "EUR", "recognised", "2026-03", 10000),
        Movement("five", "EUR", "forfeited", "2026-03", 10000),
        Movement("five", "EUR", "refunded", "2026-05", 15000),
        Movement("five", "EUR", "refunded_recognised", "2026-05", 5000),
        Movement("three", "GBP", "sold", "2026-04", 10000),
        Movement("three", "GBP", "voided", "2026-04", 10000),
        Movement("late", "EUR", "sold", "2026-07", 999),  # after the period: ignored
    ]
    rows = report.report_rows(moved, date(2026, 3, 1), date(2026, 5, 31))
    five = [row for row in rows if row["package_id"] == "five"]
    assert [(r["month"], r["opening_owed_cents"], r["owed_cents"]) for r in five] == [
        ("2026-03", 40000, 20000),
        ("2026-04", 20000, 20000),
        ("2026-05", 20000, 5000),
    ]
    assert five[2]["refunded_recognised_cents"] == 5000 and five[2]["expired_cents"] == 0
    assert {row["package_id"] for row in rows} == {"five", "three"}
    totals = {t["currency"]: t for t in report.report_totals(rows)}
    assert totals["EUR"]["opening_owed_cents"] == 40000 and totals["EUR"]["owed_cents"] == 5000
    assert totals["GBP"]["sold_cents"] == 10000 and totals["GBP"]["owed_cents"] == 0
    for total in totals.values():
        moved_out = sum(
            int(str(total[f"{kind}_cents"]))
            for kind in ("recognised", "forfeited", "expired", "refunded", "voided")
        )
        assert total["owed_cents"] == (
            int(str(total["opening_owed_cents"])) + int(str(total["sold_cents"])) - moved_out
        )


def test_a_package_with_nothing_owed_and_no_movement_has_no_rows() -> None:
    moved = [
        Movement("done", "EUR", "sold", None, 100),
        Movement("done", "EUR", "voided", None, 100),
    ]
    assert report.report_rows(moved, date(2026, 1, 1), date(2026, 1, 31)) == []
    with pytest.raises(ValueError):
        report.report_rows(
            [Movement("x", "EUR", "stolen", "2026-01", 1)], date(2026, 1, 1), date(2026, 1, 31)
        )


def test_csv_has_a_header_and_one_line_per_row() -> None:
    rows = report.report_rows(
        [Movement("five", "EUR", "sold", "2026-01", 40000)], date(2026, 1, 1), date(2026, 1, 31)
    )
    text = report.csv_text(rows)
    header, line, end = text.split("\r\n")
    assert header.split(",") == report.CSV_COLUMNS and end == ""
    assert line.startswith("five,EUR,2026-01,0,40000,0,")
