"""The benchmark is a command, not a test: this only keeps it working, with its seconds-long
smoke version, and checks that it reports every figure it promises."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

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

    def number(value: object) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool)

    kafka, pg = results["baseline_kafka"], results["baseline_postgres"]
    assert kafka["record_operations_per_second"] > 0
    assert kafka["machine_ms_per_record_operation"] > 0
    assert pg["single"]["commits_per_second"] > 0
    assert pg["batched_500"]["rows_per_second"] > 0
    assert pg["pipelined"]["statements_per_second"] > 0
    assert pg["pipelined"]["connections"] > 1

    def complete(step: dict[str, Any], kind: str) -> None:
        """Every message of the step reached its last event (and every booking its note),
        nothing was refused, and the step holds its figures."""
        shown = {k: v for k, v in step.items() if k != "series"}
        assert step["kind"] == kind and not step["failed"] and step["missing"] == 0, shown
        last = step["to_done_ms"]
        assert last["n"] == step["count"]
        assert number(last["p99"]) and number(step["achieved_per_second"])
        assert number(step["machine_ms"]) and step["machine_ms"] > 0
        parts = {"calendar", "invoicing", "matcher", "load generator", "machine"}
        assert parts <= set(step["ms_by_process"])
        assert step["record_operations_per_message"] > 0
        if kind == "book":
            note = step["to_note_ms"]
            assert note["n"] == step["count"], (
                f"{step['count']} bookings, {note['n']} package notes committed in the calendar"
            )
            assert number(note["p99"]) and number(step["to_note_row_time_ms"]["p99"])

    complete(results["idle"], "book")
    assert results["warmup"]["bookings"] > 0
    sweep = results["sweep"]
    assert sweep["steps"]
    for step in sweep["steps"]:
        complete(step, "book")
        assert step["asked_per_second"] > 0
    assert "knee_per_second" in sweep and "sustained_per_second" in sweep
    kinds = {"book", "reschedule", "cancel", "purchase", "payment", "void"}
    assert [s["lines_per_patient"] for s in results["per_patient"]] == [5, 100]
    assert results["total_lines"] and results["total_lines"][0]["lines"] >= 2_000
    for step in results["per_patient"] + results["total_lines"]:
        assert set(step["kinds"]) == kinds
        for kind, figures in step["kinds"].items():
            complete(figures, kind)
    backlog = results["backlog"]
    assert backlog["drain_per_second"] > 0 and backlog["drain_per_second_once_assigned"] > 0
    assert backlog["new_bookings_to_note_ms"]["n"] == backlog["new_bookings"] > 0
    table = (run / "results.md").read_text()
    for section in (
        "## Baselines",
        "raw aiokafka consume -> produce",
        "raw asyncpg pipelined",
        "## Issue #20's targets",
        "## Idle",
        "## Rate sweep",
        "Where the CPU went",
        "lines per patient grow",
        "total lines grow",
        "## Backlog",
    ):
        assert section in table, section
    assert (run / "latency.png").stat().st_size > 1000
