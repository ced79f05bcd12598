"""The OpenAPI document of every service and of the staff console, as served at /openapi.json:
valid OpenAPI (openapi-spec-validator), every success answer a typed model, the bearer scheme on
every operation that needs the staff token, and every status an operation can answer documented
with its body. And /docs: Swagger UI from this machine's assets only, open without a token.

In-process over ASGI, without starting the services (no database or broker is needed to serve
the documents): the fuzz test (tests/integration/test_openapi_fuzz.py) checks the answers
themselves against these documents."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from openapi_spec_validator import validate
from packline_console.app import create_app
from packline_console.settings import ConsoleSettings
from packline_core import openapi

from tests.services_under_test import SERVICES

TOKEN = secrets.token_hex(32)  # the services refuse short or well-known static tokens
OPEN = {"/health/live", "/health/ready"}  # probes stay open (PACKLINE_OPEN_OPERATIONS)

# What each operation can answer besides 401 / 403 (needing the token), 400 / 413 (a body) and
# 422 (any input), which are checked for every operation below: the refusals its code raises.
ROUTE_ANSWERS: dict[str, dict[str, set[int]]] = {
    "calendar": {
        "GET /appointments/{appointment_id}": {200, 404},
        "GET /fees": {200},
        "GET /links": {200},
        "GET /patients/{patient_id}/appointments": {200},
        "GET /appointments": {200, 404},
        "GET /directory": {200},
        "GET /availability": {200, 404},
        "GET /patients": {200},
        "GET /patients/{patient_id}": {200, 404},
    },
    "invoicing": {
        "POST /invoices": {201},
        "GET /invoices/{invoice_id}": {200, 404},
        "GET /invoices/{invoice_id}/lines/{line_number}/history": {200, 404},
        "GET /packages/{package_id}": {200, 404},
        "GET /links": {200},
        "GET /patients/{patient_id}/invoices": {200},
        "GET /invoices/{invoice_id}/lines/{line_id}/availability": {200, 404, 409, 502},
        "PUT /invoices/{invoice_id}/lines/{line_id}/appointment": {202, 404, 409},
        "DELETE /invoices/{invoice_id}/lines/{line_id}/appointment": {200, 404, 409},
        "DELETE /invoices/{invoice_id}/lines/{line_id}/booking-request": {200, 404, 409},
        "GET /reports/deferred-revenue": {200},
        "PUT /invoices/{invoice_id}/validity": {200, 404},
        "POST /invoices/{invoice_id}/top-ups": {201, 404},
        "POST /invoices/{invoice_id}/transfers": {201, 404},
        "PUT /invoices/{invoice_id}/household": {200, 404},
    },
    "matcher": {
        "GET /appointments/{appointment_id}/explanation": {200, 404},
        "GET /links": {200},
        "GET /patients/{patient_id}/appointments": {200},
        "GET /patients/{patient_id}/links": {200},
    },
    "console": {
        "GET /health/live": {200},
        # 502: the calendar, which says who the caller is, does not answer.
        "GET /live": {200, 502},
        "POST /commands/appointments": {202, 502},
        # 404: a caller limited to clinics cancels only an appointment the calendar shows them.
        "POST /commands/appointments/{appointment_id}/reschedule": {202, 404, 502},
        "POST /commands/appointments/{appointment_id}/cancel": {202, 404, 502},
        "POST /commands/appointments/{appointment_id}/delete": {202, 404, 502},
    },
}
EVERY_SERVICE = {
    "GET /health/live": {200},
    "GET /health/ready": {200, 503},
    "POST /ops/probes": {202},
    "GET /ops/probes/{probe_id}": {200, 404},
    "GET /whoami": {200},
}
NAMES = ["calendar", "invoicing", "matcher", "console"]


def build(name: str) -> FastAPI:
    if name == "console":
        return create_app(
            ConsoleSettings(
                kafka_bootstrap_servers="127.0.0.1:1",
                calendar_url="http://calendar.invalid",
                invoicing_url="http://invoicing.invalid",
                matcher_url="http://matcher.invalid",
            )
        )
    settings_class, create_service = SERVICES[name]
    settings = settings_class(
        kafka_bootstrap_servers="127.0.0.1:1",
        database_url="postgresql://nobody@127.0.0.1:1/none",
        topic_prefix="documents",
        staff_tokens=TOKEN,
    )
    return create_service(settings).http


@pytest.fixture(params=NAMES)
async def served(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, httpx.AsyncClient]]:
    """A client of one app, without a token and without its lifespan (nothing is started)."""
    app = build(request.param)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://packline") as client:
        yield request.param, client


async def document(client: httpx.AsyncClient) -> dict[str, Any]:
    answer = await client.get("/openapi.json")  # no token: the document holds no data
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def operations(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        f"{method.upper()} {path}": operation
        for path, methods in doc["paths"].items()
        for method, operation in methods.items()
    }


def resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        _, _, name = schema["$ref"].rpartition("/")
        schema = doc["components"]["schemas"][name]
    return schema


def typed(doc: dict[str, Any], schema: dict[str, Any]) -> bool:
    """A schema that says what is in the body: a model with properties, a list of such, or a
    scalar; never an untyped object (``{}`` or ``{"type": "object"}`` with no properties)."""
    schema = resolve(doc, schema)
    if "anyOf" in schema:
        return all(typed(doc, option) for option in schema["anyOf"])
    kind = schema.get("type")
    if kind == "array":
        return typed(doc, schema.get("items", {}))
    if kind == "object":
        return bool(schema.get("properties"))
    return kind in {"string", "integer", "number", "boolean", "null"}


def body_schema(answer: dict[str, Any]) -> dict[str, Any]:
    content = answer.get("content", {})
    # JSON always; a report may also answer CSV (?format=csv), a string; the console's live
    # stream answers Server-Sent Events, each an object (event, data, retry).
    if list(content) == ["text/event-stream"]:
        stream: dict[str, Any] = content["text/event-stream"]["schema"]
        assert stream["type"] == "object" and stream["description"], answer
        return stream
    assert list(content) in (["application/json"], ["application/json", "text/csv"]), answer
    schema: dict[str, Any] = content["application/json"]["schema"]
    return schema


async def test_the_document_is_valid_openapi(served: tuple[str, httpx.AsyncClient]) -> None:
    _, client = served
    doc = await document(client)
    validate(doc)
    assert doc["openapi"].startswith("3.1")
    ids = [op["operationId"] for op in operations(doc).values()]
    assert len(ids) == len(set(ids)), "duplicate operationIds"


async def test_every_answer_is_a_typed_model(served: tuple[str, httpx.AsyncClient]) -> None:
    _, client = served
    doc = await document(client)
    for label, operation in operations(doc).items():
        for status, answer in operation["responses"].items():
            schema = body_schema(answer)
            assert typed(doc, schema), f"{label} answers {status} with an untyped {schema}"
            if not status.startswith("2") and status != "503":
                # Refusals: {"detail": "..."} or, for 422, FastAPI's list of problems.
                assert "detail" in resolve(doc, schema)["properties"], (label, status)


async def test_every_status_an_operation_can_answer_is_documented(
    served: tuple[str, httpx.AsyncClient],
) -> None:
    name, client = served
    doc = await document(client)
    expected = ROUTE_ANSWERS[name] | ({} if name == "console" else EVERY_SERVICE)
    found = operations(doc)
    assert set(found) == set(expected), "operations added or gone: update ROUTE_ANSWERS"
    for label, operation in found.items():
        statuses = {int(status) for status in operation["responses"]}
        wanted = set(expected[label])
        path = label.partition(" ")[2]
        if operation.get("parameters") or "requestBody" in operation:
            wanted.add(422)  # FastAPI's and packline_core.http_errors' refusals of input
            if 422 in statuses:
                schema = body_schema(operation["responses"]["422"])
                assert schema["$ref"].endswith("/HTTPValidationError"), label
        if "requestBody" in operation:
            wanted |= {400, 413}  # packline_core.body_limit
        if path not in OPEN:
            wanted |= {401, 403}  # packline_core.auth (the console: the calendar's answer)
        assert statuses == wanted, f"{name} {label}: documents {statuses}, answers {wanted}"


async def test_the_bearer_scheme_guards_every_protected_operation(
    served: tuple[str, httpx.AsyncClient],
) -> None:
    name, client = served
    doc = await document(client)
    scheme = doc["components"]["securitySchemes"]["staffToken"]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    for label, operation in operations(doc).items():
        path = label.partition(" ")[2]
        if path in OPEN:
            assert "security" not in operation, label
        else:
            assert operation["security"] == [{"staffToken": []}], label
    if name != "console":  # the services check the token themselves
        assert (await client.get("/links")).status_code == 401
        authorized = {"Authorization": f"Bearer {TOKEN}-wrong"}
        assert (await client.get("/links", headers=authorized)).status_code == 403


async def test_swagger_ui_is_served_from_local_assets(
    served: tuple[str, httpx.AsyncClient],
) -> None:
    _, client = served
    page = await client.get("/docs")  # no token: the page holds no data
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    assert not re.search(r"https?://", html), "the page loads something from the web"
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert len(assets) == 3, assets  # the script, the stylesheet, the icon
    for asset in assets:
        assert asset.startswith("/docs/assets/"), asset
        answer = await client.get(asset)
        assert answer.status_code == 200, f"{asset}: {answer.status_code} {answer.text[:200]}"
        assert answer.content
    # Swagger UI 5 reads OpenAPI 3.1 (FastAPI's documents); 4 does not.
    installed = json.loads((openapi.ASSETS / "package.json").read_text())
    assert installed["version"].startswith("5."), installed["version"]
    assert (await client.get("/docs/assets/package.json")).status_code == 404
    assert "url: '/openapi.json'" in html
    assert (await client.get("/redoc")).status_code != 200  # its page loads from a CDN
