"""Clinic scope (issue #19 point 2): staff read and change only patients seen at their clinics; a
patient seen at two clinics is visible to both, with their whole story; a practitioner sees their
own calendar; every list is paged. Through the real broker and databases, with access tokens of
the local issuer verified by the calendar, invoicing and the matcher."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from packline_contracts.catalogue import DefineLocation, DefinePractitioner
from packline_contracts.invoices import IssuePackageInvoice, PackageInvoiceIssued, PurchaseChannel
from packline_contracts.patients import RegisterPatient
from packline_contracts.topics import INVOICING_EVENTS
from packline_core import issuer
from packline_core.reconcile import every_page

from tests.clinic import (
    DR_A,
    DR_B,
    MASSAGE_60,
    NORTHSIDE,
    SETUP,
    SOUTHSIDE,
    booking,
    days_ahead,
    fee_commands,
    package,
    patient,
)
from tests.conftest import Infrastructure, ReadEvents, StartService
from tests.e2e.console_process import console_process
from tests.helpers import eventually
from tests.integration.test_identity import AUDIENCE, client, local_issuer
from tests.integration.test_invoicing import _has_package, serving

pytestmark = pytest.mark.infra


async def test_staff_see_and_change_only_patients_of_their_clinics(
    start_service: StartService,
    producer: Any,
    read_events: ReadEvents,
    tmp_path: Path,
    infrastructure: Infrastructure,
    topic_prefix: str,
) -> None:
    keys = issuer.Keys(tmp_path / "issuer-keys.json")
    invoicing_events = await read_events(INVOICING_EVENTS)
    async with local_issuer(keys) as issuer_url:
        oidc: dict[str, Any] = {
            "oidc_issuer": issuer_url,
            "oidc_audience": AUDIENCE,
            "staff_api_open": False,
        }

        def token(**claims: Any) -> str:
            who = {"sub": "sam", "name": "Sam Lee", "role": "reception", "clinics": [NORTHSIDE]}
            return issuer.mint(keys, issuer=issuer_url, audience=AUDIENCE, **(who | claims))

        calendar = await start_service("calendar", **oidc)
        invoicing = await start_service("invoicing", **oidc)
        matcher = await start_service("matcher", **oidc)
        for message in SETUP:
            if isinstance(message, DefinePractitioner | DefineLocation):
                await producer.send(message)
        for message in [*fee_commands(), package("south-2", count=2, locations=[SOUTHSIDE])]:
            await producer.send(message)

        async def ready() -> bool:
            fees = await calendar.pool.fetchval("SELECT count(*) FROM fees")
            places = await invoicing.pool.fetchval("SELECT count(*) FROM locations")
            return bool(fees == 2 and places == 2 and await _has_package(invoicing, "south-2"))

        await eventually(ready, what="the catalogue and the directory")

        # Sofia is seen only at Southside: an appointment there, and a package sold there.
        # Bo is seen at both: three appointments, one at Northside.
        sofia, bo = patient(), patient()
        await producer.send(RegisterPatient(patient_id=sofia, name="Sofia Southside"))
        await producer.send(RegisterPatient(patient_id=bo, name="Bo Both"))
        sofia_visit = booking(sofia, days_ahead(2), location=SOUTHSIDE, practitioner=DR_B)
        bo_visits = [
            booking(bo, days_ahead(3), location=SOUTHSIDE, practitioner=DR_B),
            booking(bo, days_ahead(4), location=NORTHSIDE, practitioner=DR_A),
            booking(bo, days_ahead(5), location=SOUTHSIDE, practitioner=DR_A),
        ]
        for visit in [sofia_visit, *bo_visits]:
            await producer.send(visit)
        sale = IssuePackageInvoice(
            patient_id=sofia,
            invoice_id=uuid4(),
            package_id="south-2",
            channel=PurchaseChannel.ONLINE,
            issued_by="shop",
            issued_at=days_ahead(0),
            location_id=SOUTHSIDE,
        )
        await producer.send(sale)
        booked = {visit.appointment_id for visit in [sofia_visit, *bo_visits]}
        invoice = (
            await invoicing_events.wait_for(
                PackageInvoiceIssued, lambda e: e.payload.invoice_id == sale.invoice_id
            )
        ).payload.invoice

        async def every_service_knows() -> bool:
            known = await invoicing.pool.fetchval(
                "SELECT count(*) FROM known_appointments WHERE appointment_id = ANY($1::uuid[])",
                list(booked),
            )
            seen = await matcher.pool.fetchval(
                "SELECT count(*) FROM appointments WHERE appointment_id = ANY($1::uuid[])",
                list(booked),
            )
            names = await calendar.pool.fetchval(
                "SELECT count(*) FROM patients WHERE patient_id = ANY($1::text[])", [sofia, bo]
            )
            linked = await invoicing.pool.fetchval(
                "SELECT count(*) FROM invoice_lines WHERE invoice_id = $1 AND status = 'linked'",
                sale.invoice_id,
            )  # the matcher links her Southside visit to her Southside package
            return bool(known == seen == len(booked) and names == 2 and linked == 1)

        await eventually(every_service_knows, what="every service has read the bookings")

        line = await invoicing.pool.fetchval(
            "SELECT line_id FROM invoice_lines WHERE invoice_id = $1 AND status = 'open'",
            sale.invoice_id,
        )
        line_before = await invoicing.pool.fetchrow(
            "SELECT status, version FROM invoice_lines WHERE line_id = $1", line
        )
        async with (
            client(calendar, token()) as cal,
            client(invoicing, token()) as inv,
            client(matcher, token()) as match,
        ):
            # Sofia: refused everywhere, reading and changing (403, naming where she is seen).
            refused: dict[str, httpx.Response] = {
                "calendar patient": await cal.get(f"/patients/{sofia}"),
                "calendar appointments": await cal.get(f"/patients/{sofia}/appointments"),
                "calendar panel": await cal.get(f"/appointments/{sofia_visit.appointment_id}"),
                "invoices": await inv.get(f"/patients/{sofia}/invoices"),
                "invoice": await inv.get(f"/invoices/{invoice.invoice_id}"),
                "book her line": await inv.put(
                    f"/invoices/{invoice.invoice_id}/lines/{line}/appointment",
                    json={"starts_at": days_ahead(6).isoformat(), "location_id": SOUTHSIDE},
                ),
                "matcher links": await match.get(f"/patients/{sofia}/links"),
                "matcher explanation": await match.get(
                    f"/appointments/{sofia_visit.appointment_id}/explanation"
                ),
                "southside day": await cal.get(
                    "/appointments",
                    params={"date": days_ahead(2).date().isoformat(), "location_id": SOUTHSIDE},
                ),
            }
            for what, answer in refused.items():
                assert answer.status_code == 403, f"{what}: {answer.status_code} {answer.text}"
            assert "southside" in refused["invoice"].json()["detail"]
            found = await cal.get("/patients", params={"name": "southside"})
            assert found.json()["patients"] == [], "Sofia is not found by name at Northside"
            after = await invoicing.pool.fetchrow(
                "SELECT status, version FROM invoice_lines WHERE line_id = $1", line
            )
            assert after == line_before, "the refused booking changed nothing"

            # Bo: seen at Northside, so his whole story is visible there, paged.
            assert (await cal.get("/patients", params={"name": "bo both"})).json()["patients"]
            first = await cal.get(f"/patients/{bo}/appointments", params={"limit": 2})
            assert first.status_code == 200, first.text
            assert "next" in first.links, "two of three: a next page"
            rest = await cal.get(first.links["next"]["url"])
            assert "next" not in rest.links
            pages = [a["appointment_id"] for a in first.json() + rest.json()]
            assert pages == [str(v.appointment_id) for v in bo_visits], "in time order, once each"
            panel = await cal.get(f"/appointments/{bo_visits[0].appointment_id}")
            assert panel.status_code == 200, "his Southside appointment too"
            seen = await match.get(f"/patients/{bo}/appointments")
            assert seen.status_code == 200 and len(seen.json()) == 3

            # The calendar of the caller's clinics only.
            span = {"from": days_ahead(1).isoformat(), "to": days_ahead(7).isoformat()}
            day = (await cal.get("/appointments", params=span)).json()
            assert {a["location_id"] for a in day} == {NORTHSIDE}
            assert [a["appointment_id"] for a in day] == [str(bo_visits[1].appointment_id)]

        # A billing clerk at Northside cannot sell at Southside, nor to Sofia.
        async with client(invoicing, token(sub="bea", role="billing")) as bea:
            elsewhere = await bea.post(
                "/invoices",
                json={"patient_id": bo, "package_id": "south-2", "location_id": SOUTHSIDE},
            )
            assert elsewhere.status_code == 403, elsewhere.text
            to_sofia = await bea.post(
                "/invoices", json={"patient_id": sofia, "package_id": "south-2"}
            )
            assert to_sofia.status_code == 403, to_sofia.text
            assert (
                await invoicing.pool.fetchval(
                    "SELECT count(*) FROM package_invoices WHERE patient_id = ANY($1::text[])",
                    [sofia, bo],
                )
                == 1
            ), "no sale was recorded"

        # Southside staff see Sofia.
        southside = token(sub="sue", clinics=[SOUTHSIDE])
        async with client(calendar, southside) as sue, client(invoicing, southside) as sue_inv:
            assert (await sue.get(f"/patients/{sofia}/appointments")).status_code == 200
            mine = await sue_inv.get(f"/patients/{sofia}/invoices")
            assert mine.status_code == 200 and len(mine.json()) == 1

        # A practitioner sees their own appointments, at either clinic.
        adams = token(
            sub="adams",
            role="practitioner",
            clinics=[NORTHSIDE, SOUTHSIDE],
            extra={"practitioner_id": DR_A},
        )
        async with client(calendar, adams) as dr:
            week = (await dr.get("/appointments", params=span)).json()
            assert {a["practitioner_id"] for a in week} == {DR_A} and len(week) == 2
            other = await dr.get(f"/appointments/{bo_visits[0].appointment_id}")
            assert other.status_code == 403, "Dr Baker's appointment"
            theirs = (await dr.get(f"/patients/{bo}/appointments")).json()
            assert {a["practitioner_id"] for a in theirs} == {DR_A}
            asked = await dr.get("/appointments", params=span | {"practitioner_id": DR_B})
            assert asked.status_code == 403

        # The console checks a calendar command against the caller's clinics before publishing.
        async with (
            serving(calendar) as calendar_url,
            serving(invoicing) as invoicing_url,
            serving(matcher) as matcher_url,
            console_process(
                infrastructure,
                topic_prefix,
                {"calendar": calendar_url, "invoicing": invoicing_url, "matcher": matcher_url},
            ) as console,
            httpx.AsyncClient(
                base_url=console, headers={"Authorization": f"Bearer {token()}"}, timeout=30
            ) as desk,
        ):
            slot = {
                "practitioner_id": DR_A,
                "date": days_ahead(8).date().isoformat(),
                "time": "09:00",
                "fee_ids": [MASSAGE_60],
            }
            denied = {
                "book at Southside": await desk.post(
                    "/commands/appointments",
                    json=slot | {"patient_id": bo, "location_id": SOUTHSIDE},
                ),
                "book Sofia": await desk.post(
                    "/commands/appointments",
                    json=slot | {"patient_id": sofia, "location_id": NORTHSIDE},
                ),
                "cancel Sofia's": await desk.post(
                    f"/commands/appointments/{sofia_visit.appointment_id}/cancel",
                    json={"patient_id": sofia},
                ),
            }
            for what, answer in denied.items():
                assert answer.status_code == 403, f"{what}: {answer.status_code} {answer.text}"
            mismatch = await desk.post(
                f"/commands/appointments/{bo_visits[1].appointment_id}/cancel",
                json={"patient_id": sofia},
            )
            assert mismatch.status_code == 422, mismatch.text
            assert mismatch.json()["detail"][0]["loc"] == ["body", "patient_id"]
            sent = await desk.post(
                "/commands/appointments", json=slot | {"patient_id": bo, "location_id": NORTHSIDE}
            )
            assert sent.status_code == 202, sent.text
            new_id = UUID(sent.json()["appointment_id"])

            async def recorded() -> Any:
                return await calendar.pool.fetchval(
                    "SELECT booked_by FROM appointments WHERE appointment_id = $1", new_id
                )

            assert await eventually(recorded, what="the console's booking") == "sam"
        cancelled = await calendar.pool.fetchval(
            "SELECT count(*) FROM appointments WHERE patient_id = $1 AND status <> 'booked'", sofia
        )
        assert cancelled == 0, "nothing of Sofia's was changed"


async def test_a_cursor_not_given_by_the_list_is_refused_naming_it(
    start_service: StartService,
) -> None:
    calendar = await start_service("calendar")
    async with client(calendar, None) as cal:
        for cursor in ["x", "WyJhIl0=", "WyJub3QgYSB0aW1lIiwgImEiXQ=="]:
            answer = await cal.get(f"/patients/{patient()}/appointments", params={"cursor": cursor})
            assert answer.status_code == 422, answer.text
            assert answer.json()["detail"][0]["loc"] == ["query", "cursor"]


async def test_links_are_read_page_by_page_as_reconcile_follows_them(
    start_service: StartService,
) -> None:
    """GET /links pages in (appointment, line) order; packline_core.reconcile.every_page follows
    the Link rel=next headers to the end and gets each link once."""
    matcher = await start_service("matcher")
    invoice_id = uuid4()
    await matcher.pool.execute(
        "INSERT INTO invoices (invoice_id, patient_id, package_id, package_name, issued_at,"
        " redeemable, unpaid) VALUES ($1, 'p-1', 'p5', '5 x massage', now(), true, false)",
        invoice_id,
    )
    held = sorted((uuid4(), uuid4()) for _ in range(5))  # (appointment, line)
    for number, (appointment_id, line_id) in enumerate(held, start=1):
        await matcher.pool.execute(
            "INSERT INTO lines (line_id, invoice_id, patient_id, line_number, fee_id,"
            " valid_from, valid_until, status, appointment_id)"
            " VALUES ($1, $2, 'p-1', $3, 'massage', current_date, current_date, 'linked', $4)",
            line_id,
            invoice_id,
            number,
            appointment_id,
        )
    async with client(matcher, None) as http:
        first = await http.get("/links", params={"limit": 2})
        assert len(first.json()) == 2 and "next" in first.links
        whole = await every_page(http, "/links?limit=2")
    assert [(UUID(r["appointment_id"]), UUID(r["line_id"])) for r in whole] == held
