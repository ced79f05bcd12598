"""Every HTTP API, fuzzed from its own OpenAPI document: Schemathesis generates requests that fit
the document and requests that break it, for every operation of the calendar, invoicing, the
matcher and the staff console, each served over real HTTP on 127.0.0.1 against the real database
and broker. No request may get a 5xx, and every answer the document describes must match it.

A small clinic is set up first (directory, fees, a package, one sale, one appointment), and a
share of the requests name its ids, so they reach past "not found" into the handlers' work.
Generation is derandomized: the same requests every run."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal
from uuid import UUID

import httpx
import pytest
import requests
import schemathesis
import uvicorn
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from packline_console.app import create_app
from packline_console.settings import ConsoleSettings
from packline_contracts.client import PacklineProducer
from packline_core.service import Service
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.clinic import (
    DR_A,
    NORTHSIDE,
    SETUP,
    booking,
    days_ahead,
    fee_commands,
    package,
    patient,
)
from tests.conftest import Infrastructure, StartService
from tests.helpers import eventually

pytestmark = [
    pytest.mark.infra,
    # Schemathesis' own strategies draw from `random`; Hypothesis seeds it for each example.
    pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies"),
]

# Examples per operation (fitting, breaking and naming the clinic's ids together). With about
# 30 operations this is about 650 requests: the whole file stays under 90 s on a busy machine.
EXAMPLES = 25

# Readiness answers 503 by design while the database or the broker is unreachable. The console's
# live stream takes no parameter and never ends (a request would only wait for its timeout); its
# own test reads it (tests/integration/test_console_live.py).
NOT_FUZZED = {"/health/ready", "/live"}


@dataclass
class Fuzzed:
    app: str
    requests: int = 0
    operations: int = 0
    failures: list[str] = field(default_factory=list)


@asynccontextmanager
async def serving(
    app: Any, *, lifespan: Literal["auto", "on", "off"] = "off"
) -> AsyncIterator[str]:
    """``app`` on a real HTTP server on 127.0.0.1 (a port of its own), in this event loop."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, lifespan=lifespan, log_config=None, log_level="warning")
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))

    async def started() -> bool:
        return server.started

    try:
        await eventually(started, what="the HTTP server")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


def fuzz(name: str, document: dict[str, Any], base_url: str, known: dict[str, str]) -> Fuzzed:
    """Send generated requests to every operation of ``document`` (blocking: run it in a thread
    while the servers run in the event loop)."""
    schema = schemathesis.openapi.from_dict(document)
    outcome = Fuzzed(name)
    session = requests.Session()
    # The console refuses a request without a bearer token before reading it; the services here
    # are open (any token passes), so with one the requests reach the routes themselves.
    session.headers["Authorization"] = "Bearer fuzz"
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # Err only for an invalid document
        if operation.path in NOT_FUZZED:
            continue
        outcome.operations += 1
        strategy = st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE),
            operation.as_strategy(GenerationMode.NEGATIVE),
        )
        in_path = {p.name: known[p.name] for p in operation.path_parameters if p.name in known}
        in_query = {p.name: known[p.name] for p in operation.query if p.name in known}
        if in_path or in_query:
            strategy = st.one_of(
                strategy, operation.as_strategy(path_parameters=in_path, query=in_query)
            )
        try:
            _fuzz_operation(strategy, session, base_url, outcome)
        # Every operation is tried; the failures are listed at the end. Schemathesis reports
        # its findings as an exception group.
        except (Exception, BaseExceptionGroup) as error:
            outcome.failures.append(f"{name} {operation.label}: {error}")
    session.close()
    return outcome


def _fuzz_operation(
    strategy: st.SearchStrategy[Any], session: requests.Session, base_url: str, outcome: Fuzzed
) -> None:
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(case=strategy)
    def one_request(case: Any) -> None:
        response = case.call(base_url=base_url, session=session, timeout=15)
        outcome.requests += 1
        case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])

    one_request()


async def until_rows(service: Service, query: str, wanted: int, what: str) -> None:
    async def enough() -> bool:
        return bool(await service.pool.fetchval(query) >= wanted)

    await eventually(enough, what=what, within=60)


async def test_no_generated_request_gets_a_server_error(
    start_service: StartService,
    producer: PacklineProducer,
    infrastructure: Infrastructure,
    topic_prefix: str,
) -> None:
    calendar = await start_service("calendar")
    async with serving(calendar.http) as calendar_url:
        invoicing = await start_service("invoicing", calendar_url=calendar_url)
        matcher = await start_service("matcher")
        known = await small_clinic(calendar, invoicing, producer)
        async with (
            serving(invoicing.http) as invoicing_url,
            serving(matcher.http) as matcher_url,
        ):
            console_settings = ConsoleSettings(
                kafka_bootstrap_servers=infrastructure.kafka_bootstrap,
                topic_prefix=topic_prefix,
                calendar_url=calendar_url,
                invoicing_url=invoicing_url,
                matcher_url=matcher_url,
            )
            console = create_app(console_settings)
            async with serving(console, lifespan="on") as console_url:
                targets: list[tuple[str, Callable[[], dict[str, Any]], str]] = [
                    ("calendar", calendar.http.openapi, calendar_url),
                    ("invoicing", invoicing.http.openapi, invoicing_url),
                    ("matcher", matcher.http.openapi, matcher_url),
                    ("console", console.openapi, console_url),
                ]
                outcomes = []
                for name, document, url in targets:
                    async with httpx.AsyncClient() as client:  # the document as served
                        served = (await client.get(f"{url}/openapi.json")).json()
                    assert served == document()
                    outcomes.append(await asyncio.to_thread(fuzz, name, served, url, known))
    sent = {outcome.app: outcome.requests for outcome in outcomes}
    print(f"OpenAPI fuzz: {sum(sent.values())} requests {sent}")
    for outcome in outcomes:
        assert outcome.operations >= 4, outcome
        assert outcome.requests >= outcome.operations * EXAMPLES // 2, outcome
    failures = [failure for outcome in outcomes for failure in outcome.failures]
    assert not failures, "\n\n".join(failures)


async def small_clinic(
    calendar: Service, invoicing: Service, producer: PacklineProducer
) -> dict[str, str]:
    """The directory, fees and a package; one package sold and one appointment booked for a
    patient. Returns the ids requests may name."""
    for message in [*SETUP, *fee_commands(), package(practitioners=[DR_A])]:
        await producer.send(message)
    await until_rows(calendar, "SELECT count(*) FROM practitioners", 2, "the calendar directory")
    await until_rows(calendar, "SELECT count(*) FROM fees", 2, "the calendar's fees")
    await until_rows(invoicing, "SELECT count(*) FROM packages", 1, "the package")
    who = patient()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=invoicing.http), base_url="http://x"
    ) as client:
        sale = await client.post(
            "/invoices",
            json={"patient_id": who, "package_id": "massage-5x60", "issued_by": "reception"},
        )
    assert sale.status_code == 201, sale.text
    invoice = sale.json()
    appointment = booking(who, days_ahead(3))
    await producer.send(appointment)
    await until_rows(
        calendar,
        f"SELECT count(*) FROM appointments WHERE appointment_id = '{appointment.appointment_id}'",
        1,
        "the appointment",
    )
    return {
        "patient_id": who,
        "invoice_id": str(UUID(invoice["invoice_id"])),
        "line_id": invoice["lines"][-1]["line_id"],
        "appointment_id": str(appointment.appointment_id),
        "package_id": "massage-5x60",
        "practitioner_id": DR_A,
        "location_id": NORTHSIDE,
        "service": "calendar",
    }
