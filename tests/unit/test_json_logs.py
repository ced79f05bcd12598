"""JSON log lines keep an exception's traceback: the on-call engineer needs the stack."""

from __future__ import annotations

import io
import json
import logging

import structlog
from packline_core.logging import configure_logging


def test_an_exception_logged_in_json_carries_its_traceback() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("calendar", "replica-1", "INFO", "json")
        stream = io.StringIO()
        root.handlers[0].stream = stream  # type: ignore[attr-defined]
        try:
            raise KeyError("missing")
        except KeyError:
            structlog.get_logger("test").exception("a batch failed", consumer="calendar.commands")
        line = json.loads(stream.getvalue().splitlines()[-1])
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        structlog.reset_defaults()
    assert line["event"] == "a batch failed"
    assert line["consumer"] == "calendar.commands"
    assert line["exception"].startswith("Traceback (most recent call last):")
    assert "KeyError: 'missing'" in line["exception"]
