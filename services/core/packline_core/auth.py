"""Staff authentication and authorisation for the HTTP APIs.

Who is asking (packline_core.identity): every request needs ``Authorization: Bearer <token>``,
either an OpenID Connect access token of ``PACKLINE_OIDC_ISSUER`` (the staff member: ``sub``,
``name``, ``role``, ``clinics``), or — an explicit service-to-service / development option — one
of the static ``PACKLINE_STAFF_TOKENS``, which acts as the fixed identity
``PACKLINE_STAFF_TOKEN_SUBJECT`` (default ``static-token``) with the role ``service`` (every
permission, every clinic). 401 without a token or with a token that does not verify (expired,
wrongly signed, another issuer or audience); 403 with a static token not configured (when no
issuer is) or a verified token without a Packline role. Liveness, readiness and metrics stay open
for probes and Prometheus unless ``PACKLINE_OPEN_OPERATIONS=false``. The OpenAPI document and
Swagger UI (``/docs``) are always open: they hold no data. With neither an issuer nor tokens
configured the API is open (``PACKLINE_STAFF_API_OPEN=true``, development and tests only): there
is no caller, and audit fields take the value the request gives.

What each role may do (:data:`PERMISSIONS`, the one table): each route declares the permission it
needs with ``dependencies=[needs("book")]``; a caller whose role lacks it gets 403.

Audit (:func:`acting`): who did something is the verified caller's ``sub``, never the body; a
``booked_by`` / ``issued_by`` / ``unassigned_by`` in the request that differs is refused (422
naming the field).
"""

from __future__ import annotations

import hmac
from typing import Any

import structlog
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.responses import Response

from packline_core.http_errors import invalid
from packline_core.identity import Claims, Staff, TokenRefused, TokenVerifier
from packline_core.openapi import Answer, is_documentation
from packline_core.settings import ServiceSettings

log = structlog.get_logger(__name__)

OPERATIONS = ("/health/live", "/health/ready", "/metrics")
ANONYMOUS = "anonymous"  # who acts when the API is open and the request names no one

# --- roles and permissions: the one table -------------------------------------------------------

READ_REFERENCE = "read reference"  # the directory, the fees, a package's terms: every role
PERMISSIONS: dict[str, frozenset[str]] = {
    "reception": frozenset(
        {"book", "cancel", "unlink", "read calendar", "read invoices", "read patients"}
    ),
    "billing": frozenset(
        {"sell", "void", "refund", "payments", "read invoices", "read patients", "read reports"}
    ),
    "practitioner": frozenset({"read calendar", "read patients"}),
    "admin": frozenset({"catalogue", "directory", "read reports"}),
    "operations": frozenset({"operations"}),
}
PERMISSIONS = {role: allowed | {READ_REFERENCE} for role, allowed in PERMISSIONS.items()}
EVERY_PERMISSION = frozenset().union(*PERMISSIONS.values())
PERMISSIONS["service"] = EVERY_PERMISSION  # a static token: service to service, development


def may(staff: Staff | None, permission: str) -> bool:
    """Whether ``staff`` may do ``permission`` (None: the API is open, no caller)."""
    if permission not in EVERY_PERMISSION:
        raise ValueError(f"no permission {permission!r}")
    return staff is None or permission in PERMISSIONS.get(staff.role, frozenset())


# --- who is asking ------------------------------------------------------------------------------


def verifier_of(settings: ServiceSettings) -> TokenVerifier | None:
    if not settings.oidc_issuer or not settings.oidc_audience:
        return None
    return TokenVerifier(
        issuer=settings.oidc_issuer,
        audience=settings.oidc_audience,
        jwks_url=settings.oidc_jwks_url,
        leeway_seconds=settings.oidc_leeway_seconds,
        cache_seconds=settings.oidc_jwks_cache_seconds,
        claims=Claims(
            name=settings.oidc_name_claim,
            role=settings.oidc_role_claim,
            clinics=settings.oidc_clinics_claim,
        ),
    )


def static_identity(settings: ServiceSettings) -> Staff:
    return Staff(
        sub=settings.staff_token_subject,
        name=settings.staff_token_subject,
        role="service",
        clinics=None,
        source="static",
    )


class StaffIdentity(BaseHTTPMiddleware):
    """Puts the verified caller in ``request.state.staff`` (None when the API is open)."""

    def __init__(self, app: object, settings: ServiceSettings) -> None:
        super().__init__(app)  # type: ignore[arg-type]
        secret = settings.staff_tokens.get_secret_value() if settings.staff_tokens else ""
        self.tokens = [token.strip().encode() for token in secret.split(",") if token.strip()]
        self.static = static_identity(settings)
        self.verifier = verifier_of(settings)
        self.open_paths = open_paths(settings)

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        request.state.staff = None
        if not self.tokens and self.verifier is None:
            return await call_next(request)
        if not needs_token(request.url.path, self.open_paths):
            return await call_next(request)
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return JSONResponse(
                {"detail": "staff token required: Authorization: Bearer <token>"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        presented = token.encode()
        if any(hmac.compare_digest(presented, known) for known in self.tokens):
            request.state.staff = self.static
        elif self.verifier is None:
            return JSONResponse({"detail": "this token is not allowed here"}, status_code=403)
        else:
            try:
                request.state.staff = await self.verifier.verify(token)
            except TokenRefused as refused:
                headers = (
                    {
                        "WWW-Authenticate": f'Bearer error="invalid_token", error_description='
                        f'"{refused.reason.replace(chr(34), chr(39))}"'
                    }
                    if refused.status == 401
                    else {}
                )
                return JSONResponse(
                    {"detail": refused.reason}, status_code=refused.status, headers=headers
                )
        return await call_next(request)


def needs_token(path: str, open_paths: tuple[str, ...]) -> bool:
    """Whether a request for ``path`` must carry a staff token (when tokens are configured)."""
    return path not in open_paths and not is_documentation(path)


def open_paths(settings: ServiceSettings) -> tuple[str, ...]:
    return OPERATIONS if settings.open_operations else ()


def protect(app: object, settings: ServiceSettings) -> None:
    if not settings.staff_tokens and not settings.oidc_issuer:
        log.warning(
            "neither PACKLINE_OIDC_ISSUER nor PACKLINE_STAFF_TOKENS is set: the staff HTTP API "
            "is open (development only)"
        )
    elif settings.staff_tokens:
        log.info(
            "static staff tokens accepted (service to service / development)",
            acting_as=settings.staff_token_subject,
        )
    app.add_middleware(StaffIdentity, settings=settings)  # type: ignore[attr-defined]


# --- in the routes ------------------------------------------------------------------------------


def caller(request: Request) -> Staff | None:
    """The verified caller (None: the API is open)."""
    staff = getattr(request.state, "staff", None)
    return staff if isinstance(staff, Staff) else None


def needs(permission: str) -> Any:
    """A route's dependency: the caller's role must allow ``permission`` (403 otherwise)."""
    if permission not in EVERY_PERMISSION:
        raise ValueError(f"no permission {permission!r}")

    def check(request: Request) -> None:
        staff = caller(request)
        if not may(staff, permission):
            assert staff is not None
            raise HTTPException(403, f"role {staff.role} may not {permission} (staff {staff.sub})")

    check.__name__ = f"needs_{permission.replace(' ', '_')}"
    return Depends(check)


def acting(staff: Staff | None, given: str | None, where: list[str | int]) -> str:
    """Who does this: the verified caller's ``sub``. A value the request gives (at ``where``,
    e.g. ``["body", "booked_by"]``) must be that same id (422 naming it otherwise). With the
    API open there is no caller: the given value, else ``anonymous``."""
    field = where[-1]
    if staff is None:
        return given or ANONYMOUS
    if given is not None and given != staff.sub:
        raise invalid(
            where,
            f"'{field}' is the verified caller ({staff.sub}), not a value of the request: "
            "leave it out",
        )
    return staff.sub


class Caller(Answer):
    """Who the service takes the caller for (``GET /whoami``)."""

    authenticated: bool
    sub: str | None
    name: str | None
    role: str | None
    clinics: list[str] | None
    source: str | None
    practitioner_id: str | None = None
    permissions: list[str]


def register_whoami(app: FastAPI) -> None:
    """``GET /whoami``: the verified caller, as this service sees it (the console asks it)."""

    @app.get("/whoami", tags=["staff identity"], response_model=Caller)
    async def whoami(request: Request) -> dict[str, Any]:
        staff = caller(request)
        if staff is None:
            return {
                "authenticated": False,
                "sub": None,
                "name": None,
                "role": None,
                "clinics": None,
                "source": None,
                "practitioner_id": None,
                "permissions": sorted(EVERY_PERMISSION),
            }
        return {
            "authenticated": True,
            **staff.shown(),
            "permissions": sorted(PERMISSIONS.get(staff.role, frozenset())),
        }
