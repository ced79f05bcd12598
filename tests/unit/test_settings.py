from __future__ import annotations

import pytest
from packline_calendar.settings import CalendarSettings
from packline_contracts.topics import OPS_PROBES
from packline_core.settings import SettingsError, load_settings


def test_defaults_point_at_the_local_infrastructure(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CalendarSettings.env_names():
        monkeypatch.delenv(name, raising=False)
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
