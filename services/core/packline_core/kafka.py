"""How every Packline process connects to Kafka: bootstrap servers plus, in production, TLS and
SASL/SCRAM, all from ``PACKLINE_KAFKA_*`` environment variables.

One settings class feeds every client the project builds (FastStream's consumers, the outbox
relay's and the dead-letter producers, the admin client), so a cluster that requires
authentication needs the same five variables everywhere and nothing else.
"""

from __future__ import annotations

import ssl
from typing import Any, Literal

from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from packline_core.weak_secrets import password_weakness

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"]


class KafkaSettings(BaseSettings):
    # Errors never repeat a value: it may be a token or a password.
    model_config = SettingsConfigDict(
        env_prefix="PACKLINE_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092", description="Kafka bootstrap servers, host:port[,host:port]."
    )
    kafka_security_protocol: SecurityProtocol = Field(
        default="PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."
    )
    kafka_sasl_mechanism: SaslMechanism = Field(
        default="SCRAM-SHA-256", description="With SASL_*: SCRAM-SHA-256, SCRAM-SHA-512 or PLAIN."
    )
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_ca_file: str | None = Field(
        default=None, description="With SSL / SASL_SSL: the CA bundle to trust (default: system)."
    )
    kafka_ssl_cert_file: str | None = Field(
        default=None, description="Client certificate for mutual TLS (PEM), with its key file."
    )
    kafka_ssl_key_file: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> KafkaSettings:
        sasl = self.kafka_security_protocol.startswith("SASL_")
        if sasl and not (self.kafka_sasl_username and self.kafka_sasl_password):
            raise ValueError(
                f"PACKLINE_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                "PACKLINE_KAFKA_SASL_USERNAME and PACKLINE_KAFKA_SASL_PASSWORD"
            )
        if sasl and self.kafka_sasl_password is not None:
            weakness = password_weakness(
                self.kafka_sasl_password.get_secret_value(), self.kafka_sasl_username
            )
            if weakness:
                raise ValueError(f"PACKLINE_KAFKA_SASL_PASSWORD {weakness}")
        if bool(self.kafka_ssl_cert_file) != bool(self.kafka_ssl_key_file):
            raise ValueError(
                "PACKLINE_KAFKA_SSL_CERT_FILE and PACKLINE_KAFKA_SSL_KEY_FILE go together"
            )
        return self

    @property
    def uses_tls(self) -> bool:
        return self.kafka_security_protocol in ("SSL", "SASL_SSL")

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.uses_tls:
            return None
        context = ssl.create_default_context(cafile=self.kafka_ssl_ca_file)
        if self.kafka_ssl_cert_file:
            context.load_cert_chain(self.kafka_ssl_cert_file, self.kafka_ssl_key_file)
        return context

    def security(self) -> BaseSecurity | None:
        """The same connection for FastStream's broker."""
        protocol = self.kafka_security_protocol
        if protocol == "PLAINTEXT":
            return None
        if protocol == "SSL":
            return BaseSecurity(ssl_context=self.ssl_context(), use_ssl=True)
        kinds: dict[str, type[SASLPlaintext | SASLScram256 | SASLScram512]] = {
            "PLAIN": SASLPlaintext,
            "SCRAM-SHA-256": SASLScram256,
            "SCRAM-SHA-512": SASLScram512,
        }
        assert self.kafka_sasl_username and self.kafka_sasl_password  # checked in _complete
        return kinds[self.kafka_sasl_mechanism](
            self.kafka_sasl_username,
            self.kafka_sasl_password.get_secret_value(),
            ssl_context=self.ssl_context(),
            use_ssl=self.uses_tls,
        )

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for any aiokafka client: servers and security."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.kafka_bootstrap_servers,
            "security_protocol": self.kafka_security_protocol,
        }
        if self.uses_tls:
            options["ssl_context"] = self.ssl_context()
        if self.kafka_security_protocol.startswith("SASL_"):
            assert self.kafka_sasl_password is not None
            options |= {
                "sasl_mechanism": self.kafka_sasl_mechanism,
                "sasl_plain_username": self.kafka_sasl_username,
                "sasl_plain_password": self.kafka_sasl_password.get_secret_value(),
            }
        return options


def client_options(kafka: KafkaSettings | str) -> dict[str, Any]:
    """aiokafka keyword arguments for full settings or a plain ``host:port`` (no security)."""
    if isinstance(kafka, str):
        return {"bootstrap_servers": kafka}
    return kafka.client_options()
