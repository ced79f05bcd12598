"""The staff console's server as a process of its own (``python -m packline_console.main``), as
deployed: its log goes with the services' logs into a failed test's report."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import httpx

from tests.conftest import Infrastructure
from tests.e2e.packline_processes import free_port, service_log
from tests.helpers import eventually


@asynccontextmanager
async def console_process(
    infrastructure: Infrastructure,
    topic_prefix: str,
    urls: Mapping[str, str],
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[str]:
    """The console on a free port, passing requests on to the services at ``urls`` (calendar,
    invoicing, matcher); yields its base URL once it answers."""
    port = free_port()
    with service_log("console") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "packline_console.main",
            env={
                **os.environ,
                "PACKLINE_KAFKA_BOOTSTRAP_SERVERS": infrastructure.kafka_bootstrap,
                "PACKLINE_TOPIC_PREFIX": topic_prefix,
                "PACKLINE_HTTP_PORT": str(port),
                "PACKLINE_CALENDAR_URL": urls["calendar"],
                "PACKLINE_INVOICING_URL": urls["invoicing"],
                "PACKLINE_MATCHER_URL": urls["matcher"],
                "PACKLINE_LOG_LEVEL": "WARNING",
                "PYTHONUNBUFFERED": "1",
                **(env or {}),
            },
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"

    async def ready() -> bool:
        if process.returncode is not None:
            raise AssertionError(f"the console exited with status {process.returncode}")
        try:
            async with httpx.AsyncClient() as client:
                return (await client.get(f"{url}/health/live")).status_code == 200
        except httpx.TransportError:
            return False

    try:
        await eventually(ready, within=60, interval=0.2, what="the console to start")
        yield url
    finally:
        if process.returncode is None:
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), timeout=30)
        except TimeoutError:
            process.kill()
