"""Composition root of the calendar service: builds it from settings and registers what it does.

Tests call :func:`create_service` with their own settings; several services can run in one process.
"""

from __future__ import annotations

from packline_core.health import register_health
from packline_core.probes import register_probes
from packline_core.service import Service
from packline_core.settings import load_settings

from packline_calendar.catalogue import register_fees
from packline_calendar.commands import register_commands
from packline_calendar.http import register_http
from packline_calendar.notes import register_package_notes
from packline_calendar.patients import (
    register_patient_commands,
    register_patient_directory,
    register_patient_search,
)
from packline_calendar.settings import CalendarSettings

NAME = "calendar"


def create_service(settings: CalendarSettings | None = None) -> Service:
    service = Service(NAME, settings or load_settings(CalendarSettings), "packline_calendar")
    register_health(service)
    register_probes(service)
    commands = service.consumer("commands")
    register_commands(commands)
    register_patient_commands(commands)
    register_package_notes(service.consumer("package-notes"))
    register_fees(service.consumer("fees"))
    register_patient_directory(service.consumer("patients"))
    register_http(service)
    register_patient_search(service)
    return service
