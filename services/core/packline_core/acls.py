"""Kafka principals and ACLs, derived from the topic registry (R17: each service and each kind
of outside producer is its own principal, allowed only its job).

- A topic's ``producers`` (its owner, or the writers the registry names) may WRITE it: each
  service its events and dead letters, the outside producers the commands topics, the matcher
  alone ``packline.invoicing.links``.
- Each consumer of the registry may READ its topics, in its consumer group
  ``<prefix>packline.<service>.<name>`` (READ on the group); an outside reader (the staff
  console's live updates) may READ the topics the registry names for it, without a group.

``packline-admin acls`` prints them, one a line (``deploy/kafka/kafka.sh acls`` applies them to
the local broker), or as ``kafka-acls.sh`` commands for a production cluster; ``--apply`` creates
them on the cluster itself, as the admin user of the ``PACKLINE_KAFKA_*`` settings (the Helm
chart's ACL Job, compose's ``kafka-principals``), and can create the SCRAM users too. Both are
idempotent: an ACL or user that exists is left as it is (a user's password is set again).

The requests are Kafka's own (CreateAcls v1, DeleteAcls v1, AlterUserScramCredentials v0), sent
with aiokafka's connection, so an image needs no Kafka tools.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.protocol.admin import (
    CreateAclsRequest_v1,
    DeleteAclsRequest_v1,
)
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    CompactArray,
    CompactBytes,
    CompactString,
    Int8,
    Int16,
    Int32,
    Schema,
    TaggedFields,
)
from packline_contracts.topics import (
    CONSUMERS,
    OUTSIDE_PRODUCERS,
    OUTSIDE_READERS,
    SERVICES,
    TOPICS,
)

from packline_core.kafka import KafkaSettings

PRINCIPAL_KINDS: tuple[str, ...] = (*SERVICES, *OUTSIDE_PRODUCERS)


def user_name(kind: str) -> str:
    """The SCRAM user of one service or kind of outside producer, e.g. packline-matcher."""
    return f"packline-{kind}"


@dataclass(frozen=True, order=True, slots=True)
class Acl:
    """ALLOW ``principal`` to ``operation`` the literal resource ``resource_type`` / ``name``."""

    principal: str
    resource_type: str  # TOPIC or GROUP
    name: str
    operation: str  # WRITE or READ

    def line(self) -> str:
        return f"{self.principal} {self.resource_type} {self.name} {self.operation}"


def acls(prefix: str = "", users: Mapping[str, str] | None = None) -> list[Acl]:
    """Every ACL Packline's principals need, for topics and groups under ``prefix``. ``users``
    names the SCRAM user of a kind where it is not ``packline-<kind>`` (e.g. a cluster's own
    naming: ``{"calendar": "clinic-a-calendar"}``)."""
    names = dict(users or {})
    unknown = set(names) - set(PRINCIPAL_KINDS)
    if unknown:
        raise ValueError(f"no such principal kind: {sorted(unknown)} (known: {PRINCIPAL_KINDS})")

    def principal_of(kind: str) -> str:
        return f"User:{names.get(kind) or user_name(kind)}"

    found: set[Acl] = set()
    for topic in TOPICS:
        for kind in topic.producers:
            if kind in PRINCIPAL_KINDS:
                found.add(Acl(principal_of(kind), "TOPIC", prefix + topic.name, "WRITE"))
    for consumer in CONSUMERS:
        principal = principal_of(consumer.service)
        group = f"{prefix}packline.{consumer.service}.{consumer.name}"
        found.add(Acl(principal, "GROUP", group, "READ"))
        for topic in consumer.topics:
            found.add(Acl(principal, "TOPIC", prefix + topic.name, "READ"))
    for kind, topics in OUTSIDE_READERS.items():
        for topic in topics:
            found.add(Acl(principal_of(kind), "TOPIC", prefix + topic.name, "READ"))
    return sorted(found)


def kafka_acls_commands(prefix: str = "", bootstrap: str = "$BOOTSTRAP") -> list[str]:
    """The same ACLs as ``kafka-acls.sh`` commands: one per principal, operation and resource
    type (the admin's client settings in ``$ADMIN_CONFIG``)."""
    grouped: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for acl in acls(prefix):
        grouped[(acl.principal, acl.operation, acl.resource_type)].append(acl.name)
    commands = []
    for (principal, operation, resource_type), names in sorted(grouped.items()):
        flag = "--topic" if resource_type == "TOPIC" else "--group"
        resources = " ".join(f"{flag} {name}" for name in names)
        commands.append(
            f"kafka-acls.sh --bootstrap-server {bootstrap} --command-config $ADMIN_CONFIG"
            f" --add --allow-principal {principal} --operation {operation.capitalize()}"
            f" {resources}"
        )
    return commands


# --- creating them on a cluster ---------------------------------------------------------------

# Kafka's codes (org.apache.kafka.common.acl / resource).
_RESOURCE_TYPES = {"TOPIC": 2, "GROUP": 3}
_OPERATIONS = {"READ": 3, "WRITE": 4}
_LITERAL, _ALLOW = 3, 3
_SCRAM_MECHANISMS = {"SCRAM-SHA-256": (1, "sha256"), "SCRAM-SHA-512": (2, "sha512")}


class AclError(RuntimeError):
    """The cluster refused to create or delete an ACL, or to set a user (its error says why:
    e.g. CLUSTER_AUTHORIZATION_FAILED when the admin user may not alter the cluster)."""


def _as_entries(wanted: list[Acl]) -> list[tuple[Any, ...]]:
    """The ACLs as CreateAcls creations / DeleteAcls filters (the same fields, in order): a
    literal resource name, any host, allow."""
    return [
        (
            _RESOURCE_TYPES[acl.resource_type],
            acl.name,
            _LITERAL,
            acl.principal,
            "*",
            _OPERATIONS[acl.operation],
            _ALLOW,
        )
        for acl in wanted
    ]


class _CreateAcls(Request[CreateAclsRequest_v1]):  # type: ignore[misc]
    API_KEY = 30

    def __init__(self, wanted: list[Acl]) -> None:
        self.wanted = wanted

    def build(self, request_struct_class: type[Any]) -> Any:
        return request_struct_class(_as_entries(self.wanted))


class _DeleteAcls(Request[DeleteAclsRequest_v1]):  # type: ignore[misc]
    API_KEY = 31

    def __init__(self, wanted: list[Acl]) -> None:
        self.wanted = wanted

    def build(self, request_struct_class: type[Any]) -> Any:
        return request_struct_class(_as_entries(self.wanted))


class _AlterUserScramCredentialsResponse(Response):  # type: ignore[misc]
    API_KEY = 51
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "results",
            CompactArray(
                ("user", CompactString("utf-8")),
                ("error_code", Int16),
                ("error_message", CompactString("utf-8")),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class _AlterUserScramCredentialsStruct(RequestStruct):  # type: ignore[misc]
    FLEXIBLE_VERSION = True
    API_KEY = 51
    API_VERSION = 0
    RESPONSE_TYPE = _AlterUserScramCredentialsResponse
    SCHEMA = Schema(
        (
            "deletions",
            CompactArray(
                ("name", CompactString("utf-8")), ("mechanism", Int8), ("tags", TaggedFields)
            ),
        ),
        (
            "upsertions",
            CompactArray(
                ("name", CompactString("utf-8")),
                ("mechanism", Int8),
                ("iterations", Int32),
                ("salt", CompactBytes),
                ("salted_password", CompactBytes),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class _AlterUserScramCredentials(Request[_AlterUserScramCredentialsStruct]):  # type: ignore[misc]
    API_KEY = 51

    def __init__(self, upsertions: list[tuple[str, int, int, bytes, bytes, dict[int, bytes]]]):
        self.upsertions = upsertions

    def build(self, request_struct_class: type[Any]) -> Any:
        return request_struct_class([], self.upsertions, {})


def scram_upsertion(
    user: str, password: str, mechanism: str, iterations: int = 8192
) -> tuple[str, int, int, bytes, bytes, dict[int, bytes]]:
    """One user's SCRAM credential as the broker takes it: a fresh salt and the salted password
    (RFC 5802's Hi, i.e. PBKDF2-HMAC); the password itself never leaves this process."""
    code, digest = _SCRAM_MECHANISMS[mechanism]
    salt = os.urandom(32)
    salted = hashlib.pbkdf2_hmac(digest, password.encode(), salt, iterations)
    return (user, code, iterations, salt, salted, {})


async def apply_acls(
    kafka: KafkaSettings,
    wanted: list[Acl],
    *,
    remove: bool = False,
    passwords: Mapping[str, str] | None = None,
    mechanism: str = "SCRAM-SHA-256",
) -> None:
    """Create (or with ``remove`` delete) ``wanted`` on the cluster ``kafka`` connects to, as its
    (admin) user; with ``passwords`` (user -> password), create or update those SCRAM users
    first. Creating an ACL that exists changes nothing, so running it again is harmless."""
    admin = AIOKafkaAdminClient(**kafka.client_options(), request_timeout_ms=30_000)
    await admin.start()
    try:
        if passwords and not remove:
            if mechanism not in _SCRAM_MECHANISMS:
                raise AclError(f"SCRAM users need SCRAM-SHA-256 or -512, not {mechanism}")
            request = _AlterUserScramCredentials(
                [scram_upsertion(user, secret, mechanism) for user, secret in passwords.items()]
            )
            answer = await admin._send_request(request)
            refused = [r for r in answer.results if r[1] != 0]
            if refused:
                raise AclError(f"users refused: {[(r[0], r[1], r[2]) for r in refused]}")
        if not wanted:
            return
        request = _DeleteAcls(wanted) if remove else _CreateAcls(wanted)
        answer = await admin._send_request(request)
        results = answer.filter_responses if remove else answer.creation_responses
        refused = [
            f"{acl.line()}: error {result[0]} {result[1] or ''}".strip()
            for acl, result in zip(wanted, results, strict=True)
            if result[0] != 0
        ]
        if refused:
            raise AclError("ACLs refused:\n" + "\n".join(refused))
    finally:
        await admin.close()
