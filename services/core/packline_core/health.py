"""Liveness and readiness endpoints, the same on every service.

- ``GET /health/live``: the process answers (restart it if not).
- ``GET /health/ready``: this replica reaches its database and Kafka (out of rotation if not).
- ``GET /metrics``: Prometheus metrics (packline_core.metrics).
"""

from __future__ import annotations

from fastapi import Response
from fastapi.responses import JSONResponse

from packline_core.auth import needs
from packline_core.openapi import Alive, Readiness
from packline_core.service import Service


def register_health(service: Service) -> None:
    @service.http.get(
        "/metrics", dependencies=[needs("operations")], tags=["operations"], include_in_schema=False
    )
    async def metrics() -> Response:
        return service.metrics.response()

    @service.http.get(
        "/health/live",
        dependencies=[needs("operations")],
        tags=["operations"],
        response_model=Alive,
    )
    async def live() -> dict[str, str]:
        return {"status": "alive", "service": service.name}

    @service.http.get(
        "/health/ready",
        dependencies=[needs("operations")],
        tags=["operations"],
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "Not ready: the checks say why."}},
    )
    async def ready() -> Response:
        checks = await service.ready()
        healthy = all(value == "ok" for value in checks.values())
        return JSONResponse(
            {"status": "ready" if healthy else "not ready", "service": service.name, **checks},
            status_code=200 if healthy else 503,
        )
