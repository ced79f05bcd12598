"""The report: Markdown tables (printed, and results.md), each figure beside its baseline from the
same run and the issue's target (#20) beside the measured value; and latency.png."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from benchmarks.phases import passes

KINDS = ("book", "reschedule", "cancel", "purchase", "payment", "void")
# Issue #20's targets, on a 2-core machine with everything on it.
TARGETS = {
    "sustained_per_second": 2_000,  # linked end to end, p99 to the package note under 1 s
    "machine_ms_per_booking": 1.0,
    "knee_per_second": 1_000,  # p99 to the package note under 250 ms
    "p99_at_200_ms": 150,
    "idle_p50_ms": 60,
    "idle_p99_ms": 120,
    "backlog_per_second": 2_000,
    "flat": 0.15,  # machine CPU per booking and per purchase, from the smallest step
}


def ms(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if math.isinf(value):
        return "∞"
    return f"{value:,.0f}" if value >= 10 else f"{value:.1f}"


def rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def lat(p: dict[str, float], keys: tuple[str, ...] = ("p50", "p95", "p99", "max")) -> str:
    return " / ".join(ms(p[k]) for k in keys) + f" (n={p['n']})"


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("met" if ok else "**not met**")


def report(results: dict[str, Any]) -> str:
    kafka = results["baseline_kafka"]
    pg = results["baseline_postgres"]
    sweep = results["sweep"]
    idle = results["idle"]
    out = [
        f"# Packline benchmark ({'quick' if results['quick'] else 'full'}, {results['started']})",
        "",
        f"{results['cores']} cores; CPU is the whole machine's (/proc/stat: every process), in ms"
        " of CPU per message; latency runs from each message's scheduled send time.",
        "",
        "## Baselines (same run, same broker and database server)",
        "",
        "| baseline | rate | machine CPU per operation |",
        "|---|---|---|",
        f"| raw aiokafka consume -> produce ({kafka['messages']:,} messages) |"
        f" {rate(kafka['record_operations_per_second'])} record operations/s"
        f" ({rate(kafka['per_second'])} messages/s) |"
        f" {kafka['machine_ms_per_record_operation']:.3f} ms per record operation |",
        f"| raw asyncpg, one insert per commit, one connection |"
        f" {rate(pg['single']['commits_per_second'])} commits/s |"
        f" {pg['single']['machine_ms_per_commit']:.3f} ms per commit |",
        f"| raw asyncpg, 500 rows per commit |"
        f" {rate(pg['batched_500']['rows_per_second'])} rows/s |"
        f" {pg['batched_500']['machine_ms_per_row']:.4f} ms per row |",
        f"| raw asyncpg pipelined: {pg['pipelined']['connections']} connections, "
        f"{pg['pipelined']['statements_in_flight_per_connection']} statements in flight each |"
        f" {rate(pg['pipelined']['statements_per_second'])} statements/s"
        f" ({rate(pg['pipelined']['commits_per_second'])} commits/s) |"
        f" {pg['pipelined']['machine_ms_per_statement']:.4f} ms per statement |",
        "",
    ]
    out += targets_table(results)
    out += [
        "",
        "## Idle: one booking a second (after the warm-up)",
        "",
        "| | p50 / p95 / p99 / max ms (n) | target |",
        "|---|---|---|",
        f"| to the package note (committed) | {lat(idle['to_note_ms'])} |"
        f" p50 ≤ {TARGETS['idle_p50_ms']}, p99 ≤ {TARGETS['idle_p99_ms']} |",
        f"| to LineLinked | {lat(idle['to_link_ms'])} | |",
        f"| note row time (its transaction's start: lower bound) |"
        f" {lat(idle['to_note_row_time_ms'])} | |",
        f"| machine CPU per booking (the services' own: {ms(services_ms(idle))} ms) |"
        f" {ms(idle['machine_ms'])} ms | |",
    ]
    out += sweep_tables(sweep, kafka, pg)
    out += kinds_table(
        "Cost of every message kind as lines per patient grow",
        "lines per patient",
        [(f"{s['lines_per_patient']:,}", s["kinds"]) for s in results["per_patient"]],
        kafka,
    )
    out += kinds_table(
        "Cost of every message kind as the total lines grow (patients holding 20 lines)",
        "lines in the databases",
        [
            (
                f"{s['lines']:,}"
                + ("" if s["reached"] else f" (fill stopped short of {s['target_lines']:,})"),
                s["kinds"],
            )
            for s in results["total_lines"]
        ],
        kafka,
    )
    b = results["backlog"]
    out += [
        "",
        "## Backlog (matcher stopped while bookings queued)",
        "",
        "| | value | target |",
        "|---|---|---|",
        f"| bookings queued | {b['queued']:,} | 100,000 |",
        f"| drain after restart (ready to last link) | {b['drain_seconds']:.1f} s"
        f" ({rate(b['drain_per_second'])}/s) | ≥ {TARGETS['backlog_per_second']:,}/s |",
        f"| of which to the first link (the group's rebalance) |"
        f" {b['first_link_after_restart_seconds']:.1f} s | |",
        f"| drain from the first link to the last | {rate(b['drain_per_second_once_assigned'])}/s"
        " | |",
        f"| machine CPU per booking while draining | {ms(b['machine_ms_per_booking'])} ms | |",
        f"| new bookings during the drain (20/s), to the package note |"
        f" {lat(b['new_bookings_to_note_ms'])} ms | new bookings still link |",
    ]
    for service, top in results.get("profile", {}).items():
        out += ["", f"| {service}: where the CPU goes (py-spy, self time) | share |", "|---|---|"]
        out += [f"| `{frame}` | {share:.0%} |" for frame, share in top]
    out += ["", "What each figure means: docs/benchmark.md."]
    return "\n".join(out) + "\n"


def knee_step(sweep: dict[str, Any]) -> dict[str, Any] | None:
    for step in sweep["steps"]:
        if step["asked_per_second"] == sweep["knee_per_second"]:
            return step
    return None


def flatness(steps: list[dict[str, Any]], kind: str) -> float | None:
    values = [s["kinds"][kind]["machine_ms"] for s in steps]
    if len(values) < 2 or not values[0]:
        return None
    return max(abs(v / values[0] - 1) for v in values[1:])


def targets_table(results: dict[str, Any]) -> list[str]:
    sweep, idle, b = results["sweep"], results["idle"], results["backlog"]
    at_200 = next((s for s in sweep["steps"] if s["asked_per_second"] == 200), None)
    top = next(
        (s for s in sweep["steps"] if s["asked_per_second"] == sweep["sustained_per_second"]),
        None,
    )
    rows = [
        (
            "bookings/s linked end to end, sustained (p99 to the note < 1 s)",
            rate(sweep["sustained_per_second"]),
            f"≥ {TARGETS['sustained_per_second']:,}",
            (sweep["sustained_per_second"] or 0) >= TARGETS["sustained_per_second"],
        ),
        (
            "machine CPU per booking at that rate",
            f"{ms(top['machine_ms'])} ms" if top else "-",
            f"≤ {TARGETS['machine_ms_per_booking']} ms",
            top["machine_ms"] <= TARGETS["machine_ms_per_booking"] if top else None,
        ),
        (
            "knee: highest rate with p99 to the note < 250 ms",
            rate(sweep["knee_per_second"]),
            f"≥ {TARGETS['knee_per_second']:,}/s",
            (sweep["knee_per_second"] or 0) >= TARGETS["knee_per_second"],
        ),
        (
            "p99 to the note at 200/s",
            f"{ms(at_200['to_note_ms']['p99'])} ms" if at_200 else "not run",
            f"≤ {TARGETS['p99_at_200_ms']} ms",
            at_200["to_note_ms"]["p99"] <= TARGETS["p99_at_200_ms"] if at_200 else None,
        ),
        (
            "idle (1/s) to the note, p50 / p99",
            f"{ms(idle['to_note_ms']['p50'])} / {ms(idle['to_note_ms']['p99'])} ms",
            f"≤ {TARGETS['idle_p50_ms']} / {TARGETS['idle_p99_ms']} ms",
            idle["to_note_ms"]["p50"] <= TARGETS["idle_p50_ms"]
            and idle["to_note_ms"]["p99"] <= TARGETS["idle_p99_ms"],
        ),
        (
            f"backlog of {b['queued']:,} drains at",
            f"{rate(b['drain_per_second'])}/s",
            f"≥ {TARGETS['backlog_per_second']:,}/s (100,000 queued)",
            b["drain_per_second"] >= TARGETS["backlog_per_second"],
        ),
    ]
    for name, steps in (
        ("lines per patient", results["per_patient"]),
        ("total lines", results["total_lines"]),
    ):
        for kind in ("book", "purchase"):
            spread = flatness(steps, kind)
            rows.append(
                (
                    f"machine CPU per {kind}, largest change across {name}",
                    "-" if spread is None else f"{spread:+.0%}".replace("+", "±"),
                    "≤ ±15 %",
                    None if spread is None else spread <= TARGETS["flat"],
                )
            )
    lines = [
        "## Issue #20's targets",
        "",
        "| target | measured | target value | |",
        "|---|---|---|---|",
    ]
    lines += [f"| {what} | {value} | {goal} | {verdict(ok)} |" for what, value, goal, ok in rows]
    return lines


def sweep_tables(sweep: dict[str, Any], kafka: dict[str, Any], pg: dict[str, Any]) -> list[str]:
    out = [
        "",
        f"## Rate sweep (knee: {rate(sweep['knee_per_second'])}/s; sustained:"
        f" {rate(sweep['sustained_per_second'])}/s)",
        "",
        "| asked/s | achieved/s | to the package note p50 / p95 / p99 / max ms (n) |"
        " to LineLinked p50 / p99 ms | machine CPU per booking | of which services |"
        " record ops per booking | Kafka baseline used | p99 < 250 ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in sweep["steps"]:
        services = sum(v for k, v in s["ms_by_process"].items() if k.split("#")[0] in SERVICE_NAMES)
        ops_per_second = s["record_operations_per_message"] * (s["achieved_per_second"] or 0)
        out.append(
            f"| {rate(s['asked_per_second'])} | {rate(s['achieved_per_second'])} |"
            f" {lat(s['to_note_ms'])} | {ms(s['to_link_ms']['p50'])} / {ms(s['to_link_ms']['p99'])}"
            f" | {ms(s['machine_ms'])} ms | {ms(services)} ms |"
            f" {s['record_operations_per_message']:.1f} |"
            f" {ops_per_second / kafka['record_operations_per_second']:.0%} |"
            f" {'yes' if passes_knee(s, sweep['knee_ms']) else 'no'} |"
        )
    step = knee_step(sweep) or (sweep["steps"][-1] if sweep["steps"] else None)
    if step:
        out += [
            "",
            f"Where the CPU went at {rate(step['asked_per_second'])}/s"
            f" ({'the knee' if step is knee_step(sweep) else 'the last step'}):",
            "",
            "| process | ms per booking | cores busy |",
            "|---|---|---|",
        ]
        for name, value in sorted(step["ms_by_process"].items(), key=lambda kv: -kv[1]):
            label = "whole machine" if name == "machine" else name
            out.append(f"| {label} | {ms(value)} | {step['cores_busy'][name]:.2f} |")
        piped = pg["pipelined"]["machine_ms_per_statement"]
        single = pg["single"]["machine_ms_per_commit"]
        kafka_floor = (
            step["record_operations_per_message"] * kafka["machine_ms_per_record_operation"]
        )
        out += [
            "",
            f"Beside the baselines: a booking's {step['record_operations_per_message']:.1f} record"
            f" operations cost {ms(kafka_floor)} ms of machine CPU in the raw aiokafka loop; its"
            f" {ms(step['machine_ms'])} ms would pay for {step['machine_ms'] / piped:,.0f}"
            f" pipelined INSERTs or {step['machine_ms'] / single:,.1f} single-insert commits in"
            " the raw asyncpg loops.",
        ]
    return out


SERVICE_NAMES = {"calendar", "invoicing", "matcher"}


def services_ms(step: dict[str, Any]) -> float:
    """The three services' own CPU per message (every replica)."""
    return sum(v for k, v in step["ms_by_process"].items() if k.split("#")[0] in SERVICE_NAMES)


def passes_knee(step: dict[str, Any], limit: float) -> bool:
    return passes(step, limit)


def kinds_table(
    title: str, column: str, steps: list[tuple[str, dict[str, Any]]], kafka: dict[str, Any]
) -> list[str]:
    out = [
        "",
        f"## {title}",
        "",
        f"| kind (last event) | {column} | n | achieved/s | to the last event p50 / p99 ms |"
        " machine CPU per message | of which services | record ops per message |"
        " their cost in the raw Kafka loop |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    floor = kafka["machine_ms_per_record_operation"]
    for kind in KINDS:
        for label, kinds in steps:
            k = kinds[kind]
            late = k["to_done_ms"]
            failed = f" ({sum(k['failed'].values())} refused)" if k["failed"] else ""
            out.append(
                f"| {kind} ({k['done_event']}) | {label} | {k['count']}{failed} |"
                f" {rate(k['achieved_per_second'])} | {ms(late['p50'])} / {ms(late['p99'])} |"
                f" {ms(k['machine_ms'])} ms | {ms(services_ms(k))} ms |"
                f" {k['record_operations_per_message']:.1f} |"
                f" {ms(k['record_operations_per_message'] * floor)} ms |"
            )
    return out


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(10, 5))
    for s in results["sweep"]["steps"]:
        series = s.get("series") or []
        if series:
            axes.plot(
                [t for t, _ in series],
                [latency * 1000 for _, latency in series],
                ".",
                markersize=2,
                label=f"{s['asked_per_second']}/s",
            )
    axes.set_xlabel("seconds into the step (scheduled send)")
    axes.set_ylabel("scheduled send -> LineLinked (ms)")
    axes.set_yscale("log")
    axes.set_title("Packline: latency over time in each step of the rate sweep")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
