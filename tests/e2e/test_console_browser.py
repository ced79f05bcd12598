"""The staff console in a real browser (Debian's Chromium, driven by Playwright), against the
console and the three services as processes on the real broker and database. One test walks the
help article's screens in order; one signs in with access tokens of a local OpenID Connect issuer
(packline-issuer, started by the test) and checks who the services take each for; one checks
that Swagger UI works under the console's Content-Security-Policy. Screenshots of the main
screens are kept in ``test-artifacts/console/`` (CI keeps them as artefacts)."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import jwt
import pytest
from packline_contracts.client import PacklineProducer
from packline_contracts.invoices import IssuePackageInvoice, PurchaseChannel
from packline_contracts.patients import RegisterPatient
from packline_core.issuer import Keys, mint

from tests.clinic import DR_A, DR_B, MASSAGE_60, NORTHSIDE, booking, fee_commands, package, setup_in
from tests.conftest import CreateDatabase, Infrastructure
from tests.e2e.console_process import console_process
from tests.e2e.packline_processes import Processes, free_port, packline_processes, service_log
from tests.helpers import eventually

pytestmark = [pytest.mark.infra, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "test-artifacts" / "console"
TOKEN = secrets.token_hex(32)  # a static token of this run: a well-known one is refused
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CLINIC_ZONE = "Australia/Sydney"
WITH_DR_A = package("console-dr-a", count=5, practitioners=[DR_A], locations=[NORTHSIDE])
AUDIENCE = "packline"
SECURITY_HEADERS = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}
STRICT_POLICY = [
    "default-src 'self'",
    "script-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
]
# Every Content-Security-Policy violation the page reports, gathered before its own scripts run.
WATCH_POLICY = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) =>
  window.__violations.push(`${e.violatedDirective} ${e.blockedURI}`));
"""


async def catalogue_known(system: Processes) -> bool:
    fees = await system.http["calendar"].get("/fees")
    directory = (await system.http["calendar"].get("/directory")).json()
    terms = await system.http["invoicing"].get(f"/packages/{WITH_DR_A.package_id}")
    return (
        len(fees.json()) == 2 and len(directory["practitioners"]) == 2 and terms.status_code == 200
    )


@asynccontextmanager
async def clinic_with_console(
    infrastructure: Infrastructure,
    topic_prefix: str,
    system: Processes,
    producer: PacklineProducer,
) -> AsyncIterator[str]:
    """The clinic (directory, fees, the package) and the console in front of ``system``."""
    for message in [*setup_in(CLINIC_ZONE), *fee_commands(), WITH_DR_A]:
        await producer.send(message)
    async with console_process(infrastructure, topic_prefix, system.urls) as url:
        await eventually(lambda: catalogue_known(system), within=60, what="the catalogue")
        yield url


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
        async with clinic_with_console(infrastructure, topic_prefix, system, producer) as url:
            yield url, system
        await system.reconcile()


# --- signed in with a token of a local OpenID Connect issuer ------------------------------------


@dataclass
class Issuer:
    url: str
    keys: Keys

    def token(self, sub: str, name: str, role: str, **options: Any) -> str:
        return mint(
            self.keys,
            issuer=self.url,
            audience=AUDIENCE,
            sub=sub,
            name=name,
            role=role,
            clinics=[NORTHSIDE],
            **options,
        )

    def forged(self, sub: str, name: str, role: str) -> str:
        """A token naming the issuer's own key, signed with another key."""
        other = Keys(self.keys.path.with_name("not-the-issuers-keys.json"))
        claims = jwt.decode(
            mint(other, issuer=self.url, audience=AUDIENCE, sub=sub, name=name, role=role),
            options={"verify_signature": False},
        )
        kid, _ = self.keys.signing()
        _, wrong_key = other.signing()
        return jwt.encode(claims, wrong_key, algorithm="ES256", headers={"kid": kid})


@pytest.fixture
async def local_issuer(tmp_path: Path) -> AsyncIterator[Issuer]:
    """``packline-issuer serve`` on a free port, its keys in a file of this test."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    keys = Keys(tmp_path / "issuer-keys.json")
    with service_log("issuer") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "packline_core.issuer",
            "--key-file",
            str(keys.path),
            "--issuer",
            url,
            "serve",
            "--port",
            str(port),
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )

    async def serving() -> bool:
        if process.returncode is not None:
            raise AssertionError(f"the issuer exited with status {process.returncode}")
        try:
            async with httpx.AsyncClient() as client:
                answer = await client.get(f"{url}/.well-known/openid-configuration")
        except httpx.TransportError:
            return False
        return answer.status_code == 200

    try:
        await eventually(serving, within=30, interval=0.2, what="the local issuer")
        yield Issuer(url, keys)
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()


@dataclass
class SignedInConsole:
    url: str
    system: Processes
    issuer: Issuer
    calendar_database: str


@pytest.fixture
async def signed_in_console(
    infrastructure: Infrastructure,
    topic_prefix: str,
    create_database: CreateDatabase,
    producer: PacklineProducer,
    local_issuer: Issuer,
) -> AsyncIterator[SignedInConsole]:
    """The services trusting the local issuer's tokens (and a static token of this run, for the
    test's own requests), and the console in front of them."""
    databases: dict[str, str] = {}

    async def recorded(purpose: str) -> str:
        databases[purpose] = await create_database(purpose)
        return databases[purpose]

    oidc = {"PACKLINE_OIDC_ISSUER": local_issuer.url, "PACKLINE_OIDC_AUDIENCE": AUDIENCE}
    async with packline_processes(
        infrastructure, topic_prefix, recorded, staff_token=TOKEN, extra_env=oidc
    ) as system:
        async with clinic_with_console(infrastructure, topic_prefix, system, producer) as url:
            yield SignedInConsole(url, system, local_issuer, databases["calendar"])
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

        # A linked line at a new time: Save moves its appointment, the line keeps it (R10); a
        # taken time is refused in the dialog with the calendar's reason.
        await page.get_by_role("button", name="Edit line 1 of 5 x 60-min massage").click()
        await expect(dialog.get_by_label("Time")).to_have_value("09:00")
        await dialog.get_by_label("Time").fill("11:00")
        await dialog.get_by_role("button", name="Save").click()
        await expect(dialog.locator("#line-error")).to_contain_text(
            "Not moved: Dr Adams is already booked from 11:00 to 12:00"
        )
        await dialog.get_by_label("Time").fill("10:00")
        await dialog.get_by_role("button", name="Save").click()
        await expect(dialog).to_be_hidden()
        await expect(first).to_contain_text("10:00")
        await expect(first).to_have_attribute("data-status", "linked")
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


# --- signed in with the local issuer's tokens ---------------------------------------------------


def assert_secured(headers: dict[str, str], what: str) -> None:
    """The console's security headers, as the browser received them."""
    for name, value in SECURITY_HEADERS.items():
        assert headers.get(name) == value, f"{what}: {name} is {headers.get(name)!r}"
    policy = [part.strip() for part in headers["content-security-policy"].split(";")]
    for directive in STRICT_POLICY:
        if what == "/docs" and directive.startswith("script-src"):
            assert policy_directive(policy, "script-src").startswith("script-src 'self' 'sha256-")
            continue
        assert directive in policy, f"{what}: no {directive} in {policy}"
    assert "unsafe" not in headers["content-security-policy"], what


def policy_directive(policy: list[str], name: str) -> str:
    return next(part for part in policy if part.split(" ")[0] == name)


async def booked_by(database_url: str, appointment_id: str) -> str | None:
    """Who the calendar's record says booked the appointment."""
    conn = await asyncpg.connect(database_url)
    try:
        value = await conn.fetchval(
            "SELECT booked_by FROM appointments WHERE appointment_id = $1::uuid", appointment_id
        )
    finally:
        await conn.close()
    return None if value is None else str(value)


async def test_signed_in_with_tokens_of_the_local_issuer(
    signed_in_console: SignedInConsole, producer: PacklineProducer
) -> None:
    from playwright.async_api import async_playwright, expect

    url, system, issuer = signed_in_console.url, signed_in_console.system, signed_in_console.issuer
    who = f"patient-{uuid4().hex[:6]}"
    name = f"Robin Tokened {who[-6:]}"
    invoice_id = await buy(producer, system, who)
    await producer.send(RegisterPatient(patient_id=who, name=name))
    day = (datetime.now(ZoneInfo(CLINIC_ZONE)) + timedelta(days=3)).date().isoformat()
    sam = issuer.token("sam", "Sam Lee", "reception")
    billing = issuer.token("bo", "Bo Quinn", "billing")
    expired = issuer.token("sam", "Sam Lee", "reception", now=time.time() - 7200)
    forged = issuer.forged("sam", "Sam Lee", "reception")
    SHOTS.mkdir(parents=True, exist_ok=True)

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(20_000)
        expect.set_options(timeout=30_000)
        await page.add_init_script(WATCH_POLICY)
        response = await page.goto(url)
        assert response is not None and response.status == 200
        assert_secured(await response.all_headers(), "/")
        # The policy is enforced: a script written into the page does not run.
        injected = await page.evaluate(
            """() => { const s = document.createElement("script");
                       s.textContent = "window.__injected = true"; document.head.append(s);
                       return window.__injected === true; }"""
        )
        assert injected is False
        assert await page.evaluate("window.__violations.length") == 1  # that one
        await page.evaluate("window.__violations.length = 0")

        # An expired token, a token signed with another key: refused, nothing of the patients.
        for token, reason in [(expired, "expired"), (forged, "signature")]:
            await page.get_by_label("Staff token").fill(token)
            await page.get_by_role("button", name="Sign in").click()
            await expect(page.locator("#sign-in-error")).to_contain_text("Not signed in")
            await expect(page.locator("#sign-in-error")).to_contain_text(reason)
            for screen in ["#nav", "#invoices", "#calendar"]:
                await expect(page.locator(screen)).to_be_hidden()
            assert name not in await page.content()
            assert await page.evaluate("sessionStorage.getItem('packline-token')") is None

        # Sam, reception at Northside: the page says who is signed in (the calendar's /whoami).
        await page.get_by_label("Staff token").fill(sam)
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.locator("#who")).to_have_text(
            "Signed in as Sam Lee (sam), reception, Northside clinic"
        )

        # Sam books in the calendar: the calendar records the booking as Sam's.
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
        await expect(row.locator("td.package")).to_contain_text("session")  # linked
        appointment_id = await row.get_attribute("data-appointment")
        assert appointment_id is not None
        assert await booked_by(signed_in_console.calendar_database, appointment_id) == "sam"
        await page.screenshot(path=SHOTS / "6-signed-in-as-sam.png", full_page=True)

        # Bo, billing: reads the invoice, but the unlink is refused and the page says so.
        await page.get_by_role("button", name="Sign out").click()
        await expect(page.locator("#sign-in")).to_be_visible()
        await page.get_by_label("Staff token").fill(billing)
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.locator("#who")).to_contain_text("Bo Quinn (bo), billing")
        await page.get_by_role("link", name="Package invoices").click()
        invoices = page.locator("#invoices")
        await invoices.get_by_label("Patient (name or id)").fill(name)
        await invoices.get_by_role("button", name="Show").click()
        linked = page.locator("article.invoice tbody tr[data-status='linked']")
        await expect(linked).to_have_count(1)
        await linked.get_by_role("button", name="Edit line").click()
        dialog = page.get_by_role("dialog", name="Edit Invoice Line")
        await dialog.get_by_role("button", name="Unlink the appointment (X)").click()
        await expect(dialog.locator("#line-error")).to_contain_text("may not unlink")
        await page.screenshot(path=SHOTS / "7-billing-may-not-unlink.png")
        invoice = (await system.http["invoicing"].get(f"/invoices/{invoice_id}")).json()
        assert [line["status"] for line in invoice["lines"]].count("linked") == 1
        assert await page.evaluate("window.__violations") == []
        await browser.close()


async def test_swagger_ui_works_under_the_policy(
    infrastructure: Infrastructure, topic_prefix: str
) -> None:
    """/docs in Chromium: Swagger UI shows the console's operations; nothing is blocked."""
    from playwright.async_api import async_playwright, expect

    nowhere = dict.fromkeys(["calendar", "invoicing", "matcher"], "http://127.0.0.1:9")
    async with (
        console_process(infrastructure, topic_prefix, nowhere) as url,
        async_playwright() as playwright,
    ):
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        page = await browser.new_page()
        messages: list[str] = []
        page.on("console", lambda message: messages.append(message.text))
        await page.add_init_script(WATCH_POLICY)
        response = await page.goto(f"{url}/docs")
        assert response is not None and response.status == 200
        assert_secured(await response.all_headers(), "/docs")
        # health, the live stream, and the calendar commands: book, reschedule, cancel, delete
        await expect(page.locator(".opblock")).to_have_count(6, timeout=30_000)
        await expect(
            page.locator(".opblock-summary-path", has_text="/commands/appointments")
        ).not_to_have_count(0)
        assert await page.evaluate("window.__violations") == []
        assert not [m for m in messages if "Content Security Policy" in m], messages
        await browser.close()
