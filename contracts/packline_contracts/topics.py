"""The one registry of Packline's Kafka topics.

Every service, the topic-creation command and the documentation read topic names from here; no
topic name is written as a string anywhere else. A deployment (or a test) may put a prefix in front
of every name, so that several Packline installations can share one broker.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

DAY_MS = 24 * 60 * 60 * 1000


class Cleanup(StrEnum):
    DELETE = "delete"
    COMPACT = "compact"


@dataclass(frozen=True, slots=True)
class Topic:
    """A Kafka topic: its name, what its key is, and how long Kafka keeps it."""

    name: str
    key: str
    purpose: str
    owner: str
    cleanup: Cleanup = Cleanup.DELETE
    retention_ms: int = 7 * DAY_MS
    partitions: int | None = None  # None: the deployment's default (PACKLINE_PARTITIONS)
    # Who may write it (Kafka principals: the services and OUTSIDE_PRODUCERS); the broker's
    # ACLs are made from this (packline-admin acls). Empty: the owner alone.
    writers: tuple[str, ...] = ()

    @property
    def producers(self) -> tuple[str, ...]:
        """The principals allowed to write this topic."""
        return self.writers or (self.owner,)

    def config(self) -> dict[str, str]:
        """Topic-level configuration passed to Kafka when the topic is created."""
        return {"cleanup.policy": self.cleanup.value, "retention.ms": str(self.retention_ms)}


CALENDAR_COMMANDS = Topic(
    name="packline.calendar.commands",
    key="patient id (directory commands: calendar-directory)",
    purpose="Book, reschedule, change, cancel or delete an appointment (staff, online, invoicing); "
    "register or update a patient (clinics without a patient-records service).",
    owner="calendar",
    writers=("staff-front-end", "online-bookings", "invoicing"),
)
CALENDAR_EVENTS = Topic(
    name="packline.calendar.events",
    key="patient id",
    purpose="What happened to appointments, and the results of booking commands.",
    owner="calendar",
)
INVOICING_COMMANDS = Topic(
    name="packline.invoicing.commands",
    key="patient id (catalogue commands: invoicing-catalogue)",
    purpose="Purchases, payments, voids, refunds and line edits, from outside producers (staff "
    "front end, online bookings, payments).",
    owner="invoicing",
    writers=("staff-front-end", "online-bookings", "payments"),
)
INVOICING_LINKS = Topic(
    name="packline.invoicing.links",
    key="patient id",
    purpose="The matcher's link / unlink commands, on a topic of their own so that the broker "
    "lets the matcher alone write them.",
    owner="invoicing",
    writers=("matcher",),
)
INVOICING_EVENTS = Topic(
    name="packline.invoicing.events",
    key="patient id",
    purpose="Package invoices issued, paid and voided; lines linked, unlinked or refused.",
    owner="invoicing",
)
INVOICING_CATALOGUE = Topic(
    name="packline.invoicing.catalogue",
    key="fee id or package id",
    purpose="The latest definition of every fee and package (compacted: read it from the start "
    "to rebuild a catalogue).",
    owner="invoicing",
    cleanup=Cleanup.COMPACT,
    retention_ms=-1,
    partitions=3,
)
CALENDAR_DIRECTORY = Topic(
    name="packline.calendar.directory",
    key="practitioner id or location id",
    purpose="The latest definition of every practitioner and location (compacted).",
    owner="calendar",
    cleanup=Cleanup.COMPACT,
    retention_ms=-1,
    partitions=3,  # small and rarely written; read whole by every reader
)
PATIENT_DIRECTORY = Topic(
    name="packline.patients.directory",
    key="patient id",
    purpose="The latest entry of every patient: name, preferred name, date of birth, contact "
    "(compacted). Published by the practice's patient-records service, or by calendar when it "
    "applies RegisterPatient / UpdatePatient.",
    owner="patient records (calendar for RegisterPatient / UpdatePatient)",
    writers=("patient-records", "calendar"),
    cleanup=Cleanup.COMPACT,
    retention_ms=-1,
    partitions=3,  # rarely written (a registration, a change of name); read whole by calendar
)
MATCHER_EVENTS = Topic(
    name="packline.matcher.events",
    key="patient id",
    purpose="Why an appointment was not matched to a package line (R7).",
    owner="matcher",
)
OPS_PROBES = Topic(
    name="packline.ops.probes",
    key="probe id",
    purpose="End-to-end probes: every service records each probe it reads, proving the path "
    "broker -> service -> database works.",
    owner="any",
    writers=("calendar", "invoicing", "matcher"),
    retention_ms=1 * DAY_MS,
)


def dead_letter_topic(service: str) -> Topic:
    """The dead-letter topic of one service's consumers: messages it could never apply."""
    return Topic(
        name=f"packline.{service}.dead-letters",
        key="the original message's key",
        purpose=f"Messages the {service} service rejected, with the reason and their origin.",
        owner=service,
        retention_ms=30 * DAY_MS,
    )


SERVICES: tuple[str, ...] = ("calendar", "invoicing", "matcher")
# The kinds of outside producer, each its own Kafka principal (R17): they write commands only.
OUTSIDE_PRODUCERS: tuple[str, ...] = (
    "staff-front-end",
    "online-bookings",
    "payments",
    "patient-records",
)

# Outside readers: topics a kind of outside principal reads by assigning itself their partitions
# (no consumer group), e.g. the staff console's live page updates.
OUTSIDE_READERS: dict[str, tuple[Topic, ...]] = {
    "staff-front-end": (CALENDAR_EVENTS, INVOICING_EVENTS, MATCHER_EVENTS),
}

TOPICS: tuple[Topic, ...] = (
    CALENDAR_COMMANDS,
    CALENDAR_EVENTS,
    CALENDAR_DIRECTORY,
    PATIENT_DIRECTORY,
    INVOICING_COMMANDS,
    INVOICING_LINKS,
    INVOICING_EVENTS,
    INVOICING_CATALOGUE,
    MATCHER_EVENTS,
    OPS_PROBES,
    *(dead_letter_topic(service) for service in SERVICES),
)


@dataclass(frozen=True, slots=True)
class Consumer:
    """One consumer of a service: the topics it reads in one consumer group, and where the
    messages it can never apply go."""

    service: str
    name: str
    topics: tuple[Topic, ...]

    @property
    def dead_letters(self) -> Topic:
        return dead_letter_topic(self.service)


CONSUMERS: tuple[Consumer, ...] = (
    Consumer("calendar", "commands", (CALENDAR_COMMANDS,)),
    Consumer("calendar", "package-notes", (INVOICING_EVENTS,)),
    Consumer("calendar", "fees", (INVOICING_CATALOGUE,)),
    Consumer("calendar", "patients", (PATIENT_DIRECTORY,)),
    # One group for both command topics: a patient's link commands keep their order (one topic,
    # one partition), and against the other commands invoicing re-checks the line at apply time.
    Consumer("invoicing", "commands", (INVOICING_COMMANDS, INVOICING_LINKS)),
    Consumer("invoicing", "booking-results", (CALENDAR_EVENTS,)),
    Consumer("invoicing", "directory", (CALENDAR_DIRECTORY,)),
    Consumer("matcher", "events", (CALENDAR_EVENTS, INVOICING_EVENTS)),
    Consumer("matcher", "directory", (CALENDAR_DIRECTORY, INVOICING_CATALOGUE, PATIENT_DIRECTORY)),
    Consumer("calendar", "probes", (OPS_PROBES,)),
    Consumer("invoicing", "probes", (OPS_PROBES,)),
    Consumer("matcher", "probes", (OPS_PROBES,)),
)


def consumer(service: str, name: str) -> Consumer:
    for candidate in CONSUMERS:
        if candidate.service == service and candidate.name == name:
            return candidate
    raise KeyError(f"no consumer {service}/{name} in the registry")
