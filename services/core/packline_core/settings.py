"""Configuration from environment variables, validated at start-up.

Every setting is read from ``PACKLINE_<FIELD NAME>`` (for example ``PACKLINE_DATABASE_URL``). Each
deployment of a service gets its own environment, so the names are the same for all three
services. A bad value stops the service at start with a message naming the variable.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal, TypeVar

from packline_contracts.topics import Topic
from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from packline_core.kafka import KafkaSettings

ENV_PREFIX = "PACKLINE_"


class ServiceSettings(KafkaSettings):
    """Settings every Packline service reads. Services subclass it to set their own defaults.
    The Kafka connection (servers, TLS, SASL) comes from :class:`KafkaSettings`."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    topic_prefix: str = Field(
        default="",
        pattern=r"^[A-Za-z0-9._-]*$",
        description="Put in front of every topic and consumer-group name; lets several "
        "installations (or tests) share one broker.",
    )
    database_url: str = Field(
        pattern=r"^postgres(ql)?://",
        description="This service's own PostgreSQL database, as a postgresql:// URL; TLS from "
        "its query, e.g. ?sslmode=verify-full&sslrootcert=/etc/packline/ca.pem.",
    )
    database_pool_size: int = Field(default=10, ge=1, le=100)
    http_host: str = Field(default="127.0.0.1", description="Address the HTTP API listens on.")
    http_port: int = Field(ge=0, le=65535, description="Port of the HTTP API (0: any free port).")
    http_max_body_bytes: int = Field(
        default=64 * 1024, ge=1024, description="Larger request bodies are refused with 413."
    )
    consumer_instances: int = Field(
        default=1,
        ge=1,
        le=12,
        description="Members of each consumer group in this replica, working on their own "
        "partitions in parallel (more than the partitions idle).",
    )
    consumer_batch_size: int = Field(
        default=500, ge=1, le=10_000, description="Most messages applied in one transaction."
    )
    consumer_stall_seconds: float = Field(
        default=60,
        gt=0,
        description="A partition with records waiting and no commit for this long makes the "
        "replica not ready (/health/ready) and counts in packline_consumer_stalled_partitions.",
    )
    consumer_lag_seconds: float = Field(
        default=5, gt=0, le=300, description="How often lag is read from the broker."
    )
    dead_letter_publish_seconds: float = Field(
        default=10,
        gt=0,
        description="How long one attempt to publish a dead letter may take before it is retried "
        "(after a few attempts the dead letter is kept in the database instead).",
    )
    dead_letter_sweep_seconds: float = Field(
        default=30,
        gt=0,
        description="How often dead letters kept in the database are offered to the topic again.",
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
    drill_relay_crash_file: Path | None = Field(
        default=None,
        description="Fault drills only: when this file appears, the relay deletes it and kills "
        "its process with SIGKILL after publishing a batch and before marking it sent.",
    )
    staff_tokens: SecretStr | None = Field(
        default=None,
        description="Comma-separated bearer tokens accepted on the staff HTTP API.",
    )
    staff_api_open: bool = Field(
        default=False,
        description="Development only: with no staff tokens, serve the staff API to anyone. "
        "Without tokens and without this, the service refuses to start.",
    )
    open_operations: bool = Field(
        default=True, description="Health and metrics answer without a token."
    )
    # --- staff identity: OpenID Connect access tokens (packline_core.identity, docs/identity.md)
    oidc_issuer: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="The OpenID Connect issuer whose access tokens the staff API accepts "
        "(the tokens' 'iss'). Unset: no OIDC tokens.",
    )
    oidc_audience: str | None = Field(
        default=None, min_length=1, description="The 'aud' the tokens must carry."
    )
    oidc_jwks_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="The issuer's JWKS; unset: the jwks_uri of its "
        "/.well-known/openid-configuration.",
    )
    oidc_leeway_seconds: float = Field(
        default=30, ge=0, le=300, description="Clock skew allowed on exp, nbf and iat."
    )
    oidc_jwks_cache_seconds: float = Field(
        default=300, gt=0, description="How long the issuer's keys are kept before refetching."
    )
    oidc_name_claim: str = Field(default="name", min_length=1)
    oidc_role_claim: str = Field(
        default="role", min_length=1, description="The claim holding the Packline role."
    )
    oidc_clinics_claim: str = Field(
        default="clinics", min_length=1, description="The claim holding the location ids."
    )
    staff_token_subject: str = Field(
        default="static-token",
        min_length=1,
        max_length=128,
        description="The staff id a static token (PACKLINE_STAFF_TOKENS) acts as; audit fields "
        "record it.",
    )
    otlp_endpoint: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="Export traces over OTLP/HTTP to this collector (its base URL, e.g. "
        "http://otel-collector:4318; /v1/traces is added). Unset: the standard "
        "OTEL_EXPORTER_OTLP_ENDPOINT, or no export (the trace context is still carried).",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] = "json"
    instance_id: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}",
        description="Names this replica in logs and Kafka client ids.",
    )

    @model_validator(mode="after")
    def _staff_api_closed_unless_opened(self) -> ServiceSettings:
        if not self.staff_tokens and not self.oidc_issuer and not self.staff_api_open:
            raise ValueError(
                "PACKLINE_STAFF_TOKENS is not set, nor PACKLINE_OIDC_ISSUER: set one, or "
                "PACKLINE_STAFF_API_OPEN=true to serve the staff API without authentication "
                "(development only)"
            )
        if self.oidc_issuer and not self.oidc_audience:
            raise ValueError("PACKLINE_OIDC_ISSUER needs PACKLINE_OIDC_AUDIENCE")
        return self

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


S = TypeVar("S", bound=BaseSettings)


def load_settings(cls: type[S]) -> S:
    try:
        return cls()
    except ValidationError as error:
        lines = [f"invalid configuration for {cls.__name__}:"]
        for problem in error.errors():
            field = ".".join(str(part) for part in problem["loc"])
            # A rule across several variables names them in its message and has no field.
            where = f"{ENV_PREFIX}{field.upper()}: " if field else ""
            lines.append(f"  {where}{problem['msg']}")
        raise SettingsError("\n".join(lines)) from None
