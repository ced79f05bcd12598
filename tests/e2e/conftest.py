"""When a test that ran services as processes fails, its report ends with the last lines of each
service's log, so the output of a failed CI run says what the services were doing."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from tests.e2e.packline_processes import forget_logs, log_tails


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Generator[Any]:
    outcome: Any = yield
    report: pytest.TestReport = outcome.get_result()
    if report.failed:
        item.stash[_FAILED] = True
        for title, tail in log_tails():
            report.sections.append((title, tail))
    if report.when == "teardown":
        forget_logs(keep=item.stash.get(_FAILED, False))


_FAILED = pytest.StashKey[bool]()
