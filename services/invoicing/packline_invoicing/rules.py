"""Invoicing's rules, without I/O: validity, redeemability, balances, sales and revenue shares.
Whether a line can take an appointment (R6) is the line model's (packline_invoicing.lines)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from uuid import UUID

from packline_contracts import clinic_time, wording
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
    (what one aggregate query reads): remaining = open; used = attended, forfeited, written off
    at expiry (also counted in ``expired``), or linked to an appointment that has started;
    booked = linked to an upcoming appointment, or a booking requested from the line. Lines
    transferred to another patient's invoice are not counted at all."""
    started = sum(1 for starts_at in linked_starts if starts_at is not None and starts_at <= now)
    expired = counts.get(LineStatus.EXPIRED, 0)
    used = counts.get(LineStatus.USED, 0) + counts.get(LineStatus.FORFEITED, 0) + expired + started
    linked = counts.get(LineStatus.LINKED, 0)
    booked = linked - started + counts.get(LineStatus.BOOKING_REQUESTED, 0)
    remaining = counts.get(LineStatus.OPEN, 0)
    # A session transferred to another patient's invoice is no longer this invoice's (R18).
    transferred = counts.get(LineStatus.TRANSFERRED, 0)
    return Balance(
        total=sum(counts.values()) - transferred,
        booked=booked,
        used=used,
        remaining=remaining,
        expires_on=expires_on,
        expired=expired,
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


# --- expiry (R18, docs/revenue.md) --------------------------------------------------------------


def written_off_after(valid_until: date, grace_days: int) -> date:
    """The last local day before unbooked sessions are written off: the last valid day plus
    the package's grace. Validity itself (R6) does not grow with the grace."""
    return valid_until + timedelta(days=grace_days)


def write_off_due(valid_until: date, grace_days: int, today: date) -> bool:
    """Whether an open line valid until ``valid_until`` is written off on the local day
    ``today`` (the selling location's, R15): once the grace has ended."""
    return today > written_off_after(valid_until, grace_days)


def write_off_at(valid_until: date, grace_days: int, time_zone: str) -> datetime:
    """When a write-off counts: the selling location's midnight that ends the grace. The same
    instant however late the sweep comes, so a replay accounts it alike (I10)."""
    last = written_off_after(valid_until, grace_days)
    return clinic_time.day_starts(last + timedelta(days=1), time_zone)


def warning_due(
    thresholds: Iterable[int], warned: Iterable[int], days_left: int
) -> tuple[int, list[int]] | None:
    """The reminder due ``days_left`` days before expiry, given the package's thresholds and
    those already announced for this expiry date: (the threshold to announce, every threshold
    it settles). Several crossed at once (a short package, a sweep that was down) are one
    reminder, the nearest; none once the last valid day has passed (then it is the write-off's
    turn) or when every crossed threshold was announced."""
    if days_left < 0:
        return None
    done = set(warned)
    crossed = sorted({t for t in thresholds if days_left <= t and t not in done})
    if not crossed:
        return None
    return crossed[0], crossed


def first_reminder_on(valid_until: date, thresholds: Iterable[int]) -> date | None:
    """The local day of an invoice's first reminder: its furthest threshold before the last
    valid day (already past for a package shorter than that: then at once). None: no reminders."""
    furthest = max(thresholds, default=None)
    return None if furthest is None else valid_until - timedelta(days=furthest)


def next_reminder_on(valid_until: date, thresholds: Iterable[int], days_left: int) -> date | None:
    """The local day of the reminder after the one due ``days_left`` days before
    ``valid_until`` (sent, or skipped with no session unbooked then): the furthest threshold
    still ahead, nearer than ``days_left``. None: no reminder left."""
    ahead = [t for t in thresholds if t < days_left]
    return first_reminder_on(valid_until, ahead)


def extension_refusal(
    invoice_status: InvoiceStatus, current_until: date, valid_until: date, extendable: int
) -> tuple[str, str] | None:
    """Why an invoice valid until ``current_until`` cannot be extended to ``valid_until``, as
    (field, reason), or None. ``extendable``: its lines not used, forfeited or written off."""
    if invoice_status in (InvoiceStatus.VOID, InvoiceStatus.REFUNDED):
        return "invoice_id", f"the invoice is {invoice_status.value}: nothing to extend"
    if valid_until <= current_until:
        return "valid_until", (
            f"{wording.day(valid_until)} is not after the invoice's last valid day, "
            f"{wording.day(current_until)}: an extension only moves it later"
        )
    if extendable == 0:
        return "invoice_id", (
            "every session is used, forfeited or written off: nothing left to extend"
        )
    return None
