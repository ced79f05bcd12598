"""Secrets in the settings: the database password is never shown, and weak or well-known tokens,
passwords and keys stop a process at start with a message naming the variable."""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path

import jwt
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from packline_calendar.settings import CalendarSettings
from packline_core import issuer
from packline_core.settings import SettingsError, load_settings, split_password
from packline_core.weak_secrets import KNOWN_EXAMPLE_VALUES, token_weakness

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "Pw-" + secrets.token_hex(8) + "@:/?#%"  # characters a URL must quote


def quoted(password: str) -> str:
    from urllib.parse import quote

    return quote(password, safe="")


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No PACKLINE_* variable from the caller's environment; the staff API explicitly open."""
    for name in CalendarSettings.env_names():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PACKLINE_STAFF_API_OPEN", "true")
    return monkeypatch


def shown(settings: CalendarSettings) -> list[str]:
    """Every way the settings are shown: repr, str, and their dumps."""
    return [
        repr(settings),
        str(settings),
        settings.model_dump_json(),
        str(settings.model_dump()),
        json.dumps(settings.model_dump(mode="json")),
    ]


# --- the database password ---------------------------------------------------------------------


def test_a_password_in_the_database_url_is_taken_out_of_it_and_never_shown(
    environment: pytest.MonkeyPatch,
) -> None:
    environment.setenv(
        "PACKLINE_DATABASE_URL",
        f"postgresql://svc:{quoted(PASSWORD)}@db.internal:5432/packline_calendar?sslmode=require",
    )
    settings = load_settings(CalendarSettings)
    for text in shown(settings):
        assert PASSWORD not in text and quoted(PASSWORD) not in text
    # The URL itself stays useful to show: everything but the password.
    assert settings.database_url == (
        "postgresql://svc@db.internal:5432/packline_calendar?sslmode=require"
    )
    assert settings.database_connect_args() == {"dsn": settings.database_url, "password": PASSWORD}


def test_the_password_can_come_apart_from_the_url_or_from_a_file(
    environment: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    environment.setenv("PACKLINE_DATABASE_URL", "postgresql://svc@db:5432/packline_calendar")
    environment.setenv("PACKLINE_DATABASE_PASSWORD", PASSWORD)
    settings = load_settings(CalendarSettings)
    assert settings.database_connect_args()["password"] == PASSWORD
    assert all(PASSWORD not in text for text in shown(settings))

    environment.delenv("PACKLINE_DATABASE_PASSWORD")
    mounted = tmp_path / "database-password"
    mounted.write_text(PASSWORD + "\n")  # as `kubectl create secret --from-file` often has it
    environment.setenv("PACKLINE_DATABASE_PASSWORD_FILE", str(mounted))
    settings = load_settings(CalendarSettings)
    assert settings.database_connect_args()["password"] == PASSWORD
    assert all(PASSWORD not in text for text in shown(settings))


def test_a_password_set_apart_replaces_the_default_urls_development_password(
    environment: pytest.MonkeyPatch,
) -> None:
    default = load_settings(CalendarSettings)
    assert default.database_url == "postgresql://packline@127.0.0.1:5432/packline_calendar"
    assert default.database_connect_args()["password"] == "packline"
    environment.setenv("PACKLINE_DATABASE_PASSWORD", PASSWORD)
    assert load_settings(CalendarSettings).database_connect_args()["password"] == PASSWORD


def test_a_password_given_twice_or_an_unreadable_file_stops_start_naming_the_variables(
    environment: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    environment.setenv("PACKLINE_DATABASE_URL", f"postgresql://svc:{PASSWORD}@db/packline_x")
    environment.setenv("PACKLINE_DATABASE_PASSWORD", "another-one")
    with pytest.raises(SettingsError) as twice:
        load_settings(CalendarSettings)
    assert "PACKLINE_DATABASE_URL" in str(twice.value)
    assert "PACKLINE_DATABASE_PASSWORD" in str(twice.value)
    assert PASSWORD not in str(twice.value) and "another-one" not in str(twice.value)

    environment.setenv("PACKLINE_DATABASE_URL", "postgresql://svc@db/packline_x")
    environment.delenv("PACKLINE_DATABASE_PASSWORD")
    environment.setenv("PACKLINE_DATABASE_PASSWORD_FILE", str(tmp_path / "missing"))
    with pytest.raises(SettingsError) as unreadable:
        load_settings(CalendarSettings)
    assert "PACKLINE_DATABASE_PASSWORD_FILE cannot be read" in str(unreadable.value)


def test_a_bad_database_url_is_refused_without_repeating_it(
    environment: pytest.MonkeyPatch,
) -> None:
    environment.setenv("PACKLINE_DATABASE_URL", f"mysql://svc:{PASSWORD}@db/x")
    with pytest.raises(SettingsError) as raised:
        load_settings(CalendarSettings)
    assert "PACKLINE_DATABASE_URL" in str(raised.value) and PASSWORD not in str(raised.value)


@pytest.mark.parametrize(
    ("url", "without", "password"),
    [
        ("postgresql://u:p@h/db", "postgresql://u@h/db", "p"),
        ("postgres://u@h:5432/db", "postgres://u@h:5432/db", None),
        ("postgresql://u:p%40ss@h1:5432,h2:5433/db", "postgresql://u@h1:5432,h2:5433/db", "p@ss"),
        (
            "postgresql://u@h/db?password=q&sslmode=verify-full",
            "postgresql://u@h/db?sslmode=verify-full",
            "q",
        ),
        ("postgresql:///db?host=/run/postgresql", "postgresql:///db?host=/run/postgresql", None),
        ("postgresql:///db?password=q&host=/run/pg", "postgresql:///db?host=%2Frun%2Fpg", "q"),
    ],
)
def test_split_password(url: str, without: str, password: str | None) -> None:
    assert split_password(url) == (without, password)


# --- static tokens -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "weak",
    [
        "q1w2",
        "changeme",
        "packline-dev-token",  # what deploy/packline used to set
        "console-test-token",
        "x" * 40,
        "changeme" * 5,
        "packline-dev-token-packline-dev-token",
        "Password-Secret-Token-Admin-0000000000",
    ],
)
def test_a_short_or_well_known_static_token_stops_start_naming_the_variable(
    environment: pytest.MonkeyPatch, weak: str
) -> None:
    good = secrets.token_hex(32)
    environment.setenv("PACKLINE_STAFF_TOKENS", f"{good}, {weak}")
    with pytest.raises(SettingsError) as raised:
        load_settings(CalendarSettings)
    message = str(raised.value)
    assert "PACKLINE_STAFF_TOKENS" in message and "token 2 of 2" in message
    assert weak not in message and good not in message


@pytest.mark.parametrize(
    "strong",
    [secrets.token_hex(16), secrets.token_hex(32), secrets.token_urlsafe(32)],
)
def test_a_long_random_static_token_is_accepted(
    environment: pytest.MonkeyPatch, strong: str
) -> None:
    environment.setenv("PACKLINE_STAFF_TOKENS", strong)
    settings = load_settings(CalendarSettings)
    assert settings.staff_tokens is not None
    assert all(strong not in text for text in shown(settings))


def documented_token_values() -> set[str]:
    """Literal tokens our docs, compose file, chart values and scripts show (none should be
    usable: a documented token is a public one)."""
    texts = [
        (ROOT / "README.md").read_text(),
        (ROOT / "docker-compose.yml").read_text(),
        (ROOT / "deploy/helm/packline/values.yaml").read_text(),
        (ROOT / "deploy/lib/env.sh").read_text(),
        *(path.read_text() for path in sorted((ROOT / "docs").glob("*.md"))),
    ]
    found: set[str] = set()
    for text in texts:
        found |= set(re.findall(r"Bearer ([A-Za-z0-9._~+/=-]{4,})", text))
        found |= set(re.findall(r"TOKENS?[=:] *[\"']?([A-Za-z0-9._~+/=-]{4,})", text))
    values = yaml.safe_load((ROOT / "deploy/helm/packline/values.yaml").read_text())
    for key, value in (values.get("secrets", {}).get("values") or {}).items():
        if "token" in key:
            found.add(str(value))
    return found


def test_no_token_shown_in_our_docs_is_accepted() -> None:
    for value in documented_token_values() | KNOWN_EXAMPLE_VALUES:
        assert token_weakness(value) is not None, f"a documented token would be accepted: {value}"


# --- Kafka SASL passwords ------------------------------------------------------------------------


@pytest.mark.parametrize("weak", [" ", "password", "Kafka", "changeme", "svc-user", "short"])
def test_an_empty_or_well_known_kafka_password_stops_start(
    environment: pytest.MonkeyPatch, weak: str
) -> None:
    environment.setenv("PACKLINE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    environment.setenv("PACKLINE_KAFKA_SASL_USERNAME", "svc-user")
    environment.setenv("PACKLINE_KAFKA_SASL_PASSWORD", weak)
    with pytest.raises(SettingsError) as raised:
        load_settings(CalendarSettings)
    assert "PACKLINE_KAFKA_SASL_PASSWORD" in str(raised.value)


def test_a_real_kafka_password_is_accepted(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("PACKLINE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    environment.setenv("PACKLINE_KAFKA_SASL_USERNAME", "svc-user")
    password = secrets.token_urlsafe(24)
    environment.setenv("PACKLINE_KAFKA_SASL_PASSWORD", password)
    settings = load_settings(CalendarSettings)
    assert all(password not in text for text in shown(settings))


# --- the local issuer's keys ---------------------------------------------------------------------


def key_file(path: Path, bits: int) -> Path:
    private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    path.write_text(json.dumps({"keys": [{"kid": f"rsa{bits}", "pem": pem}]}))
    return path


def test_the_issuer_refuses_an_rsa_key_under_2048_bits(tmp_path: Path) -> None:
    path = key_file(tmp_path / "keys.json", 1024)
    with pytest.raises(issuer.WeakKey) as raised:
        issuer.Keys(path)
    message = str(raised.value)
    assert "PACKLINE_ISSUER_KEY_FILE" in message and "rsa1024" in message and "2048" in message
    with pytest.raises(SystemExit) as command:
        issuer.main(["--key-file", str(path), "mint", "--sub", "sam", "--role", "reception"])
    assert "1024 bits" in str(command.value)


def test_the_issuer_signs_with_an_rsa_key_of_2048_bits(tmp_path: Path) -> None:
    keys = issuer.Keys(key_file(tmp_path / "keys.json", 2048))
    token = issuer.mint(
        keys, issuer="http://issuer.test", audience="packline", sub="sam", role="reception"
    )
    (published,) = keys.jwks()["keys"]
    assert published["alg"] == "RS256" and published["kty"] == "RSA"
    public = jwt.PyJWK(published).key
    claims = jwt.decode(token, public, algorithms=["RS256"], audience="packline")
    assert claims["sub"] == "sam"


def test_the_issuers_own_keys_are_ec_p256(tmp_path: Path) -> None:
    keys = issuer.Keys(tmp_path / "keys.json")
    (published,) = keys.jwks()["keys"]
    assert published["alg"] == "ES256" and published["crv"] == "P-256"


# --- compose ------------------------------------------------------------------------------------


def test_compose_ships_no_default_that_opens_data() -> None:
    """PostgreSQL on the host's loopback only; no service told to serve its staff API without a
    token; every static token and password one the operator must set (checked in detail by
    tests/deploy/test_compose_file.py)."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert compose["services"]["postgres"]["ports"] == ["127.0.0.1:${PACKLINE_PG_PORT:-5432}:5432"]
    for name, service in compose["services"].items():
        environment = service.get("environment") or {}
        assert str(environment.get("PACKLINE_STAFF_API_OPEN", "false")).lower() == "false", name
        for key in ("PACKLINE_STAFF_TOKENS", "PACKLINE_CALENDAR_TOKEN"):
            if key in environment:
                assert re.fullmatch(r"\$\{\w+:\?[^}]*\}", environment[key]), (name, key)
