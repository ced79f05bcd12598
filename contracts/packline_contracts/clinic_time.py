"""Clinic time (R15): instants are stored and sent in UTC; a date rule or a date shown to people
converts them to the local time of the appointment's (or the sale's) location here, with the
standard library's zone database. Pure functions: no clock is read.

A local day is not always 24 hours: on the day clocks go forward it has 23, on the day they go
back 25. So a day's bounds are its two local midnights converted to UTC, never "midnight plus 24
hours"; and a wall-clock time that does not exist (02:30 when clocks jump from 02:00 to 03:00) is
refused rather than silently moved."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from zoneinfo import ZoneInfo

from packline_contracts.types import DEFAULT_TIME_ZONE


@cache
def zone(name: str | None) -> ZoneInfo:
    """The zone called ``name`` (a validated IANA name), the default when there is none."""
    return ZoneInfo(name or DEFAULT_TIME_ZONE)


def local(instant: datetime, time_zone: str | None) -> datetime:
    """``instant`` as the clock on the location's wall shows it (with its UTC offset)."""
    return instant.astimezone(zone(time_zone))


def local_day(instant: datetime, time_zone: str | None) -> date:
    """The location's calendar day ``instant`` falls on: the day every date rule judges."""
    return local(instant, time_zone).date()


def day_starts(day: date, time_zone: str | None) -> datetime:
    """The instant (UTC) of the location's midnight that begins ``day``."""
    return datetime.combine(day, time.min, zone(time_zone)).astimezone(UTC)


def days_span(first: date, days: int, time_zone: str | None) -> tuple[datetime, datetime]:
    """[start, end) in UTC of ``days`` local days from ``first``: a day view (1) or a week (7).
    Their length follows the clocks: 23 or 25 hours on a daylight-saving day."""
    return day_starts(first, time_zone), day_starts(first + timedelta(days=days), time_zone)


class NoSuchLocalTime(ValueError):
    """A wall-clock time that the location's clocks skip (they jump forward over it)."""


def at(day: date, wall: time, time_zone: str | None) -> datetime:
    """The instant (UTC) when the location's clocks show ``wall`` on ``day``.

    Where clocks go back, a time shown twice means its first occurrence (fold 0, the earlier
    instant). Where clocks go forward, a skipped time raises :class:`NoSuchLocalTime`."""
    tz = zone(time_zone)
    naive = datetime.combine(day, wall.replace(tzinfo=None, fold=0))
    instant = naive.replace(tzinfo=tz).astimezone(UTC)
    if instant.astimezone(tz).replace(tzinfo=None) != naive:
        raise NoSuchLocalTime(
            f"{wall:%H:%M} does not exist on {day.isoformat()} in {tz.key}: the clocks go forward"
        )
    return instant
