"""Kafka principals and ACLs, derived from the topic registry (R17: each service and each kind
of outside producer is its own principal, allowed only its job).

- A topic's ``producers`` (its owner, or the writers the registry names) may WRITE it: each
  service its events and dead letters, the outside producers the commands topics, the matcher
  alone ``packline.invoicing.links``.
- Each consumer of the registry may READ its topics, in its consumer group
  ``<prefix>packline.<service>.<name>`` (READ on the group).

``packline-admin acls`` prints them, one a line (``deploy/kafka/kafka.sh acls`` applies them to
the local broker), or as ``kafka-acls.sh`` commands for a production cluster.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from packline_contracts.topics import CONSUMERS, OUTSIDE_PRODUCERS, SERVICES, TOPICS

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


def acls(prefix: str = "") -> list[Acl]:
    """Every ACL Packline's principals need, for topics and groups under ``prefix``."""
    found: set[Acl] = set()
    for topic in TOPICS:
        for kind in topic.producers:
            if kind in PRINCIPAL_KINDS:
                found.add(Acl(f"User:{user_name(kind)}", "TOPIC", prefix + topic.name, "WRITE"))
    for consumer in CONSUMERS:
        principal = f"User:{user_name(consumer.service)}"
        group = f"{prefix}packline.{consumer.service}.{consumer.name}"
        found.add(Acl(principal, "GROUP", group, "READ"))
        for topic in consumer.topics:
            found.add(Acl(principal, "TOPIC", prefix + topic.name, "READ"))
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
