"""The three services' settings classes and composition roots, by name."""

from __future__ import annotations

from collections.abc import Callable

from packline_calendar.factory import create_service as create_calendar
from packline_calendar.settings import CalendarSettings
from packline_core.service import Service
from packline_core.settings import ServiceSettings
from packline_invoicing.factory import create_service as create_invoicing
from packline_invoicing.settings import InvoicingSettings
from packline_matcher.factory import create_service as create_matcher
from packline_matcher.settings import MatcherSettings

SERVICES: dict[str, tuple[type[ServiceSettings], Callable[..., Service]]] = {
    "calendar": (CalendarSettings, create_calendar),
    "invoicing": (InvoicingSettings, create_invoicing),
    "matcher": (MatcherSettings, create_matcher),
}
