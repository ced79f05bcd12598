"""Entry point: ``packline-console`` (settings from PACKLINE_* variables)."""

from __future__ import annotations

import argparse

from packline_core.http_server import serve
from packline_core.settings import load_settings

from packline_console.app import create_app
from packline_console.settings import ConsoleSettings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="packline-console",
        description="Serve the staff console: the help article's screens as a web page, over "
        "the three services' HTTP APIs. Settings come from the environment: PACKLINE_HTTP_PORT "
        "(8080), PACKLINE_CALENDAR_URL, PACKLINE_INVOICING_URL, PACKLINE_MATCHER_URL, "
        "PACKLINE_KAFKA_BOOTSTRAP_SERVERS, PACKLINE_TOPIC_PREFIX, "
        "PACKLINE_HTTP_HEADER_TIMEOUT_SECONDS (10).",
    )
    # 'serve' as every service's command line says it (the image's default command).
    parser.add_argument("command", nargs="?", default="serve", choices=["serve"])
    parser.parse_args(argv)
    settings = load_settings(ConsoleSettings)
    serve(
        create_app(settings),
        settings,
        host=settings.http_host,
        port=settings.http_port,
        log_level=settings.log_level.lower(),
        access_log=False,
    )


if __name__ == "__main__":
    main()
