"""The deferred-revenue (liability) report, without I/O (issue #22 point 3, docs/revenue.md).

Every amount that changes what invoices still owe is an entry (``revenue_entries``, written with
the event that carries it): ``sold`` (a sale or a top-up) and ``transferred_in`` (sessions
moved to this invoice from another patient's) add to what is owed; ``recognised``,
``forfeited``, ``expired``, ``transferred_out``, ``refunded`` and ``voided`` take from it;
``refunded_recognised`` (the part of a refund beyond what was owed: revenue given back) leaves it
alone. The report adds the entries up by package, currency and month (the selling location's
local month), for the days from ``first`` to ``last``: what was owed when the period began
(everything before it), each month's movements, and what is owed at the end of each month."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

from packline_contracts.types import Currency, PackageId
from packline_core.openapi import Answer
from pydantic import Field

# Each kind of entry and how it moves what is owed.
OWED_SIGN = {
    "sold": 1,
    "recognised": -1,
    "forfeited": -1,
    "expired": -1,
    "transferred_in": 1,
    "transferred_out": -1,
    "refunded": -1,
    "voided": -1,
    "refunded_recognised": 0,
}
KINDS = tuple(OWED_SIGN)
MAX_MONTHS = 60


@dataclass(frozen=True)
class Movement:
    """The sum of one kind of entry of one package and currency in one month (``month`` is
    "YYYY-MM"), or before the period (``month`` None)."""

    package_id: str
    currency: str
    kind: str
    month: str | None
    amount_cents: int


class ReportRow(Answer):
    """One package's month, in the currency it was sold in (cents)."""

    package_id: PackageId
    currency: Currency
    month: str = Field(description='"YYYY-MM", the selling location\'s local month.')
    opening_owed_cents: int = Field(description="Owed when the month (or the period) began.")
    sold_cents: int = Field(description="Sales and top-ups (TopUpPackageInvoice).")
    recognised_cents: int = Field(description="Sessions used (attended).")
    forfeited_cents: int = Field(description="Sessions forfeited (late cancel, no-show, R9).")
    expired_cents: int = Field(
        description="Sessions written off unbooked at expiry (SessionsExpired, R18)."
    )
    transferred_in_cents: int = Field(
        description="Sessions moved here from another patient's invoice (SessionsTransferred)."
    )
    transferred_out_cents: int = Field(
        description="Sessions moved to another patient's invoice (SessionsTransferred): the "
        "same cents appear as transferred_in where the new invoice is reported."
    )
    refunded_cents: int = Field(description="Refunds, as far as they took from what was owed.")
    voided_cents: int = Field(description="What voided invoices still owed.")
    refunded_recognised_cents: int = Field(
        description="Refunds beyond what was owed: revenue already recognised given back "
        "(does not move what is owed)."
    )
    owed_cents: int = Field(description="Still owed at the end of the month (or the period).")


class ReportTotal(Answer):
    """The whole period in one currency: owed at its start and end, and the movements."""

    currency: Currency
    opening_owed_cents: int
    sold_cents: int
    recognised_cents: int
    forfeited_cents: int
    expired_cents: int
    transferred_in_cents: int
    transferred_out_cents: int
    refunded_cents: int
    voided_cents: int
    refunded_recognised_cents: int
    owed_cents: int


class DeferredRevenue(Answer):
    """What invoices sold at the caller's clinics (or one location) still owe, and why it
    moved, by package and month."""

    first_day: date = Field(alias="from")
    last_day: date = Field(alias="to")
    location_id: str | None
    rows: list[ReportRow]
    totals: list[ReportTotal]


CSV_COLUMNS = [name for name in ReportRow.model_fields]


def months(first: date, last: date) -> list[str]:
    """Every month from ``first``'s to ``last``'s, as "YYYY-MM"."""
    found = []
    year, month = first.year, first.month
    while (year, month) <= (last.year, last.month):
        found.append(f"{year:04d}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return found


def period_refusal(first: date, last: date) -> str | None:
    """Why a report cannot cover ``first`` to ``last``, or None."""
    if last < first:
        return "the period ends before it begins"
    if len(months(first, last)) > MAX_MONTHS:
        return f"a report covers at most {MAX_MONTHS} months"
    return None


def report_rows(movements: Iterable[Movement], first: date, last: date) -> list[dict[str, object]]:
    """A row for every month of the period for each package and currency with anything to say
    (an amount owed when the period began, or a movement in it), in package, currency and month
    order. Movements of months outside the period (other than before it) are ignored."""
    period = months(first, last)
    opening: dict[tuple[str, str], int] = defaultdict(int)
    moved: dict[tuple[str, str], dict[str, dict[str, int]]] = defaultdict(
        lambda: {month: dict.fromkeys(KINDS, 0) for month in period}
    )
    for m in movements:
        if m.kind not in OWED_SIGN:
            raise ValueError(f"no kind of entry {m.kind!r}")
        group = (m.package_id, m.currency)
        if m.month is None:
            opening[group] += OWED_SIGN[m.kind] * m.amount_cents
        elif m.month in period:
            moved[group][m.month][m.kind] += m.amount_cents
    rows: list[dict[str, object]] = []
    for group in sorted(set(opening) | set(moved)):
        sums = moved[group]
        if not opening[group] and not any(any(kinds.values()) for kinds in sums.values()):
            continue
        owed = opening[group]
        for month in period:
            kinds = sums[month]
            start = owed
            owed += sum(OWED_SIGN[kind] * amount for kind, amount in kinds.items())
            rows.append(
                {
                    "package_id": group[0],
                    "currency": group[1],
                    "month": month,
                    "opening_owed_cents": start,
                    **{f"{kind}_cents": kinds[kind] for kind in KINDS},
                    "owed_cents": owed,
                }
            )
    return rows


def report_totals(rows: Iterable[dict[str, object]]) -> list[dict[str, object]]:
    """Per currency: owed at the period's start and end, and every movement, added up."""
    rows = list(rows)
    totals: dict[str, dict[str, object]] = {}
    for row in rows:
        currency = str(row["currency"])
        total = totals.setdefault(
            currency,
            {"currency": currency, "opening_owed_cents": 0}
            | {f"{kind}_cents": 0 for kind in KINDS}
            | {"owed_cents": 0},
        )
        for kind in KINDS:
            total[f"{kind}_cents"] = _int(total[f"{kind}_cents"]) + _int(row[f"{kind}_cents"])
    for currency, total in totals.items():
        mine = [row for row in rows if row["currency"] == currency]
        first_month = min(str(row["month"]) for row in mine)
        last_month = max(str(row["month"]) for row in mine)
        total["opening_owed_cents"] = sum(
            _int(row["opening_owed_cents"]) for row in mine if row["month"] == first_month
        )
        total["owed_cents"] = sum(
            _int(row["owed_cents"]) for row in mine if row["month"] == last_month
        )
    return [totals[currency] for currency in sorted(totals)]


def _int(value: object) -> int:
    assert isinstance(value, int)
    return value


def csv_text(rows: Iterable[dict[str, object]]) -> str:
    """The rows as CSV (RFC 4180: comma-separated, a header line, CRLF line ends)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    return out.getvalue()
