"""The three services as separate processes (their console scripts), on a test's own topics and
databases, driven only through their public surfaces: Kafka topics of the contracts' registry
and HTTP."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
from packline_contracts.topics import SERVICES
from packline_core.reconcile import Reconciliation, reconcile

from tests.conftest import CreateDatabase, Infrastructure
from tests.helpers import eventually


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Processes:
    urls: dict[str, str]
    http: dict[str, httpx.AsyncClient] = field(default_factory=dict)

    async def reconcile(self) -> Reconciliation:
        """Wait until the services agree on every link (I3); fail with the disagreements."""
        last: list[Reconciliation] = []

        async def agreed() -> bool:
            last[:] = [await reconcile(self.http)]
            return last[0].agreed

        try:
            await eventually(agreed, within=30, interval=0.3, what="the three services to agree")
        except AssertionError as error:
            raise AssertionError(f"{error}: {last[0].disagreements + last[0].pending}") from None
        return last[0]


@asynccontextmanager
async def packline_processes(
    infrastructure: Infrastructure,
    topic_prefix: str,
    create_database: CreateDatabase,
    *,
    staff_token: str | None = None,
) -> AsyncIterator[Processes]:
    """``staff_token``: the services accept only this token (otherwise their API is open)."""
    ports = {name: free_port() for name in SERVICES}
    tokens = (
        {"PACKLINE_STAFF_TOKENS": staff_token, "PACKLINE_CALENDAR_TOKEN": staff_token}
        if staff_token
        else {}
    )
    headers = {"Authorization": f"Bearer {staff_token}"} if staff_token else {}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    processes: list[asyncio.subprocess.Process] = []
    try:
        for name in SERVICES:
            env = {
                **os.environ,
                "PACKLINE_KAFKA_BOOTSTRAP_SERVERS": infrastructure.kafka_bootstrap,
                "PACKLINE_TOPIC_PREFIX": topic_prefix,
                "PACKLINE_DATABASE_URL": await create_database(name),
                "PACKLINE_HTTP_PORT": str(ports[name]),
                "PACKLINE_CALENDAR_URL": urls["calendar"],
                "PACKLINE_OUTBOX_POLL_SECONDS": "0.2",
                "PACKLINE_LOG_LEVEL": "WARNING",
                **tokens,
            }
            processes.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    f"packline_{name}.main",
                    "serve",
                    env=env,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )
            )
        running = Processes(
            urls,
            {
                n: httpx.AsyncClient(base_url=u, timeout=10, headers=headers)
                for n, u in urls.items()
            },
        )
        for name, client in running.http.items():

            async def ready(client: httpx.AsyncClient = client) -> bool:
                try:
                    return (await client.get("/health/ready")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(ready, within=60, interval=0.2, what=f"{name} to be ready")
        yield running
        for client in running.http.values():
            await client.aclose()
    finally:
        for process in processes:
            if process.returncode is None:
                process.terminate()
        for process in processes:
            try:
                await asyncio.wait_for(process.wait(), timeout=30)
            except TimeoutError:
                process.kill()
