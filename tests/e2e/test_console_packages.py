"""The package screens of the console (issue #22) in Chromium, against the console and the three
services as processes, signed in as billing with a token of the local issuer: on the invoice
card, Extend validity (one refused first, with invoicing's reason), Add sessions, Transfer
sessions (the recipient found by name) and Household (a family member found by name), each
through its dialog and checked on the card and in invoicing; then the Revenue screen shows the
package's figures for the month, and its CSV downloads with the same totals. Signed in as
reception: no Revenue screen and no package actions, and a booking from Edit Invoice Line that
the calendar refuses is said with the calendar's reason. axe-core finds no
serious or critical violation on the new screen and dialogs at desktop and phone widths.
Screenshots go to ``test-artifacts/console/``."""

from __future__ import annotations

import asyncio
import csv
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4
from zoneinfo import ZoneInfo

import pytest
from packline_contracts.client import PacklineProducer
from packline_contracts.invoices import IssuePackageInvoice, PurchaseChannel
from packline_contracts.patients import RegisterPatient

from tests.clinic import DR_A, NORTHSIDE, booking
from tests.e2e import test_console_browser as browser_tests
from tests.e2e.test_console_calendar import WIDTHS, assert_accessible, watched_page
from tests.helpers import eventually

pytestmark = [pytest.mark.infra, pytest.mark.timeout(300)]

signed_in_console = browser_tests.signed_in_console
local_issuer = browser_tests.local_issuer
SHOTS = browser_tests.SHOTS
PACKAGE = browser_tests.WITH_DR_A


def shown_day(day: date) -> str:
    """A day as the console writes it (Chromium's en-GB): "Thu, 25 Feb 2027" or without comma."""
    return f"{day:%a},? {day.day} {day:%b %Y}"


async def test_package_actions_and_the_revenue_screen(
    signed_in_console: browser_tests.SignedInConsole, producer: PacklineProducer
) -> None:
    from playwright.async_api import async_playwright, expect

    url, system = signed_in_console.url, signed_in_console.system
    invoicing = system.http["invoicing"]
    tag = uuid4().hex[:6]
    owner, recipient, member = (f"{role}-{tag}" for role in ("owner", "recipient", "member"))
    names = {
        who: f"{first} Packer {tag}"
        for who, first in [(owner, "Olive"), (recipient, "Rowan"), (member, "Milo")]
    }
    for who, name in names.items():
        await producer.send(RegisterPatient(patient_id=who, name=name))
    invoice_id = uuid4()
    await producer.send(
        IssuePackageInvoice(
            patient_id=owner,
            invoice_id=invoice_id,
            package_id=PACKAGE.package_id,
            channel=PurchaseChannel.STAFF,
            issued_by="bo",
            issued_at=datetime.now(UTC),
            location_id=NORTHSIDE,
        )
    )

    async def invoice() -> Any:
        answer = await invoicing.get(f"/invoices/{invoice_id}")
        return answer.json() if answer.status_code == 200 else None

    sold = await eventually(invoice, within=60, what="the invoice")
    expires = date.fromisoformat(sold["balance"]["expires_on"])
    later = expires + timedelta(days=30)
    bo = signed_in_console.issuer.token("bo", "Bo Quinn", "billing")
    sam = signed_in_console.issuer.token("sam", "Sam Lee", "reception")
    # Dr Adams is taken at 11:00 in three days (Sydney): a booking from the invoice is refused.
    sydney = ZoneInfo(browser_tests.CLINIC_ZONE)
    day = (datetime.now(sydney) + timedelta(days=3)).date()
    taken = datetime.fromisoformat(f"{day}T11:00").replace(tzinfo=sydney)
    await producer.send(booking("someone-else", taken, practitioner=DR_A))
    SHOTS.mkdir(parents=True, exist_ok=True)

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=browser_tests.CHROMIUM,
            args=["--no-sandbox", "--disable-dev-shm-usage"],
        )
        expect.set_options(timeout=30_000)
        context, page, errors = await watched_page(chromium, url, WIDTHS["desktop"])
        await page.get_by_label("Staff token").fill(bo)
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.locator("#who")).to_contain_text("Bo Quinn (bo), billing")

        invoices = page.locator("#invoices")
        await invoices.get_by_label("Patient (name or id)").fill(names[owner])
        await invoices.get_by_role("button", name="Show", exact=True).click()
        card = page.locator(f"article[data-invoice='{invoice_id}']")
        await expect(card.locator(".terms")).to_contain_text(
            re.compile(f"Valid until {shown_day(expires)}")
        )
        await expect(card.locator(".shared-with")).to_have_text("Not shared")
        status = page.locator("#invoices-status")

        # Extend validity, from the keyboard: refused first (not after the current last day),
        # with invoicing's reason and the field marked; then to a month later.
        extend = card.get_by_role("button", name=re.compile("^Extend validity"))
        await extend.focus()
        await page.keyboard.press("Enter")
        dialog = page.get_by_role("dialog", name="Extend validity")
        await expect(dialog).to_be_visible()
        await expect(dialog.get_by_label("New last day")).to_be_focused()
        await dialog.get_by_label("New last day").fill(expires.isoformat())
        await dialog.get_by_label("Reason").fill("Away for surgery")
        await dialog.get_by_role("button", name="Extend").click()
        await expect(dialog.get_by_role("alert")).to_contain_text("Refused: valid_until: ")
        await expect(dialog.get_by_label("New last day")).to_have_attribute("aria-invalid", "true")
        await assert_accessible(page, "a refused extension")
        await page.screenshot(path=SHOTS / "extend-refused.png")
        await dialog.get_by_label("New last day").fill(later.isoformat())
        await dialog.get_by_role("button", name="Extend").click()
        await expect(dialog).to_be_hidden()
        await expect(card.locator(".terms")).to_contain_text(
            re.compile(f"Valid until {shown_day(later)}")
        )
        await expect(status).to_contain_text(re.compile(f"Valid until {shown_day(later)}"))
        assert (await invoice())["balance"]["expires_on"] == later.isoformat()
        # Escape closes a dialog.
        await extend.click()
        await expect(dialog).to_be_visible()
        await page.keyboard.press("Escape")
        await expect(dialog).to_be_hidden()

        # Add sessions: 2 for 150.00.
        await card.get_by_role("button", name=re.compile("^Add sessions")).click()
        dialog = page.get_by_role("dialog", name="Add sessions")
        await dialog.get_by_label("Sessions").fill("2")
        await dialog.get_by_label("Price (EUR)").fill("150.00")
        await dialog.get_by_label("Reason").fill("Two more for the shoulder")
        await assert_accessible(page, "the top-up dialog")
        await dialog.get_by_role("button", name="Add sessions").click()
        await expect(dialog).to_be_hidden()
        await expect(card.locator(".balance")).to_contain_text("7 of 7 left")
        topped = await invoice()
        assert (topped["price_cents"], len(topped["lines"])) == (55000, 7)

        # Transfer 2 sessions to Rowan, found by name.
        await card.get_by_role("button", name=re.compile("^Transfer sessions")).click()
        dialog = page.get_by_role("dialog", name="Transfer sessions")
        await expect(dialog).to_contain_text("7 unbooked sessions can move")
        await dialog.get_by_label("To patient").press_sequentially(f"rowan packer {tag}")
        await dialog.get_by_role("button", name=names[recipient]).click()
        await expect(dialog.locator("#transfer-chosen")).to_contain_text(f"To {names[recipient]}")
        await dialog.get_by_label("Sessions").fill("2")
        await dialog.get_by_label("Reason").fill("Gift to her brother")
        await assert_accessible(page, "the transfer dialog")
        await dialog.get_by_role("button", name="Transfer").click()
        await expect(dialog).to_be_hidden()
        await expect(card.locator(".terms")).to_contain_text(
            "2 sessions transferred to another patient"
        )
        await expect(card.locator(".balance")).to_contain_text("5 of 5 left")
        await expect(status).to_contain_text(f"2 sessions transferred to {names[recipient]}")
        theirs = (await invoicing.get(f"/patients/{recipient}/invoices")).json()
        assert [len(i["lines"]) for i in theirs] == [2]

        # Household: Milo, found by name, added; shown on the card by name.
        await card.get_by_role("button", name=re.compile("^Household")).click()
        dialog = page.get_by_role("dialog", name="Household")
        await expect(dialog.get_by_role("list", name="Shared with")).to_contain_text(
            "Shared with nobody"
        )
        await dialog.get_by_label("Add a family member").press_sequentially(f"milo packer {tag}")
        await dialog.get_by_role("button", name=names[member]).click()
        await expect(dialog.get_by_role("list", name="Shared with")).to_contain_text(names[member])
        await dialog.get_by_label("Reason").fill("Her son")
        await assert_accessible(page, "the household dialog")
        await page.screenshot(path=SHOTS / "package-actions.png")
        await dialog.get_by_role("button", name="Save household").click()
        await expect(dialog).to_be_hidden()
        await expect(card.locator(".shared-with")).to_have_text(f"Shared with {names[member]}")
        assert (await invoice())["shared_with"] == [member]
        # Opened again: the member by name, with Remove.
        await card.get_by_role("button", name=re.compile("^Household")).click()
        await expect(dialog.get_by_role("button", name=f"Remove {names[member]}")).to_be_visible()
        await assert_accessible(page, "the household dialog with a member")
        await page.keyboard.press("Escape")

        # Revenue: this month at Northside, the package's row and the totals, then the CSV.
        await page.get_by_role("link", name="Revenue").click()
        revenue = page.locator("#revenue")
        await expect(revenue.get_by_label("Location")).to_have_value(NORTHSIDE)
        first, last = (
            await revenue.get_by_label("From").input_value(),
            await revenue.get_by_label("To").input_value(),
        )
        report = (
            await invoicing.get(
                "/reports/deferred-revenue",
                params={"from": first, "to": last, "location_id": NORTHSIDE},
            )
        ).json()
        [row] = report["rows"]
        assert (row["sold_cents"], row["transferred_out_cents"], row["owed_cents"]) == (
            55000,
            15000,
            55000,
        )
        table = revenue.get_by_role("table")
        shown = table.locator(f"tbody tr[data-package='{PACKAGE.package_id}']")
        await expect(shown.locator("th")).to_have_text(PACKAGE.name)
        await expect(shown.locator("[data-column='sold_cents']")).to_have_text("€550.00")
        await expect(shown.locator("[data-column='transferred_in_cents']")).to_have_text("€150.00")
        await expect(shown.locator("[data-column='transferred_out_cents']")).to_have_text("€150.00")
        await expect(shown.locator("[data-column='owed_cents']")).to_have_text("€550.00")
        totals = table.locator("tfoot tr[data-currency='EUR']")
        await expect(totals.locator("[data-column='sold_cents']")).to_have_text("€550.00")
        await assert_accessible(page, "the Revenue screen")

        # Invoicing does not answer: the screen says so, and Retry reads the report again.
        async def down(route: Any) -> None:
            await route.fulfill(
                status=502, json={"detail": "the invoicing service does not answer"}
            )

        pattern = "**/api/invoicing/reports/deferred-revenue*"
        await page.route(pattern, down)
        await revenue.get_by_role("button", name="Show").click()
        said = revenue.locator("#revenue-status")
        await expect(said).to_contain_text(
            "Loading the report failed: the invoicing service does not answer"
        )
        await page.unroute(pattern, down)
        await said.get_by_role("button", name="Retry").click()
        await expect(said).to_be_empty()
        await expect(totals.locator("[data-column='sold_cents']")).to_have_text("€550.00")
        simulated = [e for e in errors if e.startswith("502 ") and "deferred-revenue" in e]
        assert len(simulated) == 1, errors
        errors.remove(simulated[0])
        await page.screenshot(path=SHOTS / "revenue-desktop.png", full_page=True)
        async with page.expect_download() as downloading:
            await revenue.get_by_role("button", name="Download CSV").click()
        download = await downloading.value
        assert download.suggested_filename == f"deferred-revenue-{first}-to-{last}-{NORTHSIDE}.csv"
        path = await download.path()
        assert path is not None
        text = await asyncio.to_thread(Path(path).read_text)
        lines = list(csv.DictReader(text.splitlines()))
        for key, value in report["totals"][0].items():
            if key.endswith("_cents"):
                assert sum(int(line[key]) for line in lines) == value, key
        await expect(revenue.locator("#revenue-csv-status")).to_have_text("CSV downloaded.")
        assert await page.evaluate("window.__violations") == []
        assert errors == []
        await context.close()

        # At a phone's width: the Revenue screen and a dialog.
        context, page, errors = await watched_page(chromium, url, WIDTHS["phone"])
        await page.get_by_label("Staff token").fill(bo)
        await page.get_by_role("button", name="Sign in").click()
        await page.get_by_role("link", name="Revenue").click()
        await expect(page.locator("#revenue tfoot tr")).to_have_count(1)
        await assert_accessible(page, "the Revenue screen at phone width")
        await page.screenshot(path=SHOTS / "revenue-phone.png", full_page=True)
        await page.get_by_role("link", name="Package invoices").click()
        invoices = page.locator("#invoices")
        await invoices.get_by_label("Patient (name or id)").fill(names[owner])
        await invoices.get_by_role("button", name="Show", exact=True).click()
        card = page.locator(f"article[data-invoice='{invoice_id}']")
        await card.get_by_role("button", name=re.compile("^Household")).click()
        await expect(page.get_by_role("dialog", name="Household")).to_contain_text(names[member])
        await assert_accessible(page, "the household dialog at phone width")
        await page.keyboard.press("Escape")
        await card.get_by_role("button", name=re.compile("^Extend validity")).click()
        await assert_accessible(page, "the extension dialog at phone width")
        assert await page.evaluate("window.__violations") == []
        assert errors == []
        await context.close()

        # Sam, reception: no Revenue screen, no package actions; a booking from Edit Invoice
        # Line that the calendar refuses (Dr Adams is taken) is said in the calendar's words.
        context, page, errors = await watched_page(chromium, url, WIDTHS["desktop"])
        await page.get_by_label("Staff token").fill(sam)
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.locator("#who")).to_contain_text("Sam Lee (sam), reception")
        await expect(page.get_by_role("link", name="Revenue")).to_be_hidden()
        invoices = page.locator("#invoices")
        await invoices.get_by_label("Patient (name or id)").fill(names[owner])
        await invoices.get_by_role("button", name="Show", exact=True).click()
        card = page.locator(f"article[data-invoice='{invoice_id}']")
        await expect(card.locator(".shared-with")).to_have_text(f"Shared with {names[member]}")
        await expect(card.get_by_role("button", name=re.compile("^Extend validity"))).to_have_count(
            0
        )
        await page.get_by_role("button", name=f"Edit line 1 of {PACKAGE.name}").click()
        dialog = page.get_by_role("dialog", name="Edit Invoice Line")
        await dialog.get_by_label("Date").fill(day.isoformat())
        await dialog.get_by_label("Yes").check()
        await dialog.get_by_label("Time").fill("11:00")
        await dialog.get_by_role("button", name="Save").click()
        await expect(page.locator("#invoices-status")).to_contain_text(
            f"Line 1 of {PACKAGE.name} not booked: Dr Adams is already booked from 11:00 to 12:00"
        )
        await expect(card.locator("tbody tr").nth(0)).to_have_attribute("data-status", "open")
        await assert_accessible(page, "a line booking the calendar refused")
        await page.screenshot(path=SHOTS / "line-booking-refused.png")
        assert await page.evaluate("window.__violations") == []
        assert errors == []
        await context.close()
        await chromium.close()
