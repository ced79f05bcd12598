"""A service run the way operations run it: its console script in its own process, stopped by
SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys

import httpx
import pytest

from tests.conftest import CreateDatabase, Infrastructure
from tests.helpers import eventually

pytestmark = pytest.mark.infra


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.parametrize("name", ["calendar", "invoicing", "matcher"])
async def test_service_starts_answers_ready_and_stops_cleanly_on_sigterm(
    name: str,
    infrastructure: Infrastructure,
    topic_prefix: str,
    create_database: CreateDatabase,
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "PACKLINE_KAFKA_BOOTSTRAP_SERVERS": infrastructure.kafka_bootstrap,
        "PACKLINE_TOPIC_PREFIX": topic_prefix,
        "PACKLINE_DATABASE_URL": await create_database(name),
        "PACKLINE_HTTP_PORT": str(port),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        f"packline_{name}.main",
        "serve",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:

            async def ready() -> bool:
                if process.returncode is not None:
                    raise AssertionError(f"{name} exited early with {process.returncode}")
                try:
                    return (await client.get("/health/ready")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(ready, within=60, interval=0.2, what=f"{name} to be ready")
        process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(process.communicate(), timeout=40)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, output.decode()[-2000:]
    assert b'"event": "service stopped"' in output
