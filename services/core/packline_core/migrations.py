"""Versioned SQL migrations: files named ``NNNN_description.sql`` in a package's ``migrations``
folder, applied in order, each in its own transaction, and recorded in ``schema_migrations``.

Applying is idempotent and safe with several replicas starting at once (an advisory lock
serialises them). A file that was applied and later edited is refused: migrations are history.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Any constant shared by every Packline service; the lock is per database anyway.
_ADVISORY_LOCK_KEY = 0x7061636B  # "pack"

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    source      text        NOT NULL,
    version     integer     NOT NULL,
    name        text        NOT NULL,
    checksum    text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, version)
)
"""


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class Migration:
    source: str
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load(package: str, source: str) -> list[Migration]:
    """Read the migrations shipped in ``package``'s ``migrations`` folder."""
    folder = resources.files(package) / "migrations"
    found: list[Migration] = []
    if not folder.is_dir():
        return found
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _FILE_NAME.match(entry.name)
        if match is None:
            raise MigrationError(f"{package}: migration file {entry.name!r} is not NNNN_name.sql")
        found.append(Migration(source, int(match[1]), match[2], entry.read_text()))
    found.sort(key=lambda migration: migration.version)
    versions = [migration.version for migration in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"{package}: two migrations share a version number")
    return found


async def apply(conn: asyncpg.Connection, migrations: list[Migration]) -> list[Migration]:
    """Apply the migrations not applied yet; return those it applied."""
    applied_now: list[Migration] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _ADVISORY_LOCK_KEY)
    try:
        await conn.execute(_CREATE_TABLE)
        rows = await conn.fetch("SELECT source, version, checksum FROM schema_migrations")
        done = {(row["source"], row["version"]): row["checksum"] for row in rows}
        for migration in migrations:
            checksum = done.get((migration.source, migration.version))
            if checksum is not None:
                if checksum != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.source}/{migration.version:04d}_{migration.name} "
                        "was changed after it was applied; add a new migration instead"
                    )
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (source, version, name, checksum)"
                    " VALUES ($1, $2, $3, $4)",
                    migration.source,
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            applied_now.append(migration)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _ADVISORY_LOCK_KEY)
    return applied_now
