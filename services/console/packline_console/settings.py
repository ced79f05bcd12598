"""The console's settings, from ``PACKLINE_*`` environment variables like the services'."""

from __future__ import annotations

from typing import Literal

from packline_core.http_server import HttpServerSettings
from packline_core.kafka import KafkaSettings
from pydantic import Field


class ConsoleSettings(KafkaSettings, HttpServerSettings):
    topic_prefix: str = Field(default="", pattern=r"^[A-Za-z0-9._-]*$")
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    http_max_body_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        description="Larger request bodies are refused with 413 before they are read whole.",
    )
    calendar_url: str = "http://127.0.0.1:8081"
    invoicing_url: str = "http://127.0.0.1:8082"
    matcher_url: str = "http://127.0.0.1:8083"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    def service_url(self, service: str) -> str:
        return {
            "calendar": self.calendar_url,
            "invoicing": self.invoicing_url,
            "matcher": self.matcher_url,
        }[service]
