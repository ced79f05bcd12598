"""Entry point: ``packline-invoicing [serve|migrate]`` (settings from PACKLINE_* variables)."""

from __future__ import annotations

from packline_core.main import run

from packline_invoicing.factory import create_service


def main() -> None:
    run(create_service)


if __name__ == "__main__":
    main()
