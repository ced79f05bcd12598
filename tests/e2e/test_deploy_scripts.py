"""The infrastructure scripts are safe to run twice: a second start reuses what runs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import Infrastructure

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.infra,
    pytest.mark.skipif(
        "PACKLINE_TEST_KAFKA_BOOTSTRAP" not in os.environ,
        reason="the infrastructure was not started by deploy/ scripts (testcontainers run)",
    ),
]


def script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / args[0]), *args[1:]], capture_output=True, text=True, timeout=120, check=False
    )


def test_starting_kafka_again_reuses_the_running_broker() -> None:
    started = script("deploy/kafka/kafka.sh", "start")
    assert started.returncode == 0, started.stderr
    assert "already" in started.stderr or "reusing" in started.stderr
    assert script("deploy/kafka/kafka.sh", "status").returncode == 0


async def test_starting_postgres_and_creating_databases_again_changes_nothing(
    infrastructure: Infrastructure, test_id: str
) -> None:
    assert script("deploy/postgres/postgres.sh", "start").returncode == 0
    name = f"t_{test_id}_scripts"
    for _ in range(2):
        created = script("deploy/postgres/postgres.sh", "createdb", name)
        assert created.returncode == 0, created.stderr
    conn = await asyncpg.connect(infrastructure.admin_database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", name) == 1
        await conn.execute(f'DROP DATABASE "{name}"')
    finally:
        await conn.close()


def test_postgres_does_not_run_as_root() -> None:
    data_dir = Path(os.environ.get("PACKLINE_PG_DATA_DIR", ""))
    if not (data_dir / "postmaster.pid").exists():
        pytest.fail("PACKLINE_PG_DATA_DIR does not point at the running cluster")
    pid = (data_dir / "postmaster.pid").read_text().split()[0]
    uid = Path(f"/proc/{pid}").stat().st_uid
    assert uid != 0
