"""The calendar service's settings: the shared ones, with this service's defaults."""

from __future__ import annotations

from packline_core.settings import ServiceSettings
from pydantic import Field


class CalendarSettings(ServiceSettings):
    database_url: str = Field(
        default="postgresql://packline:packline@127.0.0.1:5432/packline_calendar",
        pattern=r"^postgres(ql)?://",
        description="The calendar service's own PostgreSQL database.",
    )
    http_port: int = Field(default=8081, ge=0, le=65535)
