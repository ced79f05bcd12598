"""How Packline words dates and counts for people, the way a clinic writes them ("1 March 2027",
"1 session", "all 5 sessions booked"), so every service and front end says them alike."""

from __future__ import annotations

from datetime import date, datetime


def day(when: date) -> str:
    """A date as a clinic writes it: "1 March 2027" (no leading zero)."""
    return f"{when.day} {when:%B %Y}"


def hour(when: datetime) -> str:
    """A wall-clock time, 24-hour: "09:00". Give it a local time (clinic_time.local)."""
    return f"{when:%H:%M}"


def moment(when: datetime) -> str:
    """A local date and time with the zone's abbreviation: "Mon 1 March 2027, 09:00 AEDT"."""
    return f"{when:%a} {day(when.date())}, {hour(when)} {when.tzname()}"


def sessions(count: int) -> str:
    return f"{count} session" if count == 1 else f"{count} sessions"


def all_booked(count: int) -> str:
    """Every session of a package taken: "its only session is booked", "all 5 sessions booked"."""
    return "its only session is booked" if count == 1 else f"all {count} sessions booked"
