"""Which booking requests are overdue: a pure rule of (request times, now, timeout) (I10)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from packline_invoicing import rules
from packline_invoicing.settings import InvoicingSettings
from pydantic import ValidationError

NOW = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)
TWO_MINUTES = timedelta(seconds=120)


def test_a_request_is_overdue_once_it_has_waited_the_whole_timeout() -> None:
    old, exact, fresh = uuid4(), uuid4(), uuid4()
    requests = [
        (old, NOW - timedelta(minutes=5)),
        (exact, NOW - TWO_MINUTES),
        (fresh, NOW - TWO_MINUTES + timedelta(milliseconds=1)),
    ]
    assert rules.overdue_requests(requests, NOW, TWO_MINUTES) == [old, exact]
    # The same inputs decide the same way, whenever they are replayed.
    assert rules.overdue_requests(requests, NOW + timedelta(hours=1), TWO_MINUTES) == [
        old,
        exact,
        fresh,
    ]
    assert rules.overdue_before(NOW, TWO_MINUTES) == NOW - TWO_MINUTES


def test_the_reason_on_the_line_names_the_timeout() -> None:
    assert rules.unanswered_note(TWO_MINUTES) == "the calendar did not answer within 120 s"
    assert rules.unanswered_note(timedelta(seconds=1.5)) == (
        "the calendar did not answer within 1.5 s"
    )


def test_the_timeout_setting_is_read_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    assert InvoicingSettings().booking_request_timeout_seconds == 120
    monkeypatch.setenv("PACKLINE_BOOKING_REQUEST_TIMEOUT_SECONDS", "30")
    assert InvoicingSettings().booking_request_timeout_seconds == 30
    monkeypatch.setenv("PACKLINE_BOOKING_REQUEST_TIMEOUT_SECONDS", "0")
    with pytest.raises(ValidationError, match="booking_request_timeout_seconds"):
        InvoicingSettings()
