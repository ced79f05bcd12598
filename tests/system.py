"""The three services together, in this process, on the test's own topics and databases: a clinic
with practitioners, locations, fees and packages, and helpers to drive it through Kafka."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import httpx
from packline_contracts.appointments import AppointmentBooked, BookAppointment
from packline_contracts.client import PacklineConsumer, PacklineProducer
from packline_contracts.invoices import (
    IssuePackageInvoice,
    PackageInvoice,
    PackageInvoiceIssued,
    PurchaseChannel,
)
from packline_contracts.topics import CALENDAR_EVENTS, INVOICING_EVENTS, MATCHER_EVENTS
from packline_core.service import Service

from tests.clinic import SETUP, fee_commands, package
from tests.conftest import ReadEvents, StartService
from tests.helpers import eventually


@dataclass
class System:
    calendar: Service
    invoicing: Service
    matcher: Service
    producer: PacklineProducer
    events: PacklineConsumer

    async def buy(self, patient_id: str, package_id: str, **extra: Any) -> PackageInvoice:
        invoice_id = uuid4()
        await self.producer.send(
            IssuePackageInvoice(
                patient_id=patient_id,
                invoice_id=invoice_id,
                package_id=package_id,
                channel=PurchaseChannel.STAFF,
                issued_by="reception:maria",
                issued_at=extra.pop("issued_at", datetime.now(UTC)),
                **extra,
            )
        )
        issued = await self.events.wait_for(
            PackageInvoiceIssued, lambda e: e.payload.invoice_id == invoice_id
        )
        # Events of different topics reach the matcher in no set order: wait until it knows.
        await self.matcher_has("SELECT 1 FROM invoices WHERE invoice_id = $1", invoice_id)
        return issued.payload.invoice

    async def matcher_has(self, query: str, *args: Any) -> None:
        async def known() -> bool:
            return bool(await self.matcher.pool.fetchval(query, *args))

        await eventually(known, what=f"the matcher to know: {query} {args}")

    async def book(self, command: BookAppointment) -> UUID:
        await self.producer.send(command)
        await self.events.wait_for(
            AppointmentBooked,
            lambda e: e.payload.appointment.appointment_id == command.appointment_id,
        )
        await self.matcher_has(
            "SELECT 1 FROM appointments WHERE appointment_id = $1", command.appointment_id
        )
        return command.appointment_id


async def start_system(
    start_service: StartService,
    producer: PacklineProducer,
    read_events: ReadEvents,
    packages: list[Any] | None = None,
) -> System:
    calendar = await start_service("calendar")
    invoicing = await start_service("invoicing")
    matcher = await start_service("matcher")
    packages = packages or [package()]
    for message in [*SETUP[:4], *fee_commands(), *packages]:
        await producer.send(message)

    async def counts() -> dict[str, int]:
        return {
            "calendar fees": await calendar.pool.fetchval("SELECT count(*) FROM fees"),
            "matcher names": await matcher.pool.fetchval("SELECT count(*) FROM names"),
            "invoicing packages": await invoicing.pool.fetchval("SELECT count(*) FROM packages"),
            "invoicing locations": await invoicing.pool.fetchval("SELECT count(*) FROM locations"),
        }

    async def loaded() -> bool:
        wanted = {
            "calendar fees": 2,
            "matcher names": 4,
            "invoicing packages": len(packages),
            "invoicing locations": 2,
        }
        return await counts() == wanted

    await eventually(loaded, what="the clinic's directory and catalogue", describe=counts)
    events = await read_events(CALENDAR_EVENTS, INVOICING_EVENTS, MATCHER_EVENTS)
    return System(calendar, invoicing, matcher, producer, events)


async def calendar_alone(start_service: StartService, producer: PacklineProducer) -> Service:
    """The calendar on its own, with the clinic's directory and fees applied."""
    service = await start_service("calendar")
    for message in SETUP:
        await producer.send(message)

    async def directory_loaded() -> bool:
        fees = await service.pool.fetchval("SELECT count(*) FROM fees")
        people = await service.pool.fetchval("SELECT count(*) FROM practitioners")
        return bool(fees == 2 and people == 2)

    await eventually(directory_loaded, what="the calendar's directory and fees")
    return service


def http(service: Service) -> httpx.AsyncClient:
    """A client of ``service``'s HTTP API, in this process."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=service.http), base_url="http://x")
