"""Configuration from environment variables, validated at start-up.

Every setting is read from ``PACKLINE_<FIELD NAME>`` (for example ``PACKLINE_DATABASE_URL``). Each
deployment of a service gets its own environment, so the names are the same for all three
services. A bad value stops the service at start with a message naming the variable.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from packline_contracts.topics import Topic
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from packline_core.http_server import HttpServerSettings
from packline_core.kafka import KafkaSettings
from packline_core.weak_secrets import GENERATE_HINT, token_weakness

ENV_PREFIX = "PACKLINE_"


class ServiceSettings(KafkaSettings, HttpServerSettings):
    """Settings every Packline service reads. Services subclass it to set their own defaults.
    The Kafka connection (servers, TLS, SASL) comes from :class:`KafkaSettings`, the HTTP
    server's limits on slow clients from :class:`HttpServerSettings`."""

    # Errors never repeat a value: it may be a token or a password.
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", frozen=True, hide_input_in_errors=True
    )

    topic_prefix: str = Field(
        default="",
        pattern=r"^[A-Za-z0-9._-]*$",
        description="Put in front of every topic and consumer-group name; lets several "
        "installations (or tests) share one broker.",
    )
    database_url: str = Field(
        pattern=r"^postgres(ql)?://",
        description="This service's own PostgreSQL database, as a postgresql:// URL; TLS from "
        "its query, e.g. ?sslmode=verify-full&sslrootcert=/etc/packline/ca.pem. A password in "
        "it is taken out at start (into database_password): the URL kept here has none.",
    )
    database_password: SecretStr | None = Field(
        default=None,
        description="The database password, apart from the URL (which then has none).",
    )
    database_password_file: Path | None = Field(
        default=None,
        description="A file holding the database password (e.g. a mounted Kubernetes Secret); "
        "one trailing newline is ignored.",
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
    consumer_commit_seconds: float = Field(
        default=1.0,
        ge=0,
        le=60,
        description="Offsets are committed at most this often while records keep coming, and "
        "at once when none are waiting (0: after every batch). A replay of what was applied "
        "but not yet committed is harmless: the inbox skips it.",
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

    @field_validator("staff_tokens")
    @classmethod
    def _no_weak_staff_token(cls, tokens: SecretStr | None) -> SecretStr | None:
        if tokens is None:
            return None
        entries = [token.strip() for token in tokens.get_secret_value().split(",")]
        entries = [token for token in entries if token]
        for number, token in enumerate(entries, start=1):
            weakness = token_weakness(token)
            if weakness:
                raise ValueError(
                    f"token {number} of {len(entries)} {weakness}: a static token must be long "
                    f"and random ({GENERATE_HINT})"
                )
        return tokens

    @model_validator(mode="after")
    def _database_password_apart(self) -> ServiceSettings:
        """Keeps the password out of ``database_url``, so that the URL can be shown and logged:
        from the URL, PACKLINE_DATABASE_PASSWORD or PACKLINE_DATABASE_PASSWORD_FILE (one)."""
        url, in_url = split_password(self.database_url)
        given = [
            name
            for name, present in (
                ("PACKLINE_DATABASE_URL (a password in it)", in_url is not None),
                ("PACKLINE_DATABASE_PASSWORD", self.database_password is not None),
                ("PACKLINE_DATABASE_PASSWORD_FILE", self.database_password_file is not None),
            )
            if present
        ]
        # A service's default URL carries the local development password; a password set apart
        # replaces it. Two set by hand are a mistake: say which.
        if in_url is not None and len(given) > 1 and "database_url" not in self.model_fields_set:
            in_url = None
            given = given[1:]
        if len(given) > 1:
            raise ValueError(f"the database password is given twice: {' and '.join(given)}")
        password = self.database_password
        if in_url is not None:
            password = SecretStr(in_url)
        elif self.database_password_file is not None:
            try:
                text = self.database_password_file.read_text()
            except OSError as error:
                raise ValueError(
                    f"PACKLINE_DATABASE_PASSWORD_FILE cannot be read: {error.strerror}"
                ) from None
            text = text.removesuffix("\n").removesuffix("\r")
            if not text:
                raise ValueError("PACKLINE_DATABASE_PASSWORD_FILE is empty")
            password = SecretStr(text)
        # Frozen settings: this validator is where the model is built, so it may set fields.
        object.__setattr__(self, "database_url", url)
        object.__setattr__(self, "database_password", password)
        return self

    def database_connect_args(self) -> dict[str, Any]:
        """Arguments for ``asyncpg.connect`` / ``create_pool``: the URL, and its password apart
        (None: libpq's PGPASSWORD / .pgpass, or none)."""
        password = self.database_password
        return {
            "dsn": self.database_url,
            "password": password.get_secret_value() if password is not None else None,
        }

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


def split_password(url: str) -> tuple[str, str | None]:
    """``url`` without its password (in the user part, or a ``password`` query parameter), and
    the password, unquoted (None: there was none)."""
    parts = urlsplit(url)
    password: str | None = None
    netloc = parts.netloc
    userinfo, at, hosts = netloc.rpartition("@")
    if at and ":" in userinfo:
        user, _, quoted = userinfo.partition(":")
        password = unquote(quoted) or None
        netloc = f"{user}@{hosts}"
    query = parts.query
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(key == "password" for key, _ in pairs):
        password = next(value for key, value in pairs if key == "password") or password
        query = urlencode([(key, value) for key, value in pairs if key != "password"])
    if password is None:
        return url, None
    # Put together by hand: urlunsplit drops the "//" of an empty host (a Unix socket's URL).
    rebuilt = f"{parts.scheme}://{netloc}{parts.path}"
    rebuilt += f"?{query}" if query else ""
    rebuilt += f"#{parts.fragment}" if parts.fragment else ""
    return rebuilt, password


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
