"""The benchmark is a command, not a test: this only keeps it working, with its seconds-long
smoke version, and checks that it reports every figure it promises."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Infrastructure

pytestmark = [pytest.mark.infra, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]


def test_the_quick_benchmark_runs_and_reports_every_figure(
    infrastructure: Infrastructure, tmp_path: Path
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        env={
            **os.environ,
            "PACKLINE_KAFKA_BOOTSTRAP_SERVERS": infrastructure.kafka_bootstrap,
            "PACKLINE_BENCH_DATABASE_URL": infrastructure.admin_database_url,
        },
        capture_output=True,
        text=True,
        timeout=840,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run,) = tmp_path.iterdir()
    results = json.loads((run / "results.json").read_text())
    assert results["baseline_kafka"]["per_second"] > 0
    assert results["baseline_postgres"]["commits_per_second"] > 0
    (fixed,) = results["fixed_rates"]
    assert fixed["to_link_ms"]["n"] == fixed["bookings"]  # every booking was linked
    # and noted in the calendar (the benchmark waits up to 60 s for the notes after the links)
    assert fixed["to_note_ms"]["n"] == fixed["bookings"], (
        f"{fixed['bookings'] - fixed['to_note_ms']['n']} of {fixed['bookings']} linked bookings"
        " had no package note in the calendar 60 s after the last link"
    )
    assert results["max_one_matcher"]["linked_per_second"] > 0
    assert results["max_two_matchers"]["linked_per_second"] > 0
    assert results["scaling"] and results["backlog"]["drain_per_second"] > 0
    table = (run / "results.md").read_text()
    assert "raw aiokafka consume -> produce" in table and "backlog" in table
    assert (run / "latency.png").stat().st_size > 1000
