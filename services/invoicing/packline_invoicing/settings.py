"""The invoicing service's settings: the shared ones, with this service's defaults."""

from __future__ import annotations

from packline_core.settings import ServiceSettings
from pydantic import Field, SecretStr


class InvoicingSettings(ServiceSettings):
    database_url: str = Field(
        default="postgresql://packline:packline@127.0.0.1:5432/packline_invoicing",
        pattern=r"^postgres(ql)?://",
        description="The invoicing service's own PostgreSQL database.",
    )
    http_port: int = Field(default=8082, ge=0, le=65535)
    calendar_url: str = Field(
        default="http://127.0.0.1:8081",
        pattern=r"^https?://",
        description="The calendar's HTTP API, asked for Check Availability (R3).",
    )
    calendar_token: SecretStr | None = Field(
        default=None, description="A staff token the calendar accepts (when it requires one)."
    )
    booking_request_timeout_seconds: float = Field(
        default=120,
        gt=0,
        le=86_400,
        description="A line's booking request (R3) the calendar has not answered within this "
        "time is released: the line is open again, with the reason on it.",
    )
    expiry_sweep_interval_seconds: float = Field(
        default=300,
        gt=0,
        le=86_400,
        description="How often expiry reminders are sent and unbooked sessions of expired "
        "invoices written off (R18); each is due on a local day, so minutes late is on time.",
    )
