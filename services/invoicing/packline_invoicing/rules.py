"""Invoicing's rules, without I/O: validity, redeemability, balances, sales and revenue shares.
Whether a line can take an appointment (R6) is the line model's (packline_invoicing.lines)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from uuid import UUID

from packline_contracts.catalogue import Package
from packline_contracts.invoices import InvoiceStatus, LineStatus, PurchaseChannel
from packline_contracts.types import Balance, Restriction


def valid_until(package: Package, issued_on: date) -> date:
    """The last day the package can be redeemed: N days counting the day of purchase, or the
    package's fixed end date."""
    if package.validity.until is not None:
        return package.validity.until
    assert package.validity.days is not None
    return issued_on + timedelta(days=package.validity.days - 1)


def selling_location(chosen: str | None, locations: Restriction) -> str | None:
    """Where a sale happened, for its local day (R15): the location the sale names, else the
    only location the invoice allows, else none (UTC days)."""
    if chosen is not None:
        return chosen
    if locations.ids is not None and len(locations.ids) == 1:
        return locations.ids[0]
    return None


def may_be_within(instant: datetime, valid_from: date, valid_until: date) -> bool:
    """Whether ``instant`` falls within validity in at least one time zone: local days lie
    within a day of the UTC day (offsets run from -12 to +14 hours). False means outside it
    wherever the appointment is, so it can be refused before its location is known."""
    day = instant.astimezone(UTC).date()
    return valid_from - timedelta(days=1) <= day <= valid_until + timedelta(days=1)


def redeemable(status: InvoiceStatus, pay_before_use: bool, paid: int, price: int) -> bool:
    if status in (InvoiceStatus.VOID, InvoiceStatus.REFUNDED):
        return False
    return not pay_before_use or paid >= price


def balance(
    lines: list[tuple[LineStatus, datetime | None]], now: datetime, expires_on: date | None
) -> Balance:
    """R14 at ``now`` for these lines (status, and the start of the appointment each holds)."""
    return tallied_balance(
        Counter(status for status, _ in lines),
        [starts_at for status, starts_at in lines if status == LineStatus.LINKED],
        now,
        expires_on,
    )


def tallied_balance(
    counts: Mapping[LineStatus, int],
    linked_starts: Sequence[datetime | None],
    now: datetime,
    expires_on: date | None,
) -> Balance:
    """R14 at ``now`` (the caller's: a message's occurred_at or a request's clock, I10), from
    how many lines the invoice has in each status and when the linked ones' appointments start
    (what one aggregate query reads): remaining = open; used = attended, forfeited, or linked
    to an appointment that has started; booked = linked to an upcoming appointment, or a
    booking requested from the line."""
    started = sum(1 for starts_at in linked_starts if starts_at is not None and starts_at <= now)
    used = counts.get(LineStatus.USED, 0) + counts.get(LineStatus.FORFEITED, 0) + started
    linked = counts.get(LineStatus.LINKED, 0)
    booked = linked - started + counts.get(LineStatus.BOOKING_REQUESTED, 0)
    remaining = counts.get(LineStatus.OPEN, 0)
    return Balance(
        total=sum(counts.values()),
        booked=booked,
        used=used,
        remaining=remaining,
        expires_on=expires_on,
    )


def overdue_before(now: datetime, timeout: timedelta) -> datetime:
    """A booking request made at or before this instant has waited ``timeout`` at ``now``."""
    return now - timeout


def overdue_requests(
    requests: Iterable[tuple[UUID, datetime]], now: datetime, timeout: timedelta
) -> list[UUID]:
    """The lines whose booking request (line id, when it was made) the calendar has had
    ``timeout`` to answer at ``now`` — the ones to release. ``now`` comes from the caller's clock,
    so the same inputs always give the same answer (I10)."""
    cutoff = overdue_before(now, timeout)
    return [line_id for line_id, requested_at in requests if requested_at <= cutoff]


def unanswered_note(timeout: timedelta) -> str:
    """What a line released by the timeout says (R3: the reason is shown on the line)."""
    return f"the calendar did not answer within {timeout.total_seconds():g} s"


def sale_refusal(
    package: Package,
    channel: PurchaseChannel,
    practitioners: Restriction | None,
    locations: Restriction | None,
) -> tuple[str, str] | None:
    """R1 as written: why this sale cannot be made, as (field, reason), or None. A package not
    sold online cannot be bought online; restrictions chosen at sale may only narrow the
    package's ("linked in the package invoice"), never widen or replace them."""
    if channel == PurchaseChannel.ONLINE and not package.online_purchase:
        return "channel", f"package {package.package_id} cannot be bought online"
    for field, chosen, allowed, what in (
        ("practitioners", practitioners, package.practitioners, "practitioner"),
        ("locations", locations, package.locations, "location"),
    ):
        if chosen is None or allowed.ids is None:
            continue  # nothing chosen, or the package allows any: any choice narrows
        if chosen.ids is None:
            return field, f"package {package.package_id} is only for {what}(s) " + ", ".join(
                allowed.ids
            ) + ": a sale cannot widen that to any"
        outside = [one for one in chosen.ids if one not in allowed.ids]
        if outside:
            return field, f"package {package.package_id} is not for {what}(s) " + ", ".join(outside)
    return None


# --- revenue (docs/revenue.md) ------------------------------------------------------------------


def session_shares(price_cents: int, sessions: int) -> list[int]:
    """Each line's share of the price, by line number (index 0 is line 1): the price divided
    by the number of lines, and the cents left over (fewer than the lines) one each to the
    lowest line numbers — the largest-remainder method with every remainder equal, ties broken
    by line number. The shares add up to the price exactly and each is within one cent of
    ``price_cents / sessions``."""
    if sessions < 1 or price_cents < 0:
        raise ValueError(f"no shares of {price_cents} cents over {sessions} sessions")
    base, left_over = divmod(price_cents, sessions)
    return [base + (1 if number < left_over else 0) for number in range(sessions)]


def taken_from_owed(owed_cents: int, amount_cents: int) -> int:
    """How much of ``amount_cents`` (a session used, forfeited or expired; a refund; a void)
    comes off what the invoice still owes: all of it, but never more than is owed, so what is
    owed never falls below zero (after a partial refund the last sessions used recognise less,
    and a refund beyond what is owed gives back revenue already recognised)."""
    return max(0, min(owed_cents, amount_cents))
