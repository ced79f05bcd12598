"""Entry point: ``packline-matcher [serve|migrate]`` (settings from PACKLINE_* variables)."""

from __future__ import annotations

from packline_core.main import run

from packline_matcher.factory import create_service


def main() -> None:
    run(create_service)


if __name__ == "__main__":
    main()
