"""Configuration from environment variables, validated at start-up.

Every setting is read from ``PACKLINE_<FIELD NAME>`` (for example ``PACKLINE_DATABASE_URL``). Each
deployment of a service gets its own environment, so the names are the same for all three
services. A bad value stops the service at start with a message naming the variable.
"""

from __future__ import annotations

import os
import socket
from typing import Literal, TypeVar

from packline_contracts.topics import Topic
from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "PACKLINE_"


class ServiceSettings(BaseSettings):
    """Settings every Packline service reads. Services subclass it to set their own defaults."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092", description="Kafka bootstrap servers, host:port[,host:port]."
    )
    topic_prefix: str = Field(
        default="",
        pattern=r"^[A-Za-z0-9._-]*$",
        description="Put in front of every topic and consumer-group name; lets several "
        "installations (or tests) share one broker.",
    )
    database_url: str = Field(
        pattern=r"^postgres(ql)?://",
        description="This service's own PostgreSQL database, as a postgresql:// URL.",
    )
    database_pool_size: int = Field(default=10, ge=1, le=100)
    http_host: str = Field(default="127.0.0.1", description="Address the HTTP API listens on.")
    http_port: int = Field(ge=0, le=65535, description="Port of the HTTP API (0: any free port).")
    consumer_batch_size: int = Field(
        default=500, ge=1, le=10_000, description="Most messages applied in one transaction."
    )
    outbox_poll_seconds: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="How often the relay looks for unsent rows when no commit woke it.",
    )
    outbox_retention_hours: float = Field(
        default=24, gt=0, description="How long sent outbox rows are kept before pruning."
    )
    staff_tokens: SecretStr | None = Field(
        default=None,
        description="Comma-separated bearer tokens accepted on the staff HTTP API; unset: open "
        "(development only).",
    )
    open_operations: bool = Field(
        default=True, description="Health and metrics answer without a token."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] = "json"
    instance_id: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}",
        description="Names this replica in logs and Kafka client ids.",
    )

    def topic(self, topic: Topic) -> str:
        """The name of a registry topic in this deployment."""
        return f"{self.topic_prefix}{topic.name}"

    def group_id(self, service: str, consumer: str) -> str:
        """The consumer group of one of a service's consumers, shared by all its replicas."""
        return f"{self.topic_prefix}packline.{service}.{consumer}"

    @classmethod
    def env_names(cls) -> set[str]:
        """The environment variables this settings class reads."""
        return {f"{ENV_PREFIX}{name.upper()}" for name in cls.model_fields}


class SettingsError(SystemExit):
    """Raised instead of a traceback when the environment holds a bad value."""


S = TypeVar("S", bound=ServiceSettings)


def load_settings(cls: type[S]) -> S:
    try:
        return cls()
    except ValidationError as error:
        lines = [f"invalid configuration for {cls.__name__}:"]
        for problem in error.errors():
            field = ".".join(str(part) for part in problem["loc"])
            lines.append(f"  {ENV_PREFIX}{field.upper()}: {problem['msg']}")
        raise SettingsError("\n".join(lines)) from None
