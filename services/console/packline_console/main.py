"""Entry point: ``packline-console`` (settings from PACKLINE_* variables)."""

from __future__ import annotations

import uvicorn
from packline_core.settings import load_settings

from packline_console.app import create_app
from packline_console.settings import ConsoleSettings


def main() -> None:
    settings = load_settings(ConsoleSettings)
    uvicorn.run(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_level=settings.log_level.lower(),
        access_log=False,
    )


if __name__ == "__main__":
    main()
