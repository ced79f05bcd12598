"""The command line every service shares: ``packline-<service> [serve|migrate]``."""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Callable

from packline_core.http_server import serve
from packline_core.logging import configure_logging
from packline_core.service import Service


def run(build: Callable[[], Service], argv: list[str] | None = None) -> None:
    """Build the service with settings from the environment and run the chosen command."""
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "command",
        nargs="?",
        default="serve",
        choices=["serve", "migrate"],
        help="serve: run the service until SIGTERM / SIGINT (default); "
        "migrate: apply database migrations and exit",
    )
    args = parser.parse_args(argv)
    service = build()
    settings = service.settings
    configure_logging(service.name, settings.instance_id, settings.log_level, settings.log_format)
    if args.command == "migrate":
        applied = asyncio.run(service.migrate())
        print(f"{service.name}: {len(applied)} migration(s) applied")
        return
    # uvicorn turns SIGTERM / SIGINT into a graceful shutdown: it stops accepting requests, then
    # runs the app's lifespan exit, which stops the broker (finishing the message in hand) and
    # closes the database pool. Afterwards it re-raises the signal to the handler installed
    # before it; a no-op one here makes a completed graceful shutdown exit with status 0.
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, lambda _signum, _frame: None)
    serve(
        service.http,
        settings,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        lifespan="on",
    )
