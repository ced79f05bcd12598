"""Composition root of the matcher service: builds it from settings and registers what it does.

Tests call :func:`create_service` with their own settings; several services can run in one process.
"""

from __future__ import annotations

from packline_core.health import register_health
from packline_core.probes import register_probes
from packline_core.service import Service
from packline_core.settings import load_settings

from packline_matcher.http import register_http
from packline_matcher.matching import register_directory, register_matching
from packline_matcher.settings import MatcherSettings

NAME = "matcher"


def create_service(settings: MatcherSettings | None = None) -> Service:
    service = Service(NAME, settings or load_settings(MatcherSettings), "packline_matcher")
    register_health(service)
    register_probes(service)
    register_matching(service.consumer("events"))
    register_directory(service.consumer("directory"))
    register_http(service)
    return service
