"""The database password apart from the URL reaches PostgreSQL (which requires it)."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest
from packline_calendar.factory import create_service
from packline_calendar.settings import CalendarSettings
from packline_core.settings import split_password

from tests.conftest import CreateDatabase, Infrastructure, StartService

pytestmark = pytest.mark.infra


async def test_a_service_uses_the_password_from_a_file_and_its_url_has_none(
    start_service: StartService, create_database: CreateDatabase, tmp_path: Path
) -> None:
    url, password = split_password(await create_database("calendar"))
    assert password, "the test database URL has no password (PostgreSQL would not need one)"
    mounted = tmp_path / "database-password"
    mounted.write_text(f"{password}\n")
    calendar = await start_service(
        "calendar", database_url=url, database_password_file=str(mounted)
    )
    assert calendar.settings.database_url == url  # the test's password is a common word
    assert f":{password}@" not in repr(calendar.settings)
    assert "database_password=SecretStr('**********')" in repr(calendar.settings)
    assert await calendar.pool.fetchval("SELECT count(*) FROM schema_migrations") > 0


async def test_a_wrong_password_apart_is_the_one_used(
    infrastructure: Infrastructure, create_database: CreateDatabase
) -> None:
    url, _ = split_password(await create_database("calendar"))
    settings = CalendarSettings(
        database_url=url,
        database_password="not-the-password",
        kafka_bootstrap_servers=infrastructure.kafka_bootstrap,
        http_port=0,
    )
    with pytest.raises(asyncpg.InvalidPasswordError):
        await create_service(settings).migrate()
