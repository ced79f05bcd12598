"""Production connections from configuration alone: Kafka over SASL/SCRAM-SHA-256 + TLS and
PostgreSQL over verified TLS, against the real broker's SASL_SSL listener and the real server.

``deploy/packline test`` starts the broker with a SASL_SSL listener, creates its SCRAM user and
turns on TLS in PostgreSQL, all with a local CA; these variables say where.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from packline_core.kafka import KafkaSettings
from packline_core.service import Service

from tests.conftest import CreateDatabase, StartService
from tests.helpers import eventually

pytestmark = pytest.mark.infra


@dataclass(frozen=True)
class SecureInfrastructure:
    sasl_bootstrap: str
    username: str
    password: str
    ca_file: str

    def kafka(self, password: str | None = None) -> dict[str, Any]:
        return {
            "kafka_bootstrap_servers": self.sasl_bootstrap,
            "kafka_security_protocol": "SASL_SSL",
            "kafka_sasl_mechanism": "SCRAM-SHA-256",
            "kafka_sasl_username": self.username,
            "kafka_sasl_password": password or self.password,
            "kafka_ssl_ca_file": self.ca_file,
        }


@pytest.fixture(scope="module")
def secure() -> SecureInfrastructure:
    names = ("BOOTSTRAP", "USERNAME", "PASSWORD")
    values = {name: os.environ.get(f"PACKLINE_TEST_KAFKA_SASL_{name}") for name in names}
    ca_file = os.environ.get("PACKLINE_TEST_TLS_CA")
    if not all(values.values()) or not ca_file:
        pytest.fail(
            "needs the broker's SASL_SSL listener and the local CA: run 'deploy/packline test', "
            "or set PACKLINE_TEST_KAFKA_SASL_BOOTSTRAP/_USERNAME/_PASSWORD and "
            "PACKLINE_TEST_TLS_CA",
            pytrace=False,
        )
    return SecureInfrastructure(
        values["BOOTSTRAP"] or "", values["USERNAME"] or "", values["PASSWORD"] or "", ca_file
    )


def staff(service: Service) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=service.http), base_url="http://x")


async def test_a_service_works_over_sasl_scram_tls_and_postgres_tls(
    secure: SecureInfrastructure,
    start_service: StartService,
    create_database: CreateDatabase,
    infrastructure: object,
) -> None:
    database_url = await create_database("calendar")
    tls_url = f"{database_url}?sslmode=verify-full&sslrootcert={secure.ca_file}"
    calendar = await start_service("calendar", database_url=tls_url, **secure.kafka())

    # HTTP -> database -> outbox -> relay (SASL_SSL) -> Kafka -> consumer (SASL_SSL) -> database
    async with staff(calendar) as client:
        probe = (await client.post("/ops/probes")).json()

        async def arrived() -> bool:
            return (await client.get(f"/ops/probes/{probe['probe_id']}")).status_code == 200

        await eventually(arrived, within=30, what="the probe, round the SASL_SSL path")

    plain_url = database_url  # an admin view of the same server, to see how the service connects
    conn = await asyncpg.connect(plain_url)
    try:
        encrypted = await conn.fetch(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)"
            " WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    assert encrypted and all(row["ssl"] for row in encrypted)


async def test_a_wrong_password_is_refused_and_never_repeated(
    secure: SecureInfrastructure, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "not-the-password-1234"
    settings = KafkaSettings(**secure.kafka(password=wrong))
    admin = AIOKafkaAdminClient(**settings.client_options(), request_timeout_ms=10_000)
    with pytest.raises(Exception) as raised:
        await admin.start()
    await admin.close()
    # aiokafka raises a connection error and logs the broker's reason.
    assert "SaslAuthenticationFailed" in caplog.text
    assert wrong not in caplog.text and wrong not in str(raised.value)
    assert wrong not in repr(settings) and wrong not in str(settings.model_dump())


async def test_the_plaintext_port_does_not_speak_tls(secure: SecureInfrastructure) -> None:
    """A client set up for SASL_SSL does not fall back to plaintext on the wrong port."""
    bootstrap = os.environ["PACKLINE_TEST_KAFKA_BOOTSTRAP"]
    settings = KafkaSettings(**{**secure.kafka(), "kafka_bootstrap_servers": bootstrap})
    admin = AIOKafkaAdminClient(**settings.client_options(), request_timeout_ms=5_000)
    with pytest.raises(Exception):  # noqa: B017 (the kind depends on where the handshake breaks)
        await admin.start()
    await admin.close()
