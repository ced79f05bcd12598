"""Slow clients against the real processes: a connection that does not deliver its request
headers within PACKLINE_HTTP_HEADER_TIMEOUT_SECONDS is closed, while other connections are
answered; and secrets that are weak stop a process at start, or never show in its output."""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from packline_core.settings import split_password

from tests.conftest import CreateDatabase, Infrastructure
from tests.e2e.test_service_process import free_port
from tests.helpers import eventually

pytestmark = pytest.mark.infra

HEADER_TIMEOUT = 3.0
# What a loaded machine may add to the deadline before the server's timer runs.
SLACK = 2.0
MAX_HEADER_BYTES = 8192
STARTED_REQUEST = b"GET /health/live HTTP/1.1\r\nHost: packline.test\r\nX-Slow: "


@dataclass
class Server:
    kind: str
    port: int
    process: asyncio.subprocess.Process
    written: bytearray
    reading: asyncio.Task[None]

    @property
    def path(self) -> str:
        """A cheap GET every kind answers with 200."""
        return "/jwks.json" if self.kind == "issuer" else "/health/live"

    async def output(self) -> str:
        """Everything the process wrote (all of it once the process has exited)."""
        if self.process.returncode is not None:
            await self.reading
        return self.written.decode(errors="replace")


async def collect(stream: asyncio.StreamReader, into: bytearray) -> None:
    """Reads a child's output as it comes, so that a full pipe never blocks it."""
    while chunk := await stream.read(65536):
        into.extend(chunk)


@pytest.fixture(params=["calendar", "console", "issuer"])
async def server(
    request: pytest.FixtureRequest,
    infrastructure: Infrastructure,
    topic_prefix: str,
    create_database: CreateDatabase,
    tmp_path: Path,
) -> AsyncIterator[Server]:
    """One of the processes Packline serves HTTP from, started as operations start it."""
    kind: str = request.param
    async with running(
        kind, infrastructure, topic_prefix, create_database, tmp_path, {}
    ) as started:
        yield started


class running:
    """Start ``kind`` as a child process with ``extra`` environment; SIGTERM it afterwards."""

    def __init__(
        self,
        kind: str,
        infrastructure: Infrastructure,
        topic_prefix: str,
        create_database: CreateDatabase,
        tmp_path: Path,
        extra: dict[str, str],
    ) -> None:
        self.kind = kind
        self.infrastructure = infrastructure
        self.topic_prefix = topic_prefix
        self.create_database = create_database
        self.tmp_path = tmp_path
        self.extra = extra
        self.server: Server | None = None

    async def __aenter__(self) -> Server:
        port = free_port()
        env = {
            **os.environ,
            "PACKLINE_KAFKA_BOOTSTRAP_SERVERS": self.infrastructure.kafka_bootstrap,
            "PACKLINE_TOPIC_PREFIX": self.topic_prefix,
            "PACKLINE_HTTP_PORT": str(port),
            "PACKLINE_HTTP_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
            "PACKLINE_HTTP_MAX_HEADER_BYTES": str(MAX_HEADER_BYTES),
            "PYTHONUNBUFFERED": "1",
            **self.extra,
        }
        if self.kind == "calendar":
            env["PACKLINE_DATABASE_URL"] = await self.create_database("calendar")
            command = ["-m", "packline_calendar.main", "serve"]
        elif self.kind == "console":
            command = ["-m", "packline_console.main"]
        else:
            keys = str(self.tmp_path / "issuer-keys.json")
            command = ["-m", "packline_core.issuer", "--key-file", keys, "serve"]
            command += ["--port", str(port)]
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *command,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        assert process.stdout is not None
        written = bytearray()
        server = Server(
            self.kind, port, process, written, asyncio.create_task(collect(process.stdout, written))
        )
        self.server = server
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:

                async def answers() -> bool:
                    if process.returncode is not None:
                        output = await server.output()
                        raise AssertionError(f"{self.kind} exited: {output[-2000:]}")
                    try:
                        return (await client.get(server.path)).status_code == 200
                    except httpx.TransportError:
                        return False

                await eventually(answers, within=60, interval=0.2, what=f"{self.kind} to answer")
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self.server

    async def __aexit__(self, *_: object) -> None:
        assert self.server is not None
        process = self.server.process
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), timeout=40)
            except TimeoutError:
                process.kill()
                await process.wait()
        await self.server.reading


@dataclass
class Closed:
    after: float  # seconds from opening the connection (or from the last byte of a response)
    received: bytes


async def slow_client(
    port: int,
    first: bytes,
    *,
    dribble: bool = True,
    opened: asyncio.Event | None = None,
    reset_clock_at: bytes | None = None,
) -> Closed:
    """A slowloris: sends ``first`` at once, then one more header byte every second (never the
    blank line that ends the headers) until the server closes the connection. The clock starts
    when the connection opens, or when ``reset_clock_at`` (the end of a response) has arrived.
    Gives up (and fails) when the server keeps the connection far past the deadline."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    received = bytearray()

    async def send_slowly() -> None:
        writer.write(first)
        await writer.drain()
        if opened is not None:
            opened.set()
        while dribble:
            await asyncio.sleep(1)  # the client's pace: this is the behaviour under test
            writer.write(b"a")
            await writer.drain()

    sender = asyncio.create_task(send_slowly())
    try:

        async def until_closed() -> None:
            nonlocal started
            while True:
                try:
                    chunk = await reader.read(4096)
                except ConnectionResetError:
                    return
                if not chunk:
                    return
                received.extend(chunk)
                if reset_clock_at is not None and received.endswith(reset_clock_at):
                    started = time.monotonic()

        try:
            await asyncio.wait_for(until_closed(), timeout=HEADER_TIMEOUT + 10 * SLACK)
        except TimeoutError:
            raise AssertionError(
                f"the server kept a connection without complete headers open for "
                f"{time.monotonic() - started:.1f} s (header timeout {HEADER_TIMEOUT} s)"
            ) from None
        return Closed(time.monotonic() - started, bytes(received))
    finally:
        sender.cancel()
        try:
            await sender
        except (asyncio.CancelledError, ConnectionError):
            pass
        writer.close()


def closed_by_the_header_deadline(closed: Closed) -> None:
    assert closed.after >= HEADER_TIMEOUT - 0.25, f"closed too early, after {closed.after:.2f} s"
    assert closed.after <= HEADER_TIMEOUT + SLACK, f"closed late, after {closed.after:.2f} s"


async def test_a_slowloris_is_closed_at_the_deadline_while_others_are_answered(
    server: Server,
) -> None:
    opened = asyncio.Event()
    slow = asyncio.create_task(slow_client(server.port, STARTED_REQUEST, opened=opened))
    await asyncio.wait_for(opened.wait(), timeout=10)
    # Meanwhile, on another connection: answered at once.
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
        answered = await client.get(server.path)
    assert not slow.done(), "the slow connection was closed before the deadline"
    assert answered.status_code == 200, answered.text
    closed = await slow
    closed_by_the_header_deadline(closed)
    assert closed.received.startswith(b"HTTP/1.1 408 "), closed.received[:200]


@pytest.mark.parametrize("server", ["issuer"], indirect=True)
async def test_an_idle_connection_is_closed_without_an_answer(server: Server) -> None:
    closed = await slow_client(server.port, b"", dribble=False)
    closed_by_the_header_deadline(closed)
    assert closed.received == b""


@pytest.mark.parametrize("server", ["issuer"], indirect=True)
async def test_a_kept_alive_connection_has_the_deadline_again_for_its_next_request(
    server: Server,
) -> None:
    # A whole request, answered; then the next request's headers come one byte a second.
    first = b"GET /jwks.json HTTP/1.1\r\nHost: packline.test\r\n\r\n"
    closed = await slow_client(
        server.port, first + STARTED_REQUEST, reset_clock_at=b"}]}"
    )  # the JWKS ends the first response
    assert closed.received.startswith(b"HTTP/1.1 200 "), closed.received[:200]
    assert b"HTTP/1.1 408 " in closed.received
    closed_by_the_header_deadline(closed)
    # Prompt requests on one connection are unaffected (keep-alive, twice).
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
        for _ in range(2):
            assert (await client.get("/jwks.json")).status_code == 200


@pytest.mark.parametrize("server", ["issuer"], indirect=True)
async def test_unfinished_headers_beyond_the_bound_are_refused_at_once(server: Server) -> None:
    """The server keeps at most PACKLINE_HTTP_MAX_HEADER_BYTES of headers waiting for their
    end: a client cannot make it hold more until the deadline."""
    big = STARTED_REQUEST + b"a" * (MAX_HEADER_BYTES + 1024)  # and never the blank line
    closed = await slow_client(server.port, big)
    assert closed.received.startswith(b"HTTP/1.1 400 "), closed.received[:200]
    assert closed.after < HEADER_TIMEOUT, "refused at once, not at the deadline"


# --- secrets at start --------------------------------------------------------------------------


@pytest.mark.parametrize("token", ["changeme", "packline-dev-token", "short-but-random-9f2c"])
async def test_a_service_refuses_to_start_with_a_weak_staff_token(token: str) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "packline_calendar.main",
        "serve",
        env={**os.environ, "PACKLINE_STAFF_TOKENS": token, "PACKLINE_HTTP_PORT": "0"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    text = output.decode()
    assert process.returncode not in (0, None), text
    assert "PACKLINE_STAFF_TOKENS" in text and "token 1 of 1" in text, text
    assert token not in text


async def test_the_database_password_never_shows_in_a_services_output(
    infrastructure: Infrastructure,
    topic_prefix: str,
    create_database: CreateDatabase,
    tmp_path: Path,
) -> None:
    """The usual form, a URL with the password in it; the service logs at DEBUG."""
    _, password = split_password(infrastructure.admin_database_url)
    assert password, "the test database URL has no password to look for"
    token = secrets.token_hex(32)
    extra = {"PACKLINE_LOG_LEVEL": "DEBUG", "PACKLINE_STAFF_TOKENS": token}
    async with running(
        "calendar", infrastructure, topic_prefix, create_database, tmp_path, extra
    ) as server:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            ready = await client.get("/health/ready", headers={"Authorization": f"Bearer {token}"})
            assert ready.status_code == 200, ready.text
    output = await server.output()
    assert "service stopped" in output  # the whole run is in it
    assert f":{password}@" not in output
    assert token not in output
