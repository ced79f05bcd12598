"""docker-compose.yml is the same system as `deploy/packline run`, and safe to start: no Docker
engine runs here, so the file is read as compose would read it (variables interpolated, the
short port syntax parsed) and checked. The console is there and reaches the three services;
a client on the host reaches Kafka through a listener advertised for the host; PostgreSQL and
Kafka answer only on the host's loopback; no secret has a default, so nothing opens the data
with a password everybody knows. tests/unit/test_compose.py checks the services' settings."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from packline_console.settings import ConsoleSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_TEXT)
SERVICES: dict[str, Any] = COMPOSE["services"]
PACKLINE_SERVICES = ("calendar", "invoicing", "matcher")

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}
VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
SECRET_NAME = re.compile(r"TOKEN|PASSWORD|SECRET|CREDENTIAL|PRIVATE_KEY|JAAS", re.I)
# The passwords inside a JAAS setting (Kafka's PLAIN users: password="…" user_<name>="…").
JAAS_SECRET = re.compile(r'\b(?:password|user_\w+)="([^"]*)"')


def interpolate(value: str, environment: dict[str, str] | None = None) -> str:
    """compose's interpolation, with nothing set but `environment`: a default where one is
    given, otherwise the variable's value or, unset, <NAME>."""
    environment = environment or {}

    def one(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        if name in environment:
            return environment[name]
        return arg if op in (":-", "-") else f"<{name}>"

    return VARIABLE.sub(one, value)


def published(service: str) -> list[tuple[str | None, int, int]]:
    """(host address or None for every address, host port, container port) of each port."""
    ports = []
    for entry in SERVICES[service].get("ports") or []:
        if isinstance(entry, dict):
            host_ip = entry.get("host_ip")
            host, container = int(interpolate(str(entry["published"]))), int(entry["target"])
        else:
            parts = interpolate(str(entry)).rsplit(":", 2)
            host_ip = parts[0] if len(parts) == 3 else None
            host, container = int(parts[-2]), int(parts[-1])
        ports.append((host_ip, host, container))
    return ports


def listeners(value: str) -> dict[str, tuple[str, int]]:
    """KAFKA_*LISTENERS: name -> (host, port)."""
    found = {}
    for item in interpolate(value).split(","):
        name, address = item.split("://")
        host, port = address.rsplit(":", 1)
        found[name] = (host, int(port))
    return found


def environment(service: str) -> dict[str, str]:
    return {key: str(value) for key, value in (SERVICES[service].get("environment") or {}).items()}


# --- the console ------------------------------------------------------------------------------


def test_the_console_runs_and_reaches_the_three_services() -> None:
    console = SERVICES["console"]
    assert console["build"]["dockerfile"] == "deploy/Dockerfile"
    assert console["build"]["args"]["SERVICE"] == "console"
    # The image's default command is the services' "serve", which packline-console refuses.
    assert console["command"] == []
    env = environment("console")
    readable = {f"PACKLINE_{name.upper()}" for name in ConsoleSettings.model_fields}
    assert set(env) <= readable, set(env) - readable
    fields: dict[str, Any] = {k.removeprefix("PACKLINE_").lower(): v for k, v in env.items()}
    settings = ConsoleSettings(**fields)
    assert settings.http_host == "0.0.0.0"
    for name in PACKLINE_SERVICES:
        url = urlparse(settings.service_url(name))
        assert url.hostname == name, f"the console's {name} URL: {url.geturl()}"
        assert str(url.port) == environment(name)["PACKLINE_HTTP_PORT"]
        assert console["depends_on"][name] == {"condition": "service_healthy"}
    assert (
        settings.kafka_bootstrap_servers
        == environment("calendar")["PACKLINE_KAFKA_BOOTSTRAP_SERVERS"]
    )
    assert (None, 8080, settings.http_port) in published("console")


def test_every_process_the_readme_says_runs_is_in_compose() -> None:
    """The README's table of services, its console, and every program under services/."""
    readme = (ROOT / "README.md").read_text()
    services_table = readme[readme.index("| service | owns |") :].split("\n\n")[0]
    table = set(re.findall(r"^\| `(\w+)` \|", services_table, re.M))
    assert set(PACKLINE_SERVICES) <= table
    programs = set()
    for pyproject in ROOT.glob("services/*/pyproject.toml"):
        scripts = tomllib.loads(pyproject.read_text())["project"].get("scripts") or {}
        programs |= {
            script.removeprefix("packline-")
            for script in scripts
            if script == f"packline-{pyproject.parent.name}"
        }
    assert {"calendar", "invoicing", "matcher", "console"} <= programs
    assert table | programs | {"kafka", "postgres"} <= set(SERVICES), (
        table | programs | {"kafka", "postgres"}
    ) - set(SERVICES)
    for name in programs:
        assert SERVICES[name]["build"]["args"]["SERVICE"] == name


# --- Kafka from the containers and from the host ----------------------------------------------


def test_kafka_advertises_a_listener_the_host_can_reach_and_publishes_it() -> None:
    env = environment("kafka")
    bound = listeners(env["KAFKA_LISTENERS"])
    advertised = listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    protocols = dict(
        item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    ports = published("kafka")

    # The containers': what the services, the topics job and the console bootstrap from.
    assert advertised[env["KAFKA_INTER_BROKER_LISTENER_NAME"]] == ("kafka", 9092)
    for name in [*PACKLINE_SERVICES, "console", "topics", "kafka-principals"]:
        assert environment(name)["PACKLINE_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"

    # The host's: advertised as the host's loopback on the port published there, which compose
    # forwards to the port that listener binds in the container.
    on_host = [
        (name, host, port)
        for name, (host, port) in advertised.items()
        if host in ("127.0.0.1", "localhost")
    ]
    assert len(on_host) == 1, advertised
    ((name, host, port),) = on_host
    assert name in protocols and name not in env["KAFKA_CONTROLLER_LISTENER_NAMES"].split(",")
    assert (host if host != "localhost" else "127.0.0.1", port, bound[name][1]) in ports
    assert port == 9092  # where README's examples and the services' defaults look
    # The port follows PACKLINE_KAFKA_PORT in both places, as the local scripts' does.
    moved = {"PACKLINE_KAFKA_PORT": "19092"}
    assert listeners(interpolate(env["KAFKA_ADVERTISED_LISTENERS"], moved))[name][1] == 19092
    assert any(
        interpolate(str(entry), moved) == f"127.0.0.1:19092:{bound[name][1]}"
        for entry in SERVICES["kafka"]["ports"]
    )


@pytest.mark.parametrize("service", ["kafka", "postgres"])
def test_kafka_and_postgresql_answer_only_on_the_hosts_loopback(service: str) -> None:
    ports = published(service)
    assert ports, f"{service} publishes no port"
    for host_ip, _, _ in ports:
        assert host_ip == "127.0.0.1", f"{service} is published on every address of the host"
    if service == "postgres":
        assert (("127.0.0.1", 5432, 5432)) in ports


# --- secrets ----------------------------------------------------------------------------------


def secret_values() -> list[tuple[str, str, str]]:
    """(service, variable, value) of every setting that holds a secret, or a URL with one."""
    found = []
    for service in SERVICES:
        for key, value in environment(service).items():
            if SECRET_NAME.search(key) or urlparse(value).password is not None:
                found.append((service, key, value))
    return found


def secrets_in(key: str, value: str) -> list[str]:
    """The secret parts of one setting's value: a URL's password, a JAAS setting's passwords,
    or the whole value."""
    if "JAAS" in key:
        found = JAAS_SECRET.findall(value)
        assert found or "ScramLoginModule" in value, f"{key}: no password found in {value!r}"
        return list(found)
    if "://" in value:
        password = urlparse(value).password
        assert password is not None
        return [password]
    return [value]


def test_no_secret_has_a_literal_value_or_default() -> None:
    checked = secret_values()
    assert {(s, k) for s, k, _ in checked} >= {
        ("postgres", "POSTGRES_PASSWORD"),
        ("calendar", "PACKLINE_STAFF_TOKENS"),
        ("invoicing", "PACKLINE_CALENDAR_TOKEN"),
        ("matcher", "PACKLINE_DATABASE_URL"),
        ("matcher", "PACKLINE_KAFKA_SASL_PASSWORD"),
        ("kafka", "KAFKA_LISTENER_NAME_INTERNAL_PLAIN_SASL_JAAS_CONFIG"),
    }
    for service, key, value in checked:
        for secret in secrets_in(key, value):
            match = VARIABLE.fullmatch(secret)
            assert match, f"{service}: {key} holds a literal secret"
            assert match["op"] in (None, ":?", "?"), f"{service}: {key} has a default secret"
    # Nowhere in the file (comments aside) a default for a secret-looking variable.
    for line in COMPOSE_TEXT.splitlines():
        code = line.split(" #")[0]
        for match in VARIABLE.finditer(code):
            if SECRET_NAME.search(match["name"]):
                assert match["op"] in (None, ":?", "?"), line


def test_compose_refuses_to_start_without_each_secret() -> None:
    """Every secret variable is required (${NAME:?…}) at least once, so compose stops with the
    message instead of starting with an empty password; the README says how to set them."""
    used = {match["name"] for _, _, value in secret_values() for match in VARIABLE.finditer(value)}
    required = {m["name"] for m in VARIABLE.finditer(COMPOSE_TEXT) if m["op"] == ":?"}
    assert used == {
        "PACKLINE_STAFF_TOKEN",
        "PACKLINE_PG_PASSWORD",
        "PACKLINE_KAFKA_ADMIN_PASSWORD",
        *(f"PACKLINE_KAFKA_{name.upper()}_PASSWORD" for name in [*PACKLINE_SERVICES, "console"]),
    }
    assert used <= required
    readme = (ROOT / "README.md").read_text()
    for name in used:
        assert name in readme, f"README does not say to set {name} for docker compose"
