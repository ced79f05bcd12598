"""A package shared within a household (R18, issue #22 point 4), with the three real services on
the real broker and databases: a child's appointment links to the parent's package shared at
sale, and the rule says whose package it was; a package shared later links the child's waiting
appointment; a patient outside the household is never linked to it."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import pytest
from packline_contracts.invoices import (
    LineLinked,
    PackageInvoiceShared,
    SharePackageInvoice,
)
from packline_contracts.matching import AppointmentNotMatched
from packline_contracts.patients import RegisterPatient

from tests.clinic import booking, days_ahead, package, patient
from tests.conftest import ReadEvents, StartService
from tests.helpers import eventually
from tests.system import System, start_system

pytestmark = pytest.mark.infra

FAMILY = package("family", count=2)


@pytest.fixture
async def system(start_service: StartService, producer: Any, read_events: ReadEvents) -> System:
    return await start_system(start_service, producer, read_events, [FAMILY])


async def named(system: System, name: str) -> str:
    """A patient in the directory, known to the matcher by name."""
    who = patient()
    await system.producer.send(RegisterPatient(patient_id=who, name=name))
    await system.matcher_has("SELECT 1 FROM patient_names WHERE patient_id = $1", who)
    return who


async def test_a_childs_appointment_links_to_the_parents_shared_package(system: System) -> None:
    parent = await named(system, "Ann Lee")
    child = await named(system, "Tom Lee")
    invoice = await system.buy(parent, "family", shared_with=[child])
    assert invoice.shared_with == [child]

    appointment = booking(child, days_ahead(2, 9))
    await system.book(appointment)
    linked = await system.events.wait_for(
        LineLinked, lambda e: e.payload.appointment_id == appointment.appointment_id
    )
    assert linked.payload.invoice_id == invoice.invoice_id
    assert linked.payload.rule.endswith(", shared by Ann Lee")
    assert linked.payload.balance.remaining == 1
    # The calendar notes the package on the child's appointment (R4).
    await eventually(
        lambda: system.calendar.pool.fetchval(
            "SELECT invoice_id = $2 FROM package_notes WHERE appointment_id = $1",
            appointment.appointment_id,
            invoice.invoice_id,
        ),
        what="the calendar's package note on the child's appointment",
    )

    # The parent's own appointment takes the other session; a third, the child's again, is
    # told both sessions are booked, and whose package it is.
    own = booking(parent, days_ahead(3, 9))
    await system.book(own)
    await system.events.wait_for(
        LineLinked, lambda e: e.payload.appointment_id == own.appointment_id
    )
    again = booking(child, days_ahead(4, 9))
    await system.book(again)
    told = await system.events.wait_for(
        AppointmentNotMatched, lambda e: e.payload.appointment_id == again.appointment_id
    )
    (candidate,) = told.payload.candidates
    assert candidate.invoice_id == invoice.invoice_id
    assert candidate.reason == "all 2 sessions booked, shared by Ann Lee"


async def test_a_package_shared_later_links_the_waiting_appointment(system: System) -> None:
    parent = await named(system, "Kim Park")
    child = await named(system, "Joy Park")
    stranger = patient()
    invoice = await system.buy(parent, "family")
    waiting = booking(child, days_ahead(2, 9))
    await system.book(waiting)
    outsider = booking(stranger, days_ahead(2, 11))
    await system.book(outsider)
    await system.matcher_has(
        "SELECT count(*) = 2 FROM appointments WHERE appointment_id = ANY($1::uuid[])",
        [waiting.appointment_id, outsider.appointment_id],
    )

    sharing = SharePackageInvoice(
        patient_id=parent,
        invoice_id=invoice.invoice_id,
        sharing_id=uuid4(),
        shared_with=[child],
        reason="Joy's sessions come from her mother's package",
        shared_by="reception:sam",
    )
    await system.producer.send(sharing)
    shared = await system.events.wait_for(
        PackageInvoiceShared, lambda e: e.payload.sharing_id == sharing.sharing_id
    )
    assert (shared.payload.added, shared.payload.removed) == ([child], [])
    linked = await system.events.wait_for(
        LineLinked, lambda e: e.payload.appointment_id == waiting.appointment_id
    )
    assert linked.payload.rule.endswith(", shared by Kim Park")
    # Only the household: the stranger's appointment holds no line of this package.
    await system.matcher_has(
        "SELECT count(*) = 1 FROM lines WHERE invoice_id = $1 AND appointment_id IS NOT NULL",
        invoice.invoice_id,
    )
    assert not await system.matcher.pool.fetchval(
        "SELECT 1 FROM lines WHERE appointment_id = $1", outsider.appointment_id
    )
