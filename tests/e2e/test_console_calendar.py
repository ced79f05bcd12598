"""The console's calendar grid and patient pages in Chromium, at desktop, phone and tablet
widths, with axe-core's accessibility rules (no serious or critical violation) and the page's
Content-Security-Policy watched: a receptionist books a package session by clicking a free time
in the grid, sees a clash refused at once with its reason and a refusal of the calendar's with
the calendar's own words (live), sees a booking made elsewhere appear, drags an appointment to
another time, and finds the patient by part of their name. Screenshots go to
``test-artifacts/console/``."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4
from zoneinfo import ZoneInfo

import pytest
from packline_contracts.client import PacklineProducer
from packline_contracts.patients import RegisterPatient

from tests.clinic import DR_A, MASSAGE_60, NORTHSIDE, booking
from tests.e2e import test_console_browser as browser_tests
from tests.e2e.packline_processes import Processes

pytestmark = [pytest.mark.infra, pytest.mark.timeout(300)]

# The system and the console, as the help article's browser test starts them.
system_with_console = browser_tests.console
SHOTS = browser_tests.SHOTS
AXE = Path(__file__).resolve().parents[2] / "services/console/node_modules/axe-core/axe.min.js"
WIDTHS = {"desktop": (1280, 800), "phone": (390, 844), "tablet": (768, 1024)}
# Serious and critical violations of WCAG 2.1 A/AA and axe's best practices, a few nodes each.
RUN_AXE = """() => axe.run(document, {
  runOnly: {type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]},
}).then((r) => r.violations.filter((v) => ["serious", "critical"].includes(v.impact)).map((v) =>
  `${v.id} (${v.impact}): ${v.help}: ` +
  v.nodes.slice(0, 3).map((n) => n.target.join(" ")).join(", ")))
"""


async def assert_accessible(page: Any, what: str) -> None:
    """axe-core, injected through the browser's debugging protocol (the page's policy allows no
    script of the test's), finds no serious or critical violation."""
    if not await page.evaluate("typeof window.axe === 'object'"):
        assert AXE.is_file(), f"{AXE} is missing: npm ci --prefix services/console --ignore-scripts"
        await page.evaluate(AXE.read_text())
    violations = await page.evaluate(RUN_AXE)
    assert violations == [], f"{what}: {violations}"


async def click_slot(page: Any, practitioner: str, at: str) -> None:
    """A click on the grid where the practitioner's column meets the time's row."""
    column = await page.locator(
        f"#grid td.fc-timegrid-col[data-practitioner='{practitioner}']"
    ).bounding_box()
    row = await page.locator(f"#grid td.fc-timegrid-slot-lane[data-time='{at}:00']").bounding_box()
    assert column is not None and row is not None, "the grid has no such column or row"
    await page.mouse.click(column["x"] + column["width"] / 2, row["y"] + row["height"] / 2)


async def watched_page(
    chromium: Any, url: str, size: tuple[int, int]
) -> tuple[Any, Any, list[str]]:
    """The console in a new browser context of that size, and what goes wrong in it: errors of
    the page's scripts and answers of 500 or more (a 404 such as the matcher's "no explanation
    yet" is the page's to handle). Policy violations are gathered by the page itself."""
    context = await chromium.new_context(viewport={"width": size[0], "height": size[1]})
    page = await context.new_page()
    page.set_default_timeout(20_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on(
        "console",
        lambda m: (
            errors.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource")
            else None
        ),
    )
    page.on(
        "response",
        lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 500 else None,
    )
    await page.add_init_script(browser_tests.WATCH_POLICY)
    await page.goto(url)
    return context, page, errors


async def test_book_from_the_grid_and_find_the_patient(
    system_with_console: tuple[str, Processes], producer: PacklineProducer
) -> None:
    from playwright.async_api import async_playwright, expect

    url, system = system_with_console
    who = f"patient-{uuid4().hex[:6]}"
    name = f"Zoë Gridley {who[-6:]}"
    await browser_tests.buy(producer, system, who)
    await producer.send(RegisterPatient(patient_id=who, name=name))
    sydney = ZoneInfo(browser_tests.CLINIC_ZONE)
    day = (datetime.now(sydney) + timedelta(days=3)).date().isoformat()
    # Dr Adams is taken at 11:00 that day by someone else: a booking then is refused.
    await producer.send(
        booking("someone-else", datetime.fromisoformat(f"{day}T11:00").replace(tzinfo=sydney))
    )
    SHOTS.mkdir(parents=True, exist_ok=True)

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=browser_tests.CHROMIUM,
            args=["--no-sandbox", "--disable-dev-shm-usage"],
        )
        expect.set_options(timeout=30_000)
        sessions = [(1, "10:00"), (2, "13:00"), (3, "15:00")]
        for width, (session, slot) in zip(WIDTHS, sessions, strict=True):
            context, page, errors = await watched_page(chromium, url, WIDTHS[width])
            await page.get_by_label("Staff token").fill(browser_tests.TOKEN)
            await page.get_by_role("button", name="Sign in").click()

            # The day at Northside, a column per practitioner, in Sydney's local time.
            await page.get_by_role("link", name="Calendar").click()
            calendar = page.locator("#calendar")
            await calendar.get_by_label("Location", exact=True).select_option(NORTHSIDE)
            await calendar.get_by_label("View", exact=True).select_option("1")
            await calendar.get_by_label("Day", exact=True).fill(day)
            await calendar.get_by_role("button", name="Show").click()
            grid = page.locator("#grid")
            await expect(page.locator("#calendar-status")).to_be_empty()
            assert errors == []
            await expect(grid.locator("th[data-practitioner]")).to_have_text(
                ["Dr Adams", "Dr Baker"]
            )
            taken = grid.locator(".fc-event", has_text="someone-else")
            await expect(taken).to_contain_text("11:00")
            await expect(page.locator("#calendar-status")).to_be_empty()
            await assert_accessible(page, f"the day view at {width} width")
            await page.screenshot(path=SHOTS / f"calendar-day-{width}.png", full_page=True)

            # A click on a free time: the new appointment, the patient found by part of a name.
            await click_slot(page, DR_A, slot)
            dialog = page.get_by_role("dialog", name="New appointment")
            await expect(dialog).to_be_visible()
            await expect(dialog.get_by_label("Time")).to_have_value(slot)
            await expect(dialog.get_by_label("With")).to_have_value(DR_A)
            await dialog.get_by_label("Patient name").fill(f"gridl {who[-6:]}")
            await dialog.get_by_role("button", name=name).click()
            await dialog.get_by_label("Fee").select_option(MASSAGE_60)
            await assert_accessible(page, f"the booking dialog at {width} width")
            await dialog.get_by_role("button", name="Book").click()
            await expect(dialog).to_be_hidden()
            panel = page.get_by_role("dialog", name="Appointment")
            await expect(panel.locator("#panel-package")).to_contain_text(
                f"session {session} of 5, {5 - session} left", timeout=40_000
            )
            event = grid.locator(".fc-event", has_text=name).filter(has_text=f"{slot} - ")
            await expect(event).to_contain_text(slot)
            await assert_accessible(page, f"the appointment panel at {width} width")

            if width == "desktop":
                # The taken time (the New appointment button, for the keyboard too): refused at
                # once, with the calendar's reason.
                await calendar.get_by_role("button", name="New appointment").click()
                await dialog.get_by_label("With").select_option(DR_A)
                await dialog.get_by_label("Date").fill(day)
                await dialog.get_by_label("Time").fill("11:00")
                await dialog.get_by_label("Patient name").fill(name)
                await dialog.get_by_role("button", name=name).click()
                await dialog.get_by_role("button", name="Book").click()
                await expect(dialog.locator("#book-status")).to_contain_text(
                    "Not booked: Dr Adams is already booked from 11:00 to 12:00", timeout=5_000
                )
                await dialog.get_by_role("button", name="Cancel").click()

                # A time the calendar itself refuses (yesterday: nothing clashes, so the page
                # sends it): its reason arrives over the live stream, not after a 30 s wait.
                yesterday = (datetime.now(sydney) - timedelta(days=1)).date().isoformat()
                await calendar.get_by_role("button", name="New appointment").click()
                await dialog.get_by_label("With").select_option(DR_A)
                await dialog.get_by_label("Date").fill(yesterday)
                await dialog.get_by_label("Time").fill("10:00")
                await dialog.get_by_label("Patient name").fill(name)
                await dialog.get_by_role("button", name=name).click()
                await dialog.get_by_role("button", name="Book").click()
                await expect(dialog.locator("#book-status")).to_contain_text(
                    re.compile(r"Not booked: .*10:00.* is in the past\."), timeout=20_000
                )
                await dialog.get_by_role("button", name="Cancel").click()

                # Booked elsewhere (online, say): the grid shows it without being asked.
                await producer.send(
                    booking(
                        "walk-in", datetime.fromisoformat(f"{day}T16:00").replace(tzinfo=sydney)
                    )
                )
                await expect(grid.locator(".fc-event", has_text="walk-in")).to_contain_text(
                    "16:00", timeout=8_000
                )

                # Drag two hours later in the same column: the calendar moves it, the grid
                # follows (a move by the pointer, as a person drags).
                later = f"{int(slot[:2]) + 2:02d}:00"
                await event.scroll_into_view_if_needed()
                box = await event.bounding_box()
                lanes = grid.locator("td.fc-timegrid-slot-lane")
                start = await lanes.and_(page.locator(f"[data-time='{slot}:00']")).bounding_box()
                end = await lanes.and_(page.locator(f"[data-time='{later}:00']")).bounding_box()
                assert box is not None and start is not None and end is not None
                # Held and let go a quarter into each half-hour row.
                x = box["x"] + box["width"] / 2
                await page.mouse.move(x, start["y"] + start["height"] / 4)
                await page.mouse.down()
                await page.mouse.move(x, end["y"] + end["height"] / 4, steps=12)
                await page.mouse.up()
                await expect(page.locator("#calendar-status")).to_contain_text(f"Moved {name}")
                moved = grid.locator(".fc-event", has_text=name).filter(has_text=f"{later} - ")
                await expect(moved).to_have_attribute("aria-label", re.compile(f"{later}, {name}"))

                # The week: a column per day and practitioner.
                await calendar.get_by_label("View", exact=True).select_option("7")
                headers = grid.locator("th[data-practitioner]")
                await expect(headers).to_have_count(14)
                await expect(headers.first).to_have_text(
                    re.compile(r"^\w{3}, \d+ \w{3} · Dr Adams$")
                )
                await expect(grid.locator(".fc-event", has_text=name)).to_have_count(1)
                await assert_accessible(page, "the week view")
                await calendar.get_by_label("View", exact=True).select_option("1")

                # The calendar does not answer: the page says so, and Retry reads it again.
                async def down(route: Any) -> None:
                    detail = {"detail": "the calendar service does not answer"}
                    await route.fulfill(status=502, json=detail)

                await page.route("**/api/calendar/appointments?*", down)
                await calendar.get_by_role("button", name="Show").click()
                status = page.locator("#calendar-status")
                await expect(status).to_contain_text(
                    "Loading the calendar failed: the calendar service does not answer"
                )
                await page.unroute("**/api/calendar/appointments?*", down)
                await status.get_by_role("button", name="Retry").click()
                await expect(status).to_be_empty()
                await expect(grid.locator(".fc-event", has_text=name)).to_have_count(1)
                simulated = [e for e in errors if e.startswith("502 ") and "appointments?" in e]
                assert len(simulated) == 1, errors  # that one, and it is not counted
                errors.remove(simulated[0])

            # The patient's page: found by part of their name as it is typed.
            await page.get_by_role("link", name="Patients").click()
            await page.get_by_label("Find a patient by name").press_sequentially("zoe grid")
            await page.get_by_role("button", name=name).click()
            patient = page.locator("#patient-page")
            await expect(patient.get_by_role("heading", name=name)).to_be_visible()
            await expect(patient).to_contain_text(f"{5 - session} left of 5")
            await expect(patient.locator("#patient-upcoming tbody tr")).to_have_count(session)
            await expect(patient.locator("#patient-facts")).to_contain_text("Owing")
            await assert_accessible(page, f"the patient page at {width} width")
            await page.screenshot(path=SHOTS / f"patient-page-{width}.png", full_page=True)

            # Edit Invoice Line from the patient's page.
            await patient.get_by_role("button", name="Edit line 3 of 5 x 60-min massage").click()
            line = page.get_by_role("dialog", name="Edit Invoice Line")
            await expect(line).to_be_visible()
            await assert_accessible(page, f"Edit Invoice Line at {width} width")
            await page.screenshot(path=SHOTS / f"edit-invoice-line-{width}.png")
            await line.get_by_role("button", name="Cancel").click()

            assert await page.evaluate("window.__violations") == []
            assert errors == []
            await context.close()
        await chromium.close()
