"""Composition root of the invoicing service: builds it from settings and registers what it does.

Tests call :func:`create_service` with their own settings; several services can run in one process.
"""

from __future__ import annotations

from packline_core.health import register_health
from packline_core.probes import register_probes
from packline_core.service import Service
from packline_core.settings import load_settings

from packline_invoicing.attendance import register_attendance
from packline_invoicing.booking import (
    register_booking,
    register_booking_request_sweep,
    register_booking_results,
)
from packline_invoicing.commands import register_commands
from packline_invoicing.directory import register_directory
from packline_invoicing.expiry import (
    register_expiry_commands,
    register_expiry_http,
    register_expiry_sweep,
)
from packline_invoicing.household import register_household_commands, register_household_http
from packline_invoicing.http import register_http
from packline_invoicing.known import register_known_appointments
from packline_invoicing.settings import InvoicingSettings
from packline_invoicing.transfer import register_transfer_commands, register_transfer_http

NAME = "invoicing"


def create_service(settings: InvoicingSettings | None = None) -> Service:
    settings = settings or load_settings(InvoicingSettings)
    service = Service(NAME, settings, "packline_invoicing")
    register_health(service)
    register_probes(service)
    commands = service.consumer("commands")
    register_commands(commands)
    register_expiry_commands(commands)
    register_transfer_commands(commands)
    register_household_commands(commands)
    # One consumer (one group) for the calendar's events: bookings' answers and attendance.
    booking_results = service.consumer("booking-results")
    register_booking_results(booking_results)
    register_attendance(booking_results)
    # Last: it remembers every appointment before the handlers above see it (links check it).
    register_known_appointments(booking_results)
    register_directory(service.consumer("directory"))
    register_http(service)
    register_booking(service, settings.calendar_url, settings.calendar_token)
    register_booking_request_sweep(service, settings.booking_request_timeout_seconds)
    register_expiry_http(service)
    register_transfer_http(service)
    register_household_http(service)
    register_expiry_sweep(service, settings.expiry_sweep_interval_seconds)
    return service
