"""A package line's whole story in the console (issue #21 points 2 and 3), in a real browser
against the console and the three services as processes: the invoice's number on the invoice
card and the patient's page, and each line's History disclosure telling what happened to it
(linked, moved, unlinked when it was cancelled) in the clinic's words and Sydney's time; opened
and closed from the keyboard, its failure said with Retry, checked with axe-core at desktop and
phone widths. Screenshots go to ``test-artifacts/console/``."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4
from zoneinfo import ZoneInfo

import pytest
from packline_contracts.appointments import CancelAppointment, RescheduleAppointment
from packline_contracts.client import PacklineProducer
from packline_contracts.patients import RegisterPatient

from tests.clinic import DR_A, booking
from tests.e2e import test_console_browser as browser_tests
from tests.e2e.packline_processes import Processes
from tests.e2e.test_console_calendar import WIDTHS, assert_accessible, watched_page
from tests.helpers import eventually

pytestmark = [pytest.mark.infra, pytest.mark.timeout(300)]

system_with_console = browser_tests.console
SHOTS = browser_tests.SHOTS
PACKAGE = "5 x 60-min massage"


async def story_of(system: Processes, invoice_id: str, wanted: list[str]) -> list[dict[str, Any]]:
    """Line 1's story from invoicing once it tells ``wanted``."""
    told: list[dict[str, Any]] = []

    async def complete() -> bool:
        answer = await system.http["invoicing"].get(f"/invoices/{invoice_id}/lines/1/history")
        told[:] = answer.json() if answer.status_code == 200 else []
        return [entry["happened"] for entry in told] == wanted

    await eventually(complete, within=60, what=f"line 1's story {wanted}", describe=lambda: told)
    return told


async def test_the_invoice_number_and_a_lines_history_in_the_browser(
    system_with_console: tuple[str, Processes], producer: PacklineProducer
) -> None:
    from playwright.async_api import async_playwright, expect

    url, system = system_with_console
    who = f"patient-{uuid4().hex[:6]}"
    name = f"Zoë Storey {who[-6:]}"
    invoice_id = await browser_tests.buy(producer, system, who)
    await producer.send(RegisterPatient(patient_id=who, name=name))
    number = (await system.http["invoicing"].get(f"/invoices/{invoice_id}")).json()[
        "invoice_number"
    ]
    assert re.fullmatch(r"INV-\d{6,}", number)

    # Booked with Dr Adams at 10:00 (Sydney) in three days, moved to 14:00, then cancelled.
    sydney = ZoneInfo(browser_tests.CLINIC_ZONE)
    day = (datetime.now(sydney) + timedelta(days=3)).date()
    at_ten = datetime.fromisoformat(f"{day}T10:00").replace(tzinfo=sydney)
    appointment = booking(who, at_ten, practitioner=DR_A)
    await producer.send(appointment)
    await story_of(system, invoice_id, ["linked"])
    ref = {"patient_id": who, "appointment_id": appointment.appointment_id}
    await producer.send(
        RescheduleAppointment(
            **ref, starts_at=at_ten + timedelta(hours=4), requested_by="reception:maria"
        )
    )
    await story_of(system, invoice_id, ["linked", "moved"])
    await producer.send(
        CancelAppointment(**ref, cancelled_by="reception:sam", cancelled_at=datetime.now(UTC))
    )
    told = await story_of(system, invoice_id, ["linked", "moved", "unlinked"])
    # What the page must say of when it happened: the message's time, on Sydney's clock.
    unlinked_at = datetime.fromisoformat(told[2]["local_at"]).strftime("%H:%M")
    shown_day = f"{at_ten:%a},? {at_ten.day} {at_ten:%b %Y}"  # as Chromium's en-GB writes it
    SHOTS.mkdir(parents=True, exist_ok=True)

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=browser_tests.CHROMIUM,
            args=["--no-sandbox", "--disable-dev-shm-usage"],
        )
        expect.set_options(timeout=30_000)
        for width in ("desktop", "phone"):
            context, page, errors = await watched_page(chromium, url, WIDTHS[width])
            await page.get_by_label("Staff token").fill(browser_tests.TOKEN)
            await page.get_by_role("button", name="Sign in").click()

            # The invoice card of the Package invoices screen carries its number.
            invoices = page.locator("#invoices")
            await invoices.get_by_label("Patient (name or id)").fill(name)
            await invoices.get_by_role("button", name="Show", exact=True).click()
            card = page.locator(f"article[data-invoice='{invoice_id}']")
            await expect(card.get_by_role("heading")).to_contain_text(number)

            # The patient's page: the number, and line 1's story behind its History button.
            await page.get_by_role("link", name="Patients").click()
            await page.get_by_label("Find a patient by name").press_sequentially("zoe storey")
            await page.get_by_role("button", name=name).click()
            patient = page.locator("#patient-page")
            await expect(patient.get_by_role("heading", name=name)).to_be_visible()
            await expect(patient.locator("#patient-invoices h5")).to_contain_text(number)
            await expect(patient.locator("#patient-invoices .facts")).to_contain_text(
                f"Invoice number{number}"
            )
            history = patient.get_by_role("button", name=f"History of line 1 of {PACKAGE}")
            await expect(history).to_have_attribute("aria-expanded", "false")
            # From the keyboard: focused, Enter opens it.
            await history.focus()
            await page.keyboard.press("Enter")
            await expect(history).to_have_attribute("aria-expanded", "true")
            story = patient.get_by_role("list", name="History of line 1")
            entries = story.get_by_role("listitem")
            await expect(entries).to_have_count(3)
            await expect(entries.nth(0)).to_have_text(
                re.compile(f"Linked to {shown_day} 10:00 with Dr Adams")
            )
            await expect(entries.nth(1)).to_have_text(
                re.compile(f"Moved from {shown_day} 10:00 to {shown_day} 14:00 with Dr Adams")
            )
            await expect(entries.nth(2)).to_have_text(
                re.compile(
                    f"Unlinked from {shown_day} 14:00 by reception:sam at {unlinked_at}:"
                    " the appointment was cancelled"
                )
            )
            await assert_accessible(page, f"a line's history at {width} width")
            await page.screenshot(path=SHOTS / f"line-history-{width}.png", full_page=True)
            # Space closes it again; another line has nothing to tell yet.
            await page.keyboard.press("Space")
            await expect(history).to_have_attribute("aria-expanded", "false")
            await expect(story).to_have_count(0)
            await patient.get_by_role("button", name=f"History of line 2 of {PACKAGE}").click()
            await expect(patient.get_by_role("list", name="History of line 2")).to_contain_text(
                "Nothing has happened to this line yet"
            )

            if width == "desktop":
                # Invoicing does not answer: the row says so, and Retry reads it again.
                async def down(route: Any) -> None:
                    detail = {"detail": "the invoicing service does not answer"}
                    await route.fulfill(status=502, json=detail)

                pattern = "**/api/invoicing/invoices/*/lines/1/history*"
                await page.route(pattern, down)
                await history.click()
                row = patient.locator(".history-row").filter(
                    has=page.get_by_role("list", name="History of line 1")
                )
                status = row.get_by_role("status")
                await expect(status).to_contain_text(
                    "Loading the line's history failed: the invoicing service does not answer"
                )
                await assert_accessible(page, "a line's history that failed to load")
                await page.screenshot(path=SHOTS / "line-history-failed.png")
                await page.unroute(pattern, down)
                await status.get_by_role("button", name="Retry").click()
                await expect(status).to_be_empty()
                await expect(row.get_by_role("listitem")).to_have_count(3)
                simulated = [e for e in errors if e.startswith("502 ") and "history" in e]
                assert len(simulated) == 1, errors
                errors.remove(simulated[0])

            assert await page.evaluate("window.__violations") == []
            assert errors == []
            await context.close()
        await chromium.close()
