"""Two replicas of the matcher (one consumer group, one database) on a mixed stream for 200
patients end with the same links as one replica on the same stream."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from packline_contracts.appointments import BookAppointment, CancelAppointment
from packline_contracts.client import PacklineProducer
from packline_contracts.ids import derived_id
from packline_contracts.invoices import IssuePackageInvoice, PurchaseChannel
from packline_contracts.types import BookingSource
from packline_core.topics import create_topics

from tests.clinic import DR_A, MASSAGE_60, NORTHSIDE, SETUP, days_ahead, fee_commands, package
from tests.conftest import TEST_PARTITIONS, CreateDatabase, Infrastructure, StartService
from tests.helpers import eventually

pytestmark = pytest.mark.infra

PATIENTS = 200


def workload() -> tuple[list[IssuePackageInvoice], list[BookAppointment | CancelAppointment]]:
    """Purchases, then each patient's bookings and a cancellation, with fixed ids."""
    purchases: list[IssuePackageInvoice] = []
    bookings: list[BookAppointment | CancelAppointment] = []
    issued_at = days_ahead(0, hour=0)
    for n in range(PATIENTS):
        who = f"replica-patient-{n}"
        purchases.append(
            IssuePackageInvoice(
                patient_id=who,
                invoice_id=derived_id("replicas", who, "invoice"),
                package_id="two-dr-a",
                channel=PurchaseChannel.ONLINE,
                issued_by="shop",
                issued_at=issued_at,
            )
        )
        appointments = [derived_id("replicas", who, k) for k in range(3)]
        for k, appointment_id in enumerate(appointments):
            slot = 3 * n + k  # every booking its own 20 minutes of Dr Adams's diary
            bookings.append(
                BookAppointment(
                    patient_id=who,
                    appointment_id=appointment_id,
                    practitioner_id=DR_A,
                    location_id=NORTHSIDE,
                    starts_at=days_ahead(2 + slot // 30, hour=7)
                    + timedelta(minutes=20 * (slot % 30)),
                    duration_minutes=20,
                    fee_ids=[MASSAGE_60],
                    source=BookingSource.ONLINE,
                    booked_by="online",
                )
            )
        if n % 4 == 0:  # a quarter cancel their first booking: its line goes to the third
            bookings.append(
                CancelAppointment(
                    patient_id=who,
                    appointment_id=appointments[0],
                    cancelled_by="patient",
                    cancelled_at=days_ahead(0),
                )
            )
    return purchases, bookings


async def run(
    matchers: int,
    prefix: str,
    infrastructure: Infrastructure,
    start_service: StartService,
    create_database: CreateDatabase,
) -> dict[tuple[str, int], Any]:
    await create_topics(infrastructure.kafka_bootstrap, partitions=TEST_PARTITIONS, prefix=prefix)
    calendar = await start_service("calendar", topic_prefix=prefix)
    invoicing = await start_service("invoicing", topic_prefix=prefix)
    matcher_db = await create_database(f"matcher{matchers}")
    replicas = [
        await start_service("matcher", database_url=matcher_db, topic_prefix=prefix)
        for _ in range(matchers)
    ]
    purchases, bookings = workload()
    async with PacklineProducer(
        infrastructure.kafka_bootstrap, producer="test", topic_prefix=prefix
    ) as producer:
        for message in [
            *SETUP[:4],
            *fee_commands(),
            package("two-dr-a", count=2, practitioners=[DR_A]),
        ]:
            await producer.send(message)

        async def catalogue_loaded() -> bool:
            return bool(await invoicing.pool.fetchval("SELECT count(*) FROM packages") == 1)

        await eventually(catalogue_loaded, what="the package (its key is not the patients')")

        async def directory_loaded() -> bool:
            # Fees reach the calendar from invoicing's catalogue topic, later than the package
            # reached invoicing: a booking before them would be refused as of an unknown fee.
            people = await calendar.pool.fetchval("SELECT count(*) FROM practitioners")
            fees = await calendar.pool.fetchval("SELECT count(*) FROM fees")
            return bool(people == 2 and fees == 2)

        await eventually(directory_loaded, what="the calendar's practitioners and fees")
        for message in purchases:
            await producer.send(message)

        async def all_invoices_known() -> bool:
            return bool(
                await replicas[0].pool.fetchval("SELECT count(*) FROM invoices") == PATIENTS
            )

        await eventually(all_invoices_known, within=120, what="every purchase to reach the matcher")
        for message in bookings:
            await producer.send(message)

    expected_links = PATIENTS * 2
    # Every line is linked long before the cancellations are all applied (each patient's first
    # two bookings take both lines): the end is when no cancelled appointment holds a line.
    cancelled = [m.appointment_id for m in bookings if isinstance(m, CancelAppointment)]

    async def state() -> dict[str, int]:
        return {
            "linked": await invoicing.pool.fetchval(
                "SELECT count(*) FROM invoice_lines WHERE status = 'linked'"
            ),
            "cancelled still linked": await invoicing.pool.fetchval(
                "SELECT count(*) FROM invoice_lines WHERE appointment_id = ANY($1::uuid[])",
                cancelled,
            ),
            "unsent": await invoicing.pool.fetchval(
                "SELECT count(*) FROM outbox WHERE sent_at IS NULL"
            ),
        }

    async def quiet() -> bool:
        now = await state()
        return now == {"linked": expected_links, "cancelled still linked": 0, "unsent": 0}

    await eventually(
        quiet, within=240, interval=0.5, what=f"{expected_links} links", describe=state
    )
    rows = await invoicing.pool.fetch(
        "SELECT patient_id, line_number, appointment_id FROM invoice_lines"
    )
    return {(row["patient_id"], row["line_number"]): row["appointment_id"] for row in rows}


@pytest.mark.timeout(600)
async def test_two_matcher_replicas_link_exactly_as_one(
    infrastructure: Infrastructure,
    start_service: StartService,
    create_database: CreateDatabase,
    test_id: str,
) -> None:
    one = await run(1, f"one-{test_id}.", infrastructure, start_service, create_database)
    two = await run(2, f"two-{test_id}.", infrastructure, start_service, create_database)
    assert len(one) == PATIENTS * 2
    assert one == two
