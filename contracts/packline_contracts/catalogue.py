"""The clinic's catalogue: fees and packages (owned by invoicing), practitioners and locations
(owned by calendar). Defining one again replaces it; the ``...Defined`` events live on compacted
topics keyed by the thing's id, so reading such a topic from the start rebuilds the catalogue.

The ``Define...`` commands of one catalogue all share one key, so they are applied in the order
they were sent: a package defined right after its fees always finds them."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field, field_validator

from packline_contracts.envelope import Kind, Message
from packline_contracts.topics import (
    CALENDAR_COMMANDS,
    CALENDAR_DIRECTORY,
    INVOICING_CATALOGUE,
    INVOICING_COMMANDS,
)
from packline_contracts.types import (
    DEFAULT_TIME_ZONE,
    MAX_PACKAGE_SESSIONS,
    Cents,
    Currency,
    FeeId,
    LateCancelPolicy,
    LocationId,
    Minutes,
    Name,
    PackageId,
    PackageItem,
    PractitionerId,
    Restriction,
    TimeZone,
    Validity,
)


class Fee(Message):
    """A billable service the clinic sells, e.g. "60-min massage"."""

    fee_id: FeeId
    name: Name
    duration_minutes: Minutes = Field(description="Default length of its appointments (R3).")
    price_cents: Cents
    currency: Currency

    def kafka_key(self) -> str:
        return self.fee_id


INVOICING_CATALOGUE_KEY = "invoicing-catalogue"
CALENDAR_DIRECTORY_KEY = "calendar-directory"


class DefineFee(Fee):
    """Create or replace a fee."""

    TOPIC = INVOICING_COMMANDS
    KIND: ClassVar[Kind] = "command"

    def kafka_key(self) -> str:
        return INVOICING_CATALOGUE_KEY


class FeeDefined(Fee):
    """A fee as it is now defined."""

    TOPIC = INVOICING_CATALOGUE
    KIND: ClassVar[Kind] = "event"


MAX_WARNING_DAYS = 365
MAX_GRACE_DAYS = 365


class Package(Message):
    """R1: a package of sessions, e.g. "5 x 60-min massage with Dr A at Northside"."""

    package_id: PackageId
    name: Name
    items: list[PackageItem] = Field(
        min_length=1,
        max_length=50,
        description=f"Fee x count; at most {MAX_PACKAGE_SESSIONS} sessions in all, so the "
        "invoice's event, which carries every line, stays well under the message size limit.",
    )
    practitioners: Restriction = Field(default_factory=Restriction)
    locations: Restriction = Field(default_factory=Restriction)
    validity: Validity
    price_cents: Cents
    currency: Currency
    online_purchase: bool = Field(default=False, description="Patients can buy it online.")
    pay_before_use: bool = Field(default=False, description="Redeemable only once paid.")
    late_cancel_policy: LateCancelPolicy | None = None
    expiry_warning_days: list[Annotated[int, Field(gt=0, le=MAX_WARNING_DAYS)]] = Field(
        default_factory=list,
        max_length=10,
        description="R18: how many days before its last valid day an invoice of this package "
        "with unbooked sessions is announced as expiring soon (PackageExpiringSoon), once per "
        "invoice, expiry date and threshold, e.g. [30, 7]. Empty: no reminders.",
    )
    grace_days: Annotated[int, Field(ge=0, le=MAX_GRACE_DAYS)] = Field(
        default=0,
        description="R18: days after the last valid day before unbooked sessions are written off "
        "(SessionsExpired). Validity itself (R6) does not grow: an appointment after the last "
        "valid day is not linked; during the grace staff can still extend the invoice and keep "
        "the sessions.",
    )

    @field_validator("expiry_warning_days")
    @classmethod
    def _each_threshold_once(cls, days: list[int]) -> list[int]:
        if len(set(days)) != len(days):
            raise ValueError("each threshold once")
        return sorted(days, reverse=True)

    @field_validator("items")
    @classmethod
    def _sessions_fit_one_event(cls, items: list[PackageItem]) -> list[PackageItem]:
        sessions = sum(item.count for item in items)
        if sessions > MAX_PACKAGE_SESSIONS:
            raise ValueError(
                f"{sessions} sessions in all; a package has at most {MAX_PACKAGE_SESSIONS}"
            )
        return items

    def kafka_key(self) -> str:
        return self.package_id


class DefinePackage(Package):
    """Create or replace a package in the catalogue (invoices already issued keep their terms)."""

    TOPIC = INVOICING_COMMANDS
    KIND: ClassVar[Kind] = "command"

    def kafka_key(self) -> str:
        return INVOICING_CATALOGUE_KEY


class PackageDefined(Package):
    """A package as it is now defined."""

    TOPIC = INVOICING_CATALOGUE
    KIND: ClassVar[Kind] = "event"


class Practitioner(Message):
    practitioner_id: PractitionerId
    name: Name

    def kafka_key(self) -> str:
        return self.practitioner_id


class DefinePractitioner(Practitioner):
    """Create or rename a practitioner."""

    TOPIC = CALENDAR_COMMANDS
    KIND: ClassVar[Kind] = "command"

    def kafka_key(self) -> str:
        return CALENDAR_DIRECTORY_KEY


class PractitionerDefined(Practitioner):
    TOPIC = CALENDAR_DIRECTORY
    KIND: ClassVar[Kind] = "event"


class Location(Message):
    location_id: LocationId
    name: Name
    time_zone: TimeZone = Field(
        default=DEFAULT_TIME_ZONE,
        description="The location's IANA time zone (R15): its appointments' days, validity and "
        f"expiry are judged in it. A location defined without one is in {DEFAULT_TIME_ZONE}.",
    )

    def kafka_key(self) -> str:
        return self.location_id


class DefineLocation(Location):
    """Create or rename a location (a clinic site)."""

    TOPIC = CALENDAR_COMMANDS
    KIND: ClassVar[Kind] = "command"

    def kafka_key(self) -> str:
        return CALENDAR_DIRECTORY_KEY


class LocationDefined(Location):
    TOPIC = CALENDAR_DIRECTORY
    KIND: ClassVar[Kind] = "event"
