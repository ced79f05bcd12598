"""Every Packline HTTP API's OpenAPI document and its Swagger UI, the same on each service and on
the staff console.

- The answers a route can give besides its success, each with its body: routes name theirs
  (``responses=NOT_FOUND | CONFLICT``); those every route shares are added to the document here:
  401 and 403 on each operation that needs the staff token (with the bearer scheme, so Swagger
  UI's Authorize dialog asks for the token), and 400 and 413 on each one that takes a body
  (packline_core.body_limit). FastAPI adds 422 itself to each route that takes input; its body is
  the shape packline_core.http_errors answers with.
- ``/docs``: Swagger UI from assets on this machine (``swagger-ui-dist``, pinned in
  ``services/core/swagger-ui/package.json`` and installed by ``deploy/packline setup``), never from
  a CDN. ``/docs``, its assets and ``/openapi.json`` need no token: they hold no data, and the
  calls Swagger UI makes carry the token typed into its Authorize dialog.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

from fastapi import FastAPI, HTTPException, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, HTMLResponse
from pydantic import BaseModel, ConfigDict

BEARER = "staffToken"

# Where swagger-ui-dist was installed (services/core/swagger-ui/node_modules), or
# PACKLINE_SWAGGER_UI_DIR where an installation keeps it elsewhere.
ASSETS = Path(
    os.environ.get("PACKLINE_SWAGGER_UI_DIR")
    or Path(__file__).resolve().parents[1] / "swagger-ui" / "node_modules" / "swagger-ui-dist"
)
# The files /docs needs, and the media type each is served with.
ASSET_FILES = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}
DOCS_PATHS = ("/docs", "/openapi.json")
DOCS_ASSETS = "/docs/assets/"


def is_documentation(path: str) -> bool:
    """The document and Swagger UI: open without a token."""
    return path in DOCS_PATHS or path.startswith(DOCS_ASSETS)


# --- the bodies of the answers ----------------------------------------------------------------


class Answer(BaseModel):
    """Base of the response models: exactly the fields a route answers. A field a route adds
    without declaring it fails loudly (in the tests) instead of being dropped from the answer."""

    model_config = ConfigDict(extra="forbid")


class Problem(Answer):
    """A refusal, in words."""

    detail: str


class Link(Answer):
    """A link this service knows (``GET /links``), compared by ``packline-admin reconcile``."""

    appointment_id: UUID
    invoice_id: UUID
    line_id: UUID
    state: Literal["linked", "used", "forfeited", "pending"]


class Alive(Answer):
    status: Literal["alive"]
    service: str


class Readiness(Answer):
    """Whether this replica reaches its database and the broker, and its consumers move."""

    model_config = ConfigDict(extra="allow")

    status: Literal["ready", "not ready"]
    service: str
    database: str
    kafka: str
    consumers: str


class ProbeReceived(Answer):
    probe_id: UUID
    received_by: str
    sent_by: str
    received_at: datetime


Responses = dict[int | str, dict[str, Any]]


def _problem(description: str) -> dict[str, Any]:
    return {"model": Problem, "description": description}


NOT_FOUND: Responses = {404: _problem("Not found: the detail names what.")}
CONFLICT: Responses = {409: _problem("The thing is not in a state that allows this now.")}
BAD_GATEWAY: Responses = {502: _problem("A service this one asks did not answer properly.")}

UNAUTHORIZED = _problem(
    "No staff token, or one that does not verify (expired, wrongly signed, another issuer or "
    "audience): send Authorization: Bearer <token>."
)
FORBIDDEN = _problem("This token is not allowed here, or its role may not do this.")
BAD_LENGTH = _problem("Content-Length is not a number.")
TOO_LARGE = _problem("The request body is larger than PACKLINE_HTTP_MAX_BODY_BYTES.")


# --- the document -----------------------------------------------------------------------------


def install(app: FastAPI, *, protected: Callable[[str], bool], limits_bodies: bool = True) -> None:
    """Serve ``app``'s document with the bearer scheme and the shared answers, and Swagger UI
    from local assets at ``/docs``. ``protected(path)``: whether that path needs the staff
    token; ``limits_bodies``: whether ``app`` refuses large bodies (packline_core.body_limit).
    Build ``app`` with ``docs_url=None, redoc_url=None`` (their pages load from a CDN)."""

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = completed(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    openapi_version=app.openapi_version,
                    description=app.description,
                    routes=app.routes,
                    tags=app.openapi_tags,
                    servers=app.servers,
                ),
                protected,
                limits_bodies,
            )
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{DOCS_ASSETS}swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS}swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS}favicon-32x32.png",
            # No online validator badge: it would send the document's address to a web service.
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get(DOCS_ASSETS + "{name}", include_in_schema=False)
    async def swagger_ui_asset(name: str) -> FileResponse:
        if name not in ASSET_FILES:
            raise HTTPException(404, f"no asset {name}")
        path = ASSETS / name
        if not path.is_file():
            raise HTTPException(
                503,
                f"Swagger UI's assets are not installed in {ASSETS}: run deploy/packline setup"
                " (npm ci --prefix services/core/swagger-ui)",
            )
        return FileResponse(path, media_type=ASSET_FILES[name])


def completed(
    document: dict[str, Any], protected: Callable[[str], bool], limits_bodies: bool
) -> dict[str, Any]:
    """``document`` with the bearer scheme and the answers every route of a kind can give."""
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas.setdefault("Problem", Problem.model_json_schema())
    problem = {
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    }
    any_protected = False
    for path, operations in document.get("paths", {}).items():
        for operation in operations.values():
            answers = operation.setdefault("responses", {})
            if protected(path):
                any_protected = True
                operation["security"] = [{BEARER: []}]
                answers.setdefault("401", {"description": UNAUTHORIZED["description"], **problem})
                answers.setdefault("403", {"description": FORBIDDEN["description"], **problem})
            if limits_bodies and "requestBody" in operation:
                answers.setdefault("400", {"description": BAD_LENGTH["description"], **problem})
                answers.setdefault("413", {"description": TOO_LARGE["description"], **problem})
    if any_protected:
        components.setdefault("securitySchemes", {})[BEARER] = {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "A staff member's OpenID Connect access token (a JWT of "
            "PACKLINE_OIDC_ISSUER: sub, name, role, clinics), or a static service token (one "
            "of PACKLINE_STAFF_TOKENS). In Swagger UI: "
            "Authorize, then paste the token.",
        }
    return document
