from __future__ import annotations

import pytest
from packline_core import migrations


@pytest.mark.parametrize(
    "package", ["packline_core", "packline_calendar", "packline_invoicing", "packline_matcher"]
)
def test_shipped_migrations_are_numbered_without_gaps(package: str) -> None:
    found = migrations.load(package, package)
    assert [m.version for m in found] == list(range(1, len(found) + 1))
