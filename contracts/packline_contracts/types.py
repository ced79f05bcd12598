"""Value types shared by many messages, in the clinic's words.

Every type here also says what the services' databases and the events can hold, so a value that
passes validation can always be stored and published: text never carries NUL (PostgreSQL text
cannot) nor other control characters, money and counters fit the database's integer columns,
instants lie in a window every column and every date sum can hold, and a package has no more
sessions than one event can carry."""

from __future__ import annotations

import re
import zoneinfo
from datetime import UTC, date, datetime
from enum import StrEnum
from functools import cache
from typing import Annotated, Self
from uuid import UUID

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)

# --- limits -----------------------------------------------------------------------------------

# The services store money, counts and versions in PostgreSQL ``integer`` columns.
MAX_INT32 = 2**31 - 1

# Instants (and the last day of a package) lie in these years, both as written and in UTC. An
# appointment's end (start + at most a day), a package's last day (sale + at most 3650 days) and
# a late-cancel window all stay far inside what Python and PostgreSQL can hold; an instant such
# as 0001-01-01T00:00:00+05:00, whose UTC form is before year 1, cannot even be converted.
FIRST_YEAR, LAST_YEAR = 1900, 2199
_YEAR_PATTERN = r"^(19|20|21)[0-9]{2}-"

# A package invoice's event (PackageInvoiceIssued) carries every line. At its largest, a line
# (64-character fee id, two restrictions of MAX_RESTRICTION_IDS 64-character ids, every optional
# field set) is about 1.8 KB of JSON, so MAX_PACKAGE_SESSIONS lines and the rest of the invoice
# come to about 185 KB: under the 256 KiB message limit with more than a quarter to spare
# (tests/unit/test_contract_limits.py builds that largest event and measures it).
MAX_RESTRICTION_IDS = 10
MAX_PACKAGE_SESSIONS = 100

# --- text -------------------------------------------------------------------------------------

# C0 control characters and DEL are refused (NUL above all: PostgreSQL text cannot hold it), and
# so are lone surrogates, which are not characters and cannot be encoded as UTF-8. Text of more
# than one line may keep tab, line feed and carriage return.
_ONE_LINE_PATTERN = r"^[^\x00-\x1F\x7F\uD800-\uDFFF]*$"
_MULTI_LINE_PATTERN = r"^[^\x00-\x08\x0B\x0C\x0E-\x1F\x7F\uD800-\uDFFF]*$"
_ONE_LINE_REFUSED = re.compile(r"[\x00-\x1F\x7F\uD800-\uDFFF]")
_MULTI_LINE_REFUSED = re.compile(r"[\x00-\x08\x0B\x0C\x0E-\x1F\x7F\uD800-\uDFFF]")


def _one_line(value: str) -> str:
    return _refuse(value, _ONE_LINE_REFUSED)


def _multi_line(value: str) -> str:
    return _refuse(value, _MULTI_LINE_REFUSED)


def _refuse(value: str, refused: re.Pattern[str]) -> str:
    found = refused.search(value)
    if found is not None:
        code = ord(found.group())
        what = "a lone surrogate" if 0xD800 <= code <= 0xDFFF else "a control character"
        raise ValueError(
            f"must not contain {what} (U+{code:04X} at position {found.start()})"
            + ("; PostgreSQL text cannot hold NUL" if code == 0 else "")
        )
    return value


def _within_window(value: datetime) -> datetime:
    if not FIRST_YEAR <= value.year <= LAST_YEAR:
        raise ValueError(f"must lie in the years {FIRST_YEAR}-{LAST_YEAR}, not {value.year}")
    in_utc = value.astimezone(UTC)  # cannot overflow: the year is far from 1 and 9999
    if not FIRST_YEAR <= in_utc.year <= LAST_YEAR:
        raise ValueError(
            f"must lie in the years {FIRST_YEAR}-{LAST_YEAR} in UTC too, not {in_utc.isoformat()}"
        )
    return value


@cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def _known_zone(value: str) -> str:
    if value not in _zones():
        raise ValueError(
            f"{value!r} is not an IANA time zone (e.g. Australia/Sydney, Europe/London)"
        )
    return value


def _day_within_window(value: date) -> date:
    if not FIRST_YEAR <= value.year <= LAST_YEAR:
        raise ValueError(f"must lie in the years {FIRST_YEAR}-{LAST_YEAR}, not {value.year}")
    return value


OneLine = Annotated[
    str, Field(json_schema_extra={"pattern": _ONE_LINE_PATTERN}), AfterValidator(_one_line)
]
MultiLine = Annotated[
    str, Field(json_schema_extra={"pattern": _MULTI_LINE_PATTERN}), AfterValidator(_multi_line)
]

# Ids of things Packline does not own (patients, practitioners, locations, fees, packages) are the
# clinic system's own strings. Ids of things Packline creates are UUIDs chosen by the caller, so a
# retried command names the same appointment or invoice.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]*$"
ExternalId = Annotated[str, Field(min_length=1, max_length=64, pattern=ID_PATTERN)]
PatientId = ExternalId
PractitionerId = ExternalId
LocationId = ExternalId
FeeId = ExternalId
PackageId = ExternalId
Actor = Annotated[
    OneLine, Field(min_length=1, max_length=128, description="Who did it (one line of text).")
]
Name = Annotated[OneLine, Field(min_length=1, max_length=200)]
Minutes = Annotated[int, Field(gt=0, le=24 * 60)]
Cents = Annotated[
    int,
    Field(
        ge=0,
        le=MAX_INT32,
        description=f"An amount in cents, at most {MAX_INT32} (the database's integer column).",
    ),
]
Count = Annotated[int, Field(ge=0, le=MAX_INT32)]
Version = Annotated[int, Field(ge=1, le=MAX_INT32)]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
Reason = Annotated[MultiLine, Field(min_length=1, max_length=500)]
Instant = Annotated[
    AwareDatetime,
    AfterValidator(_within_window),
    Field(
        json_schema_extra={"pattern": _YEAR_PATTERN},
        description=f"A date and time with its timezone, in the years {FIRST_YEAR}-{LAST_YEAR} "
        "both as written and in UTC.",
    ),
]
Day = Annotated[
    date,
    AfterValidator(_day_within_window),
    Field(
        json_schema_extra={"pattern": _YEAR_PATTERN},
        description=f"A date in the years {FIRST_YEAR}-{LAST_YEAR}.",
    ),
]

# R15: where a clinic's dates are judged. Locations defined without a zone (as every location was
# before zones existed) are in DEFAULT_TIME_ZONE; define the location again with its zone.
DEFAULT_TIME_ZONE = "UTC"
TimeZone = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_+/-]+$",
        description="An IANA time zone name, e.g. Australia/Sydney.",
        examples=["Australia/Sydney"],
    ),
    AfterValidator(_known_zone),
]


class Value(BaseModel):
    """Base of every value inside a message: immutable; unknown fields are ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class Restriction(Value):
    """Practitioners or locations a package can be redeemed with. ``None`` ids means any."""

    ids: list[ExternalId] | None = Field(
        default=None,
        description=f"The allowed ids (at most {MAX_RESTRICTION_IDS}); null means any.",
        min_length=1,
        max_length=MAX_RESTRICTION_IDS,
    )

    def allows(self, candidate: str) -> bool:
        return self.ids is None or candidate in self.ids


class Validity(Value):
    """How long a package can be redeemed: days from purchase, or until a fixed date."""

    days: Annotated[int, Field(gt=0, le=3650)] | None = None
    until: Day | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.days is None) == (self.until is None):
            raise ValueError("give exactly one of 'days' and 'until'")
        return self


class LateCancelPolicy(Value):
    """R9: a cancellation inside ``forfeit_within_hours`` (or a no-show) uses up the session."""

    forfeit_within_hours: Annotated[int, Field(gt=0, le=720)] | None = None
    no_show_forfeits: bool = False


class PackageItem(Value):
    fee_id: FeeId
    count: Annotated[
        int,
        Field(
            gt=0,
            le=MAX_PACKAGE_SESSIONS,
            description=f"Sessions of this fee; a package has at most {MAX_PACKAGE_SESSIONS} "
            "in all.",
        ),
    ]


class AppointmentStatus(StrEnum):
    BOOKED = "booked"
    ARRIVED = "arrived"
    COMPLETED = "completed"
    NO_SHOW = "no_show"
    CANCELLED = "cancelled"
    DELETED = "deleted"


class BookingSource(StrEnum):
    STAFF = "staff"
    ONLINE = "online"
    INVOICE = "invoice"


class InvoiceLineRef(Value):
    """One line of one package invoice."""

    invoice_id: UUID
    line_id: UUID


class Appointment(Value):
    """An appointment as the calendar knows it after a change: enough to decide a link."""

    appointment_id: UUID
    version: Annotated[Version, Field(description="Increases with every change.")]
    patient_id: PatientId
    practitioner_id: PractitionerId
    location_id: LocationId
    starts_at: Instant
    duration_minutes: Minutes
    fee_ids: list[FeeId] = Field(min_length=1, max_length=20)
    status: AppointmentStatus
    source: BookingSource
    invoice_line: InvoiceLineRef | None = Field(
        default=None, description="The line it was booked from (source = invoice)."
    )
    time_zone: TimeZone = Field(
        default=DEFAULT_TIME_ZONE,
        description="Its location's IANA time zone: every date rule about the appointment "
        "(validity, expiry, the day it is on) is judged in this zone's local time (R15).",
    )


class Balance(Value):
    """R14: sessions of one package invoice, as of the moment of the message that carries it (its
    ``occurred_at``). total = booked + used + remaining."""

    total: Count
    booked: Annotated[
        Count,
        Field(
            description="Sessions held by an upcoming appointment, or by a booking requested "
            "from the invoice that the calendar has not answered yet."
        ),
    ]
    used: Annotated[
        Count,
        Field(
            description="Sessions spent: attended (the patient arrived or completed the "
            "appointment), forfeited (late cancellation or no-show, R9), written off unbooked at "
            "expiry (see expired), or held by an appointment that has already started."
        ),
    ]
    remaining: Annotated[Count, Field(description="Open lines, free to book.")]
    expires_on: date | None = Field(default=None, description="Last day it can be redeemed.")
    expired: Count | None = Field(
        default=None,
        description="Of ``used``, the sessions written off unbooked at expiry (SessionsExpired): "
        "spent like a forfeited session, never given. Absent from events before this field "
        "existed.",
    )

    @model_validator(mode="after")
    def _adds_up(self) -> Self:
        if self.booked + self.used + self.remaining != self.total:
            raise ValueError("booked + used + remaining must equal total")
        if self.expired is not None and self.expired > self.used:
            raise ValueError("expired sessions are counted in used: expired cannot exceed used")
        return self
