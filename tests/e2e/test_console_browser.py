"""The staff console in a real browser (Debian's Chromium, driven by Playwright), against the
console and the three services as processes on the real broker and database. One test walks the
help article's screens in order; screenshots of the main screens are kept in
``test-artifacts/console/`` (CI keeps them as artefacts)."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4
from zoneinfo import ZoneInfo

import httpx
import pytest
from packline_contracts.client import PacklineProducer
from packline_contracts.invoices import IssuePackageInvoice, PurchaseChannel
from packline_contracts.patients import RegisterPatient

from tests.clinic import DR_A, DR_B, MASSAGE_60, NORTHSIDE, booking, fee_commands, package, setup_in
from tests.conftest import CreateDatabase, Infrastructure
from tests.e2e.packline_processes import Processes, free_port, packline_processes
from tests.helpers import eventually

pytestmark = [pytest.mark.infra, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "test-artifacts" / "console"
TOKEN = secrets.token_hex(32)  # the services refuse short or well-known static tokens
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CLINIC_ZONE = "Australia/Sydney"
WITH_DR_A = package("console-dr-a", count=5, practitioners=[DR_A], locations=[NORTHSIDE])


@pytest.fixture
async def console(
    infrastructure: Infrastructure,
    topic_prefix: str,
    create_database: CreateDatabase,
    producer: PacklineProducer,
) -> AsyncIterator[tuple[str, Processes]]:
    async with packline_processes(
        infrastructure, topic_prefix, create_database, staff_token=TOKEN
    ) as system:
        for message in [*setup_in(CLINIC_ZONE), *fee_commands(), WITH_DR_A]:
            await producer.send(message)
        port = free_port()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "packline_console.main",
            env={
                **os.environ,
                "PACKLINE_KAFKA_BOOTSTRAP_SERVERS": infrastructure.kafka_bootstrap,
                "PACKLINE_TOPIC_PREFIX": topic_prefix,
                "PACKLINE_HTTP_PORT": str(port),
                "PACKLINE_CALENDAR_URL": system.urls["calendar"],
                "PACKLINE_INVOICING_URL": system.urls["invoicing"],
                "PACKLINE_MATCHER_URL": system.urls["matcher"],
                "PACKLINE_LOG_LEVEL": "WARNING",
            },
        )
        url = f"http://127.0.0.1:{port}"

        async def ready() -> bool:
            try:
                async with httpx.AsyncClient() as client:
                    return (await client.get(f"{url}/health/live")).status_code == 200
            except httpx.TransportError:
                return False

        async def catalogue_known() -> bool:
            fees = await system.http["calendar"].get("/fees")
            directory = (await system.http["calendar"].get("/directory")).json()
            terms = await system.http["invoicing"].get(f"/packages/{WITH_DR_A.package_id}")
            return (
                len(fees.json()) == 2
                and len(directory["practitioners"]) == 2
                and terms.status_code == 200
            )

        try:
            await eventually(ready, within=60, what="the console to start")
            await eventually(catalogue_known, within=60, what="the directory and catalogue")
            yield url, system
        finally:
            process.terminate()
            await process.wait()
        await system.reconcile()


async def buy(producer: PacklineProducer, system: Processes, who: str) -> str:
    invoice_id = uuid4()
    await producer.send(
        IssuePackageInvoice(
            patient_id=who,
            invoice_id=invoice_id,
            package_id=WITH_DR_A.package_id,
            channel=PurchaseChannel.STAFF,
            issued_by="reception",
            issued_at=datetime.now(UTC),
        )
    )

    async def matcher_knows() -> bool:
        links = (await system.http["matcher"].get(f"/patients/{who}/links")).json()
        return any(line["invoice_id"] == str(invoice_id) for line in links["lines"])

    await eventually(matcher_knows, what="the matcher to know the invoice")
    return str(invoice_id)


async def test_the_help_article_in_the_browser(
    console: tuple[str, Processes], producer: PacklineProducer
) -> None:
    from playwright.async_api import async_playwright, expect

    url, system = console
    who = f"patient-{uuid4().hex[:6]}"
    await buy(producer, system, who)
    # The clinic is in Sydney (R15): every date and time typed and shown is Sydney's.
    sydney = ZoneInfo(CLINIC_ZONE)
    day = (datetime.now(sydney) + timedelta(days=3)).date().isoformat()
    # Another patient already holds Dr Adams at 11:00 that day (for "taken").
    taken_at = datetime.fromisoformat(f"{day}T11:00:00").replace(tzinfo=sydney)
    await producer.send(booking("someone-else", taken_at, practitioner=DR_A))
    # The patient has a name in the directory (R16): staff find them by part of it.
    await producer.send(RegisterPatient(patient_id=who, name=f"Zoë Example {who[-6:]}"))
    name = f"Zoë Example {who[-6:]}"
    SHOTS.mkdir(parents=True, exist_ok=True)

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(20_000)
        expect.set_options(timeout=30_000)
        await page.goto(url)

        # Authentication: a wrong token shows nothing of the patients.
        await page.get_by_label("Staff token").fill("not-the-token")
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.locator("#sign-in-error")).to_contain_text("Not signed in")
        await expect(page.locator("#invoices")).to_be_hidden()
        await page.get_by_label("Staff token").fill(TOKEN)
        await page.get_by_role("button", name="Sign in").click()

        # The patient's package invoice: every line Unassigned, the balance.
        invoices = page.locator("#invoices")
        await invoices.get_by_label("Patient (name or id)").fill(f"example zoe {who[-6:]}")
        await invoices.get_by_role("button", name="Show").click()
        await expect(page.locator("#patient-shown")).to_contain_text(f"{name} ({who})")
        invoice = page.locator("article.invoice")
        await expect(invoice).to_contain_text("5 of 5 left, expires")
        await expect(invoice.locator("td.appointment", has_text="Unassigned")).to_have_count(5)
        await page.screenshot(path=SHOTS / "1-package-invoice.png", full_page=True)

        # Book from the invoice, free slot: the pencil, the dialog, Check Availability, Save.
        await page.get_by_role("button", name="Edit line 1 of 5 x 60-min massage").click()
        dialog = page.get_by_role("dialog", name="Edit Invoice Line")
        await expect(dialog).to_be_visible()
        await dialog.get_by_label("Date").fill(day)
        await dialog.get_by_label("Yes").check()
        await dialog.get_by_label("Time").fill("09:00")
        await dialog.get_by_role("button", name="Check Availability").click()
        await expect(dialog.locator("#availability")).to_contain_text("Available")
        await page.screenshot(path=SHOTS / "2-edit-invoice-line.png")
        await dialog.get_by_role("button", name="Save").click()
        first = invoice.locator("tbody tr").nth(0)
        await expect(first).to_contain_text("linked:")  # live: the booking's answer arrived
        await expect(invoice).to_contain_text("4 of 5 left")

        # Book from the invoice, taken slot: Check Availability says so; Save is refused.
        await page.get_by_role("button", name="Edit line 2 of 5 x 60-min massage").click()
        await dialog.get_by_label("Date").fill(day)
        await dialog.get_by_label("Yes").check()
        await dialog.get_by_label("Time").fill("11:00")
        await dialog.get_by_role("button", name="Check Availability").click()
        await expect(dialog.locator("#availability")).to_contain_text("Not available")
        await dialog.get_by_role("button", name="Save").click()
        second = invoice.locator("tbody tr").nth(1)
        await expect(second).to_contain_text("Unassigned — ")  # with the refusal's note
        await expect(second).to_have_attribute("data-status", "open")

        # Unlink from the invoice: the X, and the line is Unassigned again (R8).
        await page.get_by_role("button", name="Edit line 1 of 5 x 60-min massage").click()
        await dialog.get_by_role("button", name="Unlink the appointment (X)").click()
        await expect(first).to_have_attribute("data-status", "open")
        await expect(invoice).to_contain_text("5 of 5 left")

        # Book from the calendar: the package is noted in the appointment panel (R4).
        await page.get_by_role("link", name="Calendar").click()
        calendar = page.locator("#calendar")
        await calendar.get_by_label("Practitioner", exact=True).select_option(DR_A)
        await calendar.get_by_label("Location", exact=True).select_option(NORTHSIDE)
        await calendar.get_by_label("Day", exact=True).fill(day)
        await calendar.get_by_role("button", name="Show").click()
        new = page.locator("#new-appointment-form")
        await new.get_by_label("Patient").fill(who)
        await new.get_by_label("Date").fill(day)
        await new.get_by_label("Time").fill("14:00")
        await new.get_by_label("Fees").select_option(MASSAGE_60)
        await new.get_by_role("button", name="Book").click()
        await expect(page.locator("#new-appointment-status")).to_contain_text("Booked")
        row = page.locator("#calendar-body tr", has_text=name).filter(has_text="14:00")
        await expect(row.locator("td.package")).to_contain_text("session")
        await page.screenshot(path=SHOTS / "3-calendar-week.png", full_page=True)
        await row.get_by_role("button").click()
        panel = page.get_by_role("dialog", name="Appointment")
        await expect(panel.locator("#panel-package")).to_contain_text("Package: 5 x 60-min massage")
        await page.screenshot(path=SHOTS / "4-appointment-panel.png")

        # Cancel in the calendar: the session returns to the invoice (R9).
        await panel.get_by_role("button", name="Cancel appointment").click()
        await expect(row.locator("td").nth(3)).to_have_text("cancelled")
        await page.get_by_role("link", name="Package invoices").click()
        await invoices.get_by_role("button", name="Show").click()
        await expect(invoice).to_contain_text("5 of 5 left")

        # A non-match is explained (R7): Dr Baker is not on this package.
        await page.get_by_role("link", name="Calendar").click()
        await calendar.get_by_label("Practitioner", exact=True).select_option(DR_B)
        await new.get_by_label("Patient").fill(who)
        await new.get_by_label("Time").fill("15:00")
        await new.get_by_label("Fees").select_option(MASSAGE_60)
        await new.get_by_role("button", name="Book").click()
        await expect(page.locator("#new-appointment-status")).to_contain_text("Booked")
        other = page.locator("#calendar-body tr", has_text=name).filter(has_text="15:00")
        await other.get_by_role("button").click()

        async def explained() -> Any:
            text = await page.locator("#panel-package").text_content()
            if text and "Not linked to a package:" in text:
                return text
            await page.get_by_role("button", name="Close").click()
            await other.get_by_role("button").click()
            return None

        reason = await eventually(explained, within=30, interval=1, what="the explanation")
        assert "only with Dr Adams" in reason  # R7: says why, in the clinic's words
        await page.screenshot(path=SHOTS / "5-explanation.png")
        await panel.get_by_role("button", name="Close").click()

        # Keyboard: the dialog opens from the pencil with Enter and closes with Escape.
        await page.get_by_role("link", name="Package invoices").click()
        await page.get_by_role("button", name="Edit line 3 of 5 x 60-min massage").focus()
        await page.keyboard.press("Enter")
        await expect(dialog).to_be_visible()
        await expect(dialog.get_by_label("Date")).to_be_focused()
        await page.keyboard.press("Escape")
        await expect(dialog).to_be_hidden()
        await browser.close()
