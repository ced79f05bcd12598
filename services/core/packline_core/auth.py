"""Staff authentication for the HTTP APIs: a bearer token from ``PACKLINE_STAFF_TOKENS``.

Every request needs ``Authorization: Bearer <token>`` with one of the configured tokens (several,
comma-separated, so a token can be rotated without downtime): 401 without one, 403 with a wrong
one. Liveness, readiness and metrics stay open for probes and Prometheus unless
``PACKLINE_OPEN_OPERATIONS=false``. The OpenAPI document and Swagger UI (``/docs``) are always
open: they hold no data, and the calls made from Swagger UI carry the token. With no token
configured the API is open, which the service says loudly at start: for development only.
"""

from __future__ import annotations

import hmac

import structlog
from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.responses import Response

from packline_core.openapi import is_documentation
from packline_core.settings import ServiceSettings

log = structlog.get_logger(__name__)

OPERATIONS = ("/health/live", "/health/ready", "/metrics")


class StaffTokens(BaseHTTPMiddleware):
    def __init__(self, app: object, settings: ServiceSettings) -> None:
        super().__init__(app)  # type: ignore[arg-type]
        secret = settings.staff_tokens.get_secret_value() if settings.staff_tokens else ""
        self.tokens = [token.strip().encode() for token in secret.split(",") if token.strip()]
        self.open_paths = open_paths(settings)

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        if not self.tokens or not needs_token(request.url.path, self.open_paths):
            return await call_next(request)
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return JSONResponse(
                {"detail": "staff token required: Authorization: Bearer <token>"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        presented = token.encode()
        if not any(hmac.compare_digest(presented, known) for known in self.tokens):
            return JSONResponse({"detail": "this token is not allowed here"}, status_code=403)
        return await call_next(request)


def needs_token(path: str, open_paths: tuple[str, ...]) -> bool:
    """Whether a request for ``path`` must carry a staff token (when tokens are configured)."""
    return path not in open_paths and not is_documentation(path)


def open_paths(settings: ServiceSettings) -> tuple[str, ...]:
    return OPERATIONS if settings.open_operations else ()


def protect(app: object, settings: ServiceSettings) -> None:
    if not settings.staff_tokens:
        log.warning(
            "PACKLINE_STAFF_TOKENS is not set: the staff HTTP API is open (development only)"
        )
    app.add_middleware(StaffTokens, settings=settings)  # type: ignore[attr-defined]
