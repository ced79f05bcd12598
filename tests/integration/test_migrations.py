"""Migrations against the real PostgreSQL: idempotent, serialised between replicas, immutable."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from packline_core import migrations
from packline_core.migrations import Migration, MigrationError

from tests.conftest import CreateDatabase

pytestmark = pytest.mark.infra

FIRST = Migration("demo", 1, "create", "CREATE TABLE demo (id int PRIMARY KEY)")
SECOND = Migration("demo", 2, "seed", "INSERT INTO demo VALUES (1)")


async def test_applying_twice_applies_once(create_database: CreateDatabase) -> None:
    conn = await asyncpg.connect(await create_database("migrations"))
    try:
        assert await migrations.apply(conn, [FIRST, SECOND]) == [FIRST, SECOND]
        assert await migrations.apply(conn, [FIRST, SECOND]) == []
        assert await conn.fetchval("SELECT count(*) FROM demo") == 1
        recorded = await conn.fetch("SELECT source, version FROM schema_migrations ORDER BY 2")
        assert [(r["source"], r["version"]) for r in recorded] == [("demo", 1), ("demo", 2)]
    finally:
        await conn.close()


async def test_replicas_starting_together_apply_each_migration_once(
    create_database: CreateDatabase,
) -> None:
    url = await create_database("migrations")
    connections = [await asyncpg.connect(url) for _ in range(4)]
    try:
        results = await asyncio.gather(
            *(migrations.apply(conn, [FIRST, SECOND]) for conn in connections)
        )
        assert sorted(len(applied) for applied in results) == [0, 0, 0, 2]
        assert await connections[0].fetchval("SELECT count(*) FROM demo") == 1
    finally:
        for conn in connections:
            await conn.close()


async def test_an_applied_migration_that_was_edited_is_refused(
    create_database: CreateDatabase,
) -> None:
    conn = await asyncpg.connect(await create_database("migrations"))
    try:
        await migrations.apply(conn, [FIRST])
        edited = Migration("demo", 1, "create", "CREATE TABLE demo (id bigint PRIMARY KEY)")
        with pytest.raises(MigrationError, match="changed after it was applied"):
            await migrations.apply(conn, [edited])
    finally:
        await conn.close()


async def test_a_failing_migration_leaves_nothing_behind(create_database: CreateDatabase) -> None:
    conn = await asyncpg.connect(await create_database("migrations"))
    broken = Migration("demo", 2, "broken", "INSERT INTO demo VALUES (1); SELECT no_such_column")
    try:
        with pytest.raises(asyncpg.PostgresError):
            await migrations.apply(conn, [FIRST, broken])
        assert await conn.fetchval("SELECT count(*) FROM demo") == 0
        assert await conn.fetchval("SELECT max(version) FROM schema_migrations") == 1
    finally:
        await conn.close()
