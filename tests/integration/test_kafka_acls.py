"""Kafka principals and ACLs (R17, issue #19 point 4) against the real broker's SASL_SSL listener,
which runs the StandardAuthorizer: each service and each kind of outside producer is its own SCRAM
user, allowed only the topics and consumer groups of its job (``packline-admin acls``, from the
registry). ``deploy/kafka/kafka.sh acls PREFIX`` makes this test's users and ACLs for its own
topics; every local principal's password is ``<user>-dev-secret``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import GroupAuthorizationFailedError, TopicAuthorizationFailedError
from packline_contracts.envelope import Envelope, encode
from packline_contracts.invoices import (
    IssuePackageInvoice,
    LinkAppointment,
    PackageInvoiceIssued,
    PurchaseChannel,
)
from packline_contracts.topics import (
    INVOICING_COMMANDS,
    INVOICING_EVENTS,
    INVOICING_LINKS,
    dead_letter_topic,
)
from packline_contracts.types import Appointment, AppointmentStatus, BookingSource
from packline_core import deadletters
from packline_core.acls import acls, user_name
from packline_core.kafka import KafkaSettings, client_options

from tests.clinic import DR_A, MASSAGE_60, NORTHSIDE, days_ahead, fee_commands, package, patient
from tests.conftest import ReadEvents, StartService
from tests.helpers import eventually

pytestmark = pytest.mark.infra

ROOT = Path(__file__).resolve().parents[2]


def principal(kind: str) -> dict[str, Any]:
    """Settings of a client that connects as the principal of ``kind`` (e.g. matcher)."""
    bootstrap = os.environ.get("PACKLINE_TEST_KAFKA_SASL_BOOTSTRAP")
    ca_file = os.environ.get("PACKLINE_TEST_TLS_CA")
    if not bootstrap or not ca_file:
        pytest.fail(
            "needs the broker's SASL_SSL listener and the local CA: run 'deploy/packline test', "
            "or set PACKLINE_TEST_KAFKA_SASL_BOOTSTRAP and PACKLINE_TEST_TLS_CA",
            pytrace=False,
        )
    user = user_name(kind)
    return {
        "kafka_bootstrap_servers": bootstrap,
        "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_mechanism": "SCRAM-SHA-256",
        "kafka_sasl_username": user,
        "kafka_sasl_password": f"{user}-dev-secret",
        "kafka_ssl_ca_file": ca_file,
    }


async def kafka_sh(*args: str) -> None:
    process = await asyncio.create_subprocess_exec(
        str(ROOT / "deploy/kafka/kafka.sh"),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    assert process.returncode == 0, output.decode()


@pytest.fixture
async def principals(topic_prefix: str) -> AsyncIterator[str]:
    """The users and this test's ACLs on the local broker, removed again afterwards."""
    await kafka_sh("acls", topic_prefix)
    yield topic_prefix
    await kafka_sh("acls", topic_prefix, "remove")


def forged_link(prefix: str) -> tuple[str, bytes, bytes]:
    who = patient()
    link = LinkAppointment(
        patient_id=who,
        invoice_id=uuid4(),
        line_id=uuid4(),
        appointment=Appointment(
            appointment_id=uuid4(),
            version=1,
            patient_id=who,
            practitioner_id=DR_A,
            location_id=NORTHSIDE,
            starts_at=days_ahead(2),
            duration_minutes=60,
            fee_ids=[MASSAGE_60],
            status=AppointmentStatus.BOOKED,
            source=BookingSource.STAFF,
        ),
        rule="forged",
    )
    record = encode(Envelope.wrap(link, producer="matcher"))
    return prefix + INVOICING_LINKS.name, record.value, record.key or b""


async def send_as(kind: str, topic: str, value: bytes, key: bytes) -> None:
    producer = AIOKafkaProducer(
        **client_options(KafkaSettings(**principal(kind))),
        request_timeout_ms=10_000,
        enable_idempotence=True,
        acks="all",
    )
    await producer.start()
    try:
        await asyncio.wait_for(producer.send_and_wait(topic, value, key=key), timeout=30)
    finally:
        await producer.stop()


async def test_the_matcher_alone_may_write_links(principals: str) -> None:
    topic, value, key = forged_link(principals)
    # Every other principal, the staff front end (which writes the invoicing commands) among
    # them, is refused by the broker: its forged link never reaches invoicing.
    for kind in ("staff-front-end", "online-bookings", "payments", "calendar", "invoicing"):
        with pytest.raises(TopicAuthorizationFailedError):
            await send_as(kind, topic, value, key)
    await send_as("matcher", topic, value, key)
    # The staff front end still writes its own commands topic.
    await send_as("staff-front-end", principals + INVOICING_COMMANDS.name, b"{}", key)


async def test_a_service_cannot_read_what_it_does_not_consume(principals: str) -> None:
    """The matcher reads invoicing's events, never the commands sent to invoicing; and it reads
    only in its own consumer groups."""

    async def read(topic: str, group: str) -> None:
        consumer = AIOKafkaConsumer(
            principals + topic,
            **client_options(KafkaSettings(**principal("matcher"))),
            group_id=principals + group,
            auto_offset_reset="earliest",
            request_timeout_ms=10_000,
        )
        await consumer.start()
        try:
            await asyncio.wait_for(consumer.getmany(timeout_ms=2_000), timeout=30)
        finally:
            await consumer.stop()

    with pytest.raises((TopicAuthorizationFailedError, GroupAuthorizationFailedError)):
        await read(INVOICING_COMMANDS.name, "packline.matcher.events")
    with pytest.raises(GroupAuthorizationFailedError):
        await read(INVOICING_EVENTS.name, "packline.invoicing.commands")
    await read(INVOICING_EVENTS.name, "packline.matcher.events")


def test_the_acls_follow_the_registry() -> None:
    lines = {acl.line() for acl in acls("p.")}
    assert "User:packline-matcher TOPIC p.packline.invoicing.links WRITE" in lines
    assert "User:packline-invoicing TOPIC p.packline.invoicing.links READ" in lines
    writers = {line.split()[0] for line in lines if "invoicing.links WRITE" in line}
    assert writers == {"User:packline-matcher"}
    assert not any("invoicing.commands" in line and "matcher" in line for line in lines)


async def test_a_service_runs_under_its_own_principal(
    principals: str, start_service: StartService, read_events: ReadEvents
) -> None:
    """Invoicing as User:packline-invoicing: it reads its commands (written by the outside
    producers' principals) in its group, applies them and publishes its events and probes."""
    invoicing = await start_service("invoicing", **principal("invoicing"))
    events = await read_events(INVOICING_EVENTS)  # the development listener: a super user

    def record(message: Any) -> tuple[str, bytes, bytes]:
        encoded = encode(Envelope.wrap(message, producer="test"))
        return principals + message.TOPIC.name, encoded.value, encoded.key or b""

    for message in [*fee_commands(), package()]:
        await send_as("staff-front-end", *record(message))
    who, invoice_id = patient(), uuid4()

    async def catalogue() -> bool:
        return bool(await invoicing.pool.fetchval("SELECT count(*) FROM packages") == 1)

    await eventually(catalogue, what="the catalogue, read under invoicing's principal")
    sale = IssuePackageInvoice(
        patient_id=who,
        invoice_id=invoice_id,
        package_id="massage-5x60",
        channel=PurchaseChannel.ONLINE,
        issued_by="shop",
        issued_at=datetime.now(UTC),
    )
    await send_as("online-bookings", *record(sale))
    issued = await events.wait_for(
        PackageInvoiceIssued, lambda e: e.payload.invoice_id == invoice_id
    )
    assert len(issued.payload.invoice.lines) == 5

    transport = httpx.ASGITransport(app=invoicing.http)
    async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
        probe = (await client.post("/ops/probes")).json()

        async def arrived() -> bool:
            return (await client.get(f"/ops/probes/{probe['probe_id']}")).status_code == 200

        await eventually(arrived, within=30, what="the probe, written and read by invoicing")


async def test_a_link_smuggled_onto_the_commands_topic_is_dead_lettered(
    principals: str, start_service: StartService, infrastructure: Any
) -> None:
    """The staff front end may write packline.invoicing.commands; a LinkAppointment it puts
    there is not applied: a message is read only from its own type's topic (I9: dead-lettered,
    the reason naming message_type)."""
    invoicing = await start_service("invoicing")
    _, value, key = forged_link(principals)
    await send_as("staff-front-end", principals + INVOICING_COMMANDS.name, value, key)
    topic = invoicing.settings.topic(dead_letter_topic("invoicing"))

    async def dead_lettered() -> list[Any] | None:
        letters = await deadletters.read_all(infrastructure.kafka_bootstrap, topic)
        return letters or None

    (letter,) = await eventually(dead_lettered, what="the smuggled link, dead-lettered")
    assert "message_type" in letter.header("reason")
    assert "packline.invoicing.links" in letter.header("reason")
    assert not await invoicing.pool.fetchval("SELECT count(*) FROM waiting_links")


async def test_packline_admin_applies_the_acls_and_users_as_the_helm_job_does(
    topic_prefix: str,
) -> None:
    """The chart's ACL Job (and compose's kafka-principals) runs ``packline-admin acls --apply``
    as the admin user: with a user named as the cluster likes and its password from the
    environment, the user can log in and do its job, and nothing else; ``--remove`` takes the
    ACLs away again. Applying twice changes nothing."""
    name, password = f"{topic_prefix}matcher", f"pw-{uuid4().hex}"
    admin_settings = {
        "PACKLINE_KAFKA_BOOTSTRAP_SERVERS": principal("matcher")["kafka_bootstrap_servers"],
        "PACKLINE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "PACKLINE_KAFKA_SASL_USERNAME": os.environ.get("PACKLINE_TEST_KAFKA_SASL_USERNAME", ""),
        "PACKLINE_KAFKA_SASL_PASSWORD": os.environ.get("PACKLINE_TEST_KAFKA_SASL_PASSWORD", ""),
        "PACKLINE_KAFKA_SSL_CA_FILE": principal("matcher")["kafka_ssl_ca_file"],
        "PACKLINE_TOPIC_PREFIX": topic_prefix,
        "MATCHER_PASSWORD": password,
    }

    async def admin(*args: str) -> str:
        process = await asyncio.create_subprocess_exec(
            str(ROOT / ".venv/bin/packline-admin"),
            "acls",
            *args,
            env={**os.environ, **admin_settings},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(process.communicate(), timeout=120)
        assert process.returncode == 0, output.decode()
        return output.decode()

    job = ("--user", f"matcher={name}", "--password-env", "matcher=MATCHER_PASSWORD")
    for _ in range(2):
        assert f"User:{name}" in await admin("--apply", *job)
    as_user = {**principal("matcher"), "kafka_sasl_username": name, "kafka_sasl_password": password}
    topic, value, key = forged_link(topic_prefix)

    async def send(topic: str) -> None:
        producer = AIOKafkaProducer(
            **client_options(KafkaSettings(**as_user)), request_timeout_ms=10_000
        )
        await producer.start()
        try:
            await asyncio.wait_for(producer.send_and_wait(topic, value, key=key), timeout=30)
        finally:
            await producer.stop()

    try:
        await send(topic)  # the matcher's job: its links
        with pytest.raises(TopicAuthorizationFailedError):
            await send(topic_prefix + INVOICING_COMMANDS.name)
    finally:
        await admin("--remove", "--user", f"matcher={name}")
    with pytest.raises(TopicAuthorizationFailedError):
        await send(topic)
