"""docker-compose.yml cannot run on a machine without a Docker engine, so check it against the
code instead: every service it runs exists, every variable it sets is one that service reads,
ports agree, the images match the versions the local scripts run, and Kafka runs with its
authorizer, each client under its own principal whose user and ACLs a one-shot makes first."""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from packline_core.acls import acls, user_name
from packline_core.admin import ENV_NAMES as ADMIN_ENV_NAMES
from packline_core.admin import _pairs as pairs
from packline_core.admin import _parser as admin_parser

from tests.services_under_test import SERVICES

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def script_default(name: str) -> str:
    match = re.search(
        rf'^: "\$\{{{name}:=([^}}]*)\}}"', (ROOT / "deploy/lib/env.sh").read_text(), re.M
    )
    assert match, f"{name} has no default in deploy/lib/env.sh"
    return match[1]


def test_every_packline_service_is_in_compose_and_builds_itself(compose: dict[str, Any]) -> None:
    for name in SERVICES:
        entry = compose["services"][name]
        assert entry["build"]["dockerfile"] == "deploy/Dockerfile"
        assert entry["build"]["args"]["SERVICE"] == name
        assert (ROOT / "services" / name / f"packline_{name}").is_dir()
    assert (ROOT / "deploy/Dockerfile").is_file()


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_service_environment_is_read_by_the_service(compose: dict[str, Any], name: str) -> None:
    settings_class, _ = SERVICES[name]
    environment = compose["services"][name]["environment"]
    unknown = set(environment) - settings_class.env_names()
    assert not unknown, f"{name} does not read {sorted(unknown)}"
    # The values must also be valid settings, not only known names, with the secrets compose
    # requires set as README says (random: the services refuse short or well-known tokens).
    chosen = {"PACKLINE_STAFF_TOKEN": secrets.token_hex(32), "PACKLINE_PG_PASSWORD": "0a1b2c3d"}
    values: dict[str, Any] = {
        k.removeprefix("PACKLINE_").lower(): re.sub(
            r"\$\{(\w+)[^}]*\}",
            lambda variable: chosen.get(variable[1], secrets.token_hex(16)),
            v,
        )
        for k, v in environment.items()
    }
    settings = settings_class(**values)
    assert urlparse(settings.database_url).path == f"/packline_{name}"
    assert settings.database_url.startswith("postgresql://packline@postgres:5432/")
    assert settings.database_connect_args()["password"] == chosen["PACKLINE_PG_PASSWORD"]
    assert settings.http_host == "0.0.0.0"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_published_port_is_the_port_the_service_listens_on(
    compose: dict[str, Any], name: str
) -> None:
    entry = compose["services"][name]
    port = entry["environment"]["PACKLINE_HTTP_PORT"]
    assert entry["ports"] == [f"{port}:{port}"]
    assert script_default(f"PACKLINE_{name.upper()}_HTTP_PORT") == port


def test_topic_creation_uses_the_admin_command(compose: dict[str, Any]) -> None:
    topics = compose["services"]["topics"]
    assert topics["entrypoint"] == ["packline-admin", "create-topics"]
    assert set(topics["environment"]) <= ADMIN_ENV_NAMES
    assert topics["environment"]["PACKLINE_PARTITIONS"] == script_default("PACKLINE_PARTITIONS")


def test_images_match_the_versions_the_scripts_run(compose: dict[str, Any]) -> None:
    kafka_image = compose["services"]["kafka"]["image"]
    assert kafka_image == f"apache/kafka:{script_default('PACKLINE_KAFKA_VERSION')}"
    assert compose["services"]["kafka"]["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    postgres_major = compose["services"]["postgres"]["image"].split(":")[1].split(".")[0]
    assert postgres_major == script_default("PACKLINE_PG_VERSION")
    bootstrap = {
        compose["services"][name]["environment"]["PACKLINE_KAFKA_BOOTSTRAP_SERVERS"]
        for name in [*SERVICES, "topics"]
    }
    assert bootstrap == {"kafka:9092"}


def test_every_service_database_is_created_for_docker_users() -> None:
    sql = (ROOT / "deploy/postgres/init-databases.sql").read_text()
    assert set(re.findall(r"CREATE DATABASE (\w+);", sql)) == {f"packline_{n}" for n in SERVICES}


# --- Kafka's authorizer and principals (R17) --------------------------------------------------

KAFKA_CLIENTS = {**{name: name for name in SERVICES}, "console": "staff-front-end"}


def kafka_env(compose: dict[str, Any]) -> dict[str, str]:
    return {key: str(value) for key, value in compose["services"]["kafka"]["environment"].items()}


def broker_settings(compose: dict[str, Any]) -> dict[str, str]:
    """The broker's properties as the apache/kafka image makes them from KAFKA_* variables:
    '_' is '.', '__' is '_', '___' is '-'."""
    settings = {}
    for key, value in kafka_env(compose).items():
        if key.startswith("KAFKA_"):
            name = key.removeprefix("KAFKA_").lower()
            name = name.replace("___", "-").replace("__", "\0").replace("_", ".").replace("\0", "_")
            settings[name] = value
    return settings


def test_the_broker_runs_the_authorizer_and_every_listener_wants_a_login(
    compose: dict[str, Any],
) -> None:
    broker = broker_settings(compose)
    assert broker["authorizer.class.name"] == (
        "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    )
    assert broker["allow.everyone.if.no.acl.found"] == "false"
    assert broker["super.users"] == "User:admin"  # not User:ANONYMOUS
    protocols = dict(
        item.split(":") for item in broker["listener.security.protocol.map"].split(",")
    )
    names = {item.split("://")[0] for item in broker["listeners"].split(",")}
    assert names == set(protocols)
    enabled = broker["sasl.enabled.mechanisms"].split(",")
    for listener, protocol in protocols.items():
        assert protocol.startswith("SASL_"), f"{listener} takes clients without a login"
        mechanisms = broker.get(
            f"listener.name.{listener.lower()}.sasl.enabled.mechanisms", ",".join(enabled)
        ).split(",")
        for mechanism in mechanisms:
            jaas = broker[f"listener.name.{listener.lower()}.{mechanism.lower()}.sasl.jaas.config"]
            assert jaas.rstrip().endswith(";")
            if mechanism == "PLAIN":
                # The admin is the only PLAIN user; its password is a required secret.
                users = re.findall(r'\buser_(\w+)="', jaas)
                assert users == ["admin"], jaas
                for secret in re.findall(r'(?:password|user_\w+)="([^"]*)"', jaas):
                    assert re.fullmatch(r"\$\{PACKLINE_KAFKA_ADMIN_PASSWORD:\?[^}]+\}", secret)
    assert broker["sasl.mechanism.inter.broker.protocol"] in enabled
    assert broker["sasl.mechanism.controller.protocol"] in enabled


def test_each_kafka_client_is_its_own_principal(compose: dict[str, Any]) -> None:
    passwords = set()
    for name, kind in KAFKA_CLIENTS.items():
        environment = compose["services"][name]["environment"]
        assert environment["PACKLINE_KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT", name
        assert environment["PACKLINE_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-256", name
        assert environment["PACKLINE_KAFKA_SASL_USERNAME"] == user_name(kind), name
        passwords.add(environment["PACKLINE_KAFKA_SASL_PASSWORD"])
    assert len(passwords) == len(KAFKA_CLIENTS)  # no two principals share a password
    for one_shot in ("topics", "kafka-principals"):
        environment = compose["services"][one_shot]["environment"]
        assert environment["PACKLINE_KAFKA_SASL_USERNAME"] == "admin"
        assert environment["PACKLINE_KAFKA_SASL_MECHANISM"] == "PLAIN"
        assert set(environment) - ADMIN_ENV_NAMES <= {
            variable for variable in environment if variable.endswith("_PASSWORD")
        }


def test_a_one_shot_makes_the_users_and_the_registrys_acls_before_any_client_starts(
    compose: dict[str, Any],
) -> None:
    principals = compose["services"]["kafka-principals"]
    command = principals["entrypoint"]
    assert command[:2] == ["packline-admin", "acls"] and principals["command"] == []
    args = admin_parser().parse_args(command[1:])
    assert args.apply and not args.user and args.prefix == ""
    assert args.scram_mechanism == "SCRAM-SHA-256"
    environment = principals["environment"]
    made = {kind: environment[variable] for kind, variable in pairs(args.password_env, "").items()}
    # Every client's user is made, with the very password (the same variable) it logs in with.
    for name, kind in KAFKA_CLIENTS.items():
        assert (
            made[kind] == compose["services"][name]["environment"]["PACKLINE_KAFKA_SASL_PASSWORD"]
        )
        depends = compose["services"][name]["depends_on"]
        assert depends["kafka-principals"] == {"condition": "service_completed_successfully"}
    assert set(made) == set(KAFKA_CLIENTS.values())
    assert principals["depends_on"]["kafka"] == {"condition": "service_healthy"}
    # And the ACLs it applies are the registry's: each client may do its job.
    granted = {(acl.principal, acl.resource_type, acl.operation) for acl in acls()}
    for kind in KAFKA_CLIENTS.values():
        assert (f"User:{user_name(kind)}", "TOPIC", "WRITE") in granted
    for name in SERVICES:
        assert (f"User:{user_name(name)}", "GROUP", "READ") in granted
