"""The three services as separate processes (their console scripts), on a test's own topics and
databases, driven only through their public surfaces: Kafka topics of the contracts' registry
and HTTP.

Each process writes its log to a file of its own; when a test fails, the last lines of every log
of that test are added to its report (tests/e2e/conftest.py), so the output of a failed CI run
says what the services were doing."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
from packline_contracts.topics import SERVICES
from packline_core.reconcile import Reconciliation, reconcile

from tests.conftest import CreateDatabase, Infrastructure
from tests.helpers import eventually

TAIL_LINES = 40

# The logs of the processes the running test started, oldest first; emptied after each test.
SERVICE_LOGS: list[Path] = []
_LOG_DIRECTORIES: list[Path] = []


def service_log(name: str) -> IO[bytes]:
    """A new log file for process ``name`` of the running test (its stdout and stderr)."""
    if not _LOG_DIRECTORIES:
        _LOG_DIRECTORIES.append(Path(tempfile.mkdtemp(prefix="packline-test-logs-")))
    path = _LOG_DIRECTORIES[0] / f"{len(SERVICE_LOGS) + 1:02d}-{name}.log"
    SERVICE_LOGS.append(path)
    return path.open("wb")


def log_tails(lines: int = TAIL_LINES) -> list[tuple[str, str]]:
    """(title, last ``lines`` lines) of every log of the running test."""
    tails = []
    for path in SERVICE_LOGS:
        try:
            text = path.read_text(errors="replace").splitlines()
        except OSError as error:
            tails.append((f"{path.stem} log", f"(unreadable: {error})"))
            continue
        title = f"{path.stem} log, last {min(lines, len(text))} of {len(text)} lines ({path})"
        tails.append((title, "\n".join(text[-lines:]) or "(empty)"))
    return tails


def forget_logs(keep: bool) -> None:
    """After a test: delete its logs unless ``keep`` (it failed: they stay for the CI artifacts)."""
    if not keep:
        for directory in _LOG_DIRECTORIES:
            shutil.rmtree(directory, ignore_errors=True)
    SERVICE_LOGS.clear()
    _LOG_DIRECTORIES.clear()


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


async def until_ready(
    name: str, process: asyncio.subprocess.Process, client: httpx.AsyncClient, base: str = ""
) -> None:
    """Wait until ``process`` answers ready; fail at once if it exits (its log says why)."""
    last: list[str] = []

    async def ready() -> bool:
        if process.returncode is not None:
            raise AssertionError(f"{name} exited with status {process.returncode} before ready")
        try:
            answer = await client.get(f"{base}/health/ready")
        except httpx.TransportError as error:
            last[:] = [repr(error)]
            return False
        last[:] = [f"HTTP {answer.status_code}: {answer.text[:500]}"]
        return answer.status_code == 200

    await eventually(
        ready,
        within=60,
        interval=0.2,
        what=f"{name} to be ready",
        describe=lambda: last[0] if last else "no answer yet",
    )


@asynccontextmanager
async def packline_processes(
    infrastructure: Infrastructure,
    topic_prefix: str,
    create_database: CreateDatabase,
    *,
    staff_token: str | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> AsyncIterator[Processes]:
    """``staff_token``: the services accept only this token (otherwise their API is open);
    ``extra_env``: more settings for every service (e.g. an OpenID Connect issuer to trust)."""
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
                # INFO: start, stop, relay and every warning; a handful of lines per service.
                "PACKLINE_LOG_LEVEL": "INFO",
                "PYTHONUNBUFFERED": "1",  # every line in the log file as it is written
                **tokens,
                **(extra_env or {}),
            }
            with service_log(name) as log:
                processes.append(
                    await asyncio.create_subprocess_exec(
                        sys.executable,
                        "-m",
                        f"packline_{name}.main",
                        "serve",
                        env=env,
                        stdout=log,
                        stderr=asyncio.subprocess.STDOUT,
                    )
                )
        running = Processes(
            urls,
            {
                n: httpx.AsyncClient(base_url=u, timeout=10, headers=headers)
                for n, u in urls.items()
            },
        )
        for process, (name, client) in zip(processes, running.http.items(), strict=True):
            await until_ready(name, process, client)
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
