"""docker-compose.yml cannot run on a machine without a Docker engine, so check it against the
code instead: every service it runs exists, every variable it sets is one that service reads,
ports agree, and the images match the versions the local scripts run."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from packline_core.admin import ENV_NAMES as ADMIN_ENV_NAMES

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
    # The values must also be valid settings, not only known names.
    settings = settings_class(
        **{k.removeprefix("PACKLINE_").lower(): v for k, v in environment.items()}
    )
    assert urlparse(settings.database_url).path == f"/packline_{name}"
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
