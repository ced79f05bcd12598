from __future__ import annotations

import secrets

import pytest
from packline_calendar.settings import CalendarSettings
from packline_contracts.topics import OPS_PROBES
from packline_core.settings import SettingsError, load_settings

TOKEN = secrets.token_hex(32)


def test_defaults_point_at_the_local_infrastructure(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CalendarSettings.env_names():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PACKLINE_STAFF_TOKENS", TOKEN)  # the one setting without a default
    settings = load_settings(CalendarSettings)
    assert settings.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert settings.database_url.endswith("/packline_calendar")
    assert settings.http_port == 8081


def test_environment_overrides_and_prefixes_topics_and_groups(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PACKLINE_TOPIC_PREFIX", "clinic-a.")
    monkeypatch.setenv("PACKLINE_HTTP_PORT", "9001")
    settings = load_settings(CalendarSettings)
    assert settings.http_port == 9001
    assert settings.topic(OPS_PROBES) == "clinic-a.packline.ops.probes"
    assert settings.group_id("calendar", "probes") == "clinic-a.packline.calendar.probes"


def test_a_bad_value_stops_start_up_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PACKLINE_HTTP_PORT", "eighty")
    monkeypatch.setenv("PACKLINE_DATABASE_URL", "mysql://somewhere/db")
    with pytest.raises(SettingsError) as raised:
        load_settings(CalendarSettings)
    message = str(raised.value)
    assert "PACKLINE_HTTP_PORT" in message
    assert "PACKLINE_DATABASE_URL" in message


def test_env_names_lists_what_the_service_reads() -> None:
    assert {"PACKLINE_DATABASE_URL", "PACKLINE_KAFKA_BOOTSTRAP_SERVERS"} <= (
        CalendarSettings.env_names()
    )


def test_no_staff_token_and_no_explicit_opt_out_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PACKLINE_STAFF_TOKENS", raising=False)
    monkeypatch.setenv("PACKLINE_STAFF_API_OPEN", "false")
    with pytest.raises(SettingsError) as raised:
        load_settings(CalendarSettings)
    assert "PACKLINE_STAFF_TOKENS is not set" in str(raised.value)
    monkeypatch.setenv("PACKLINE_STAFF_TOKENS", TOKEN)
    assert load_settings(CalendarSettings).staff_tokens is not None


def test_sasl_needs_a_user_and_its_password_is_never_shown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PACKLINE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.delenv("PACKLINE_KAFKA_SASL_USERNAME", raising=False)
    monkeypatch.delenv("PACKLINE_KAFKA_SASL_PASSWORD", raising=False)
    with pytest.raises(SettingsError) as raised:
        load_settings(CalendarSettings)
    assert "PACKLINE_KAFKA_SASL_USERNAME" in str(raised.value)
    monkeypatch.setenv("PACKLINE_KAFKA_SASL_USERNAME", "packline")
    monkeypatch.setenv("PACKLINE_KAFKA_SASL_PASSWORD", "s3cret-value")
    settings = load_settings(CalendarSettings)
    options = settings.client_options()
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-256"
    assert options["ssl_context"] is not None
    assert "s3cret-value" not in repr(settings) and "s3cret-value" not in str(settings)
