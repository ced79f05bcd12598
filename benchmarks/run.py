"""Packline's benchmark: what a booking (and every other message) costs the whole machine, and how
fast it reaches the calendar's package note, next to what the machine does without Packline.

    deploy/packline bench            the full run (about 20 minutes on 2 cores)
    deploy/packline bench --quick    seconds-long smoke version (CI runs it)

It starts the three services as processes on topics and databases of its own, builds a synthetic
clinic (practitioners, a location, packages of 1, 5, 20 and 100 sessions, patients who bought
them) and drives commands through Kafka as front ends would. In order:

1. baselines: raw aiokafka consume -> produce (record operations/s), raw asyncpg (one insert per
   commit; 500 per commit; pipelined on 8 connections), each with the machine's CPU per operation;
2. a warm-up (not measured);
3. idle: one booking a second;
4. a rate sweep, doubling from 50 bookings/s, that finds the knee (the highest rate whose p99 to
   the package note stays under 250 ms) and the highest sustained rate (p99 under 1 s);
5. every message kind (book, reschedule, cancel, purchase, payment, void) for patients holding
   5, 20, 100 and 1,000 lines;
6. the same as the databases grow to 10 thousand (measured before the sweep, while they are
   that small), 100 thousand and 1 million lines;
7. a backlog queued while the matcher is stopped, its drain, and new bookings meanwhile.

Every step reports the whole machine's CPU per message (/proc/stat) beside each process's share,
latency from each message's scheduled send time with the achieved rate, and Kafka record
operations per message. docs/benchmark.md says what each figure means.

Output in ``bench-results/<time>/``: ``results.md`` (also printed), ``results.json`` and
``latency.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import phases
from benchmarks.baselines import kafka_baseline, postgres_baseline
from benchmarks.driver import Driver
from benchmarks.report import plot, report
from benchmarks.system import Config, System, drop_system, start_system


async def profile(system: System, seconds: float) -> dict[str, list[tuple[str, float]]]:
    """py-spy on every service for ``seconds``: each one's functions by share of samples spent
    in them (self time)."""
    py_spy = Path(sys.executable).parent / "py-spy"
    out = system.config.out / "profiles"
    out.mkdir(exist_ok=True)
    runs = {}
    for name, pid in system.pids().items():
        runs[name] = await asyncio.create_subprocess_exec(
            str(py_spy),
            "record",
            "--format",
            "raw",
            "--duration",
            str(int(seconds)),
            "--rate",
            "200",
            "--nonblocking",
            "--pid",
            str(pid),
            "--output",
            str(out / f"{name}.txt"),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
    tops: dict[str, list[tuple[str, float]]] = {}
    for name, run in runs.items():
        await run.wait()
        counts: dict[str, int] = {}
        path = out / f"{name}.txt"
        for line in path.read_text().splitlines() if path.exists() else []:
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue  # a frame name that spans lines (py-spy prints some docstrings)
            leaf = stack.rsplit(";", 1)[-1]
            counts[leaf] = counts.get(leaf, 0) + int(count)
        total = sum(counts.values()) or 1
        top = sorted(counts.items(), key=lambda item: -item[1])[:8]
        tops[name] = [(frame, n / total) for frame, n in top]
    return tops


class Phases:
    """Says which phase runs and for how long the benchmark has run."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.started = total, 0, time.monotonic()

    def __call__(self, what: str) -> None:
        self.done += 1
        elapsed = time.monotonic() - self.started
        print(f"[bench {elapsed:5.0f} s] phase {self.done}/{self.total}: {what}", flush=True)


async def main(config: Config) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:8]
    results: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(),
        "quick": config.quick,
        "cores": os.cpu_count(),
        "config": {
            k: (list(v) if isinstance(v, tuple) else v)
            for k, v in vars(config).items()
            if k not in ("out", "admin_url")
        },
    }
    phase = Phases(10)
    phase("baselines: raw aiokafka, raw asyncpg (single, batched, pipelined)")
    results["baseline_kafka"] = await kafka_baseline(config, run_id)
    results["baseline_postgres"] = await postgres_baseline(config, run_id)
    phase("starting the system")
    system = await start_system(config, run_id)
    driver = Driver(system)
    try:
        await driver.start()
        await driver.clinic()
        await driver.broker.quiet(within=120)  # the catalogue is everywhere before a purchase
        phase(f"warm-up: {config.warmup_rate}/s for {config.warmup_seconds:.0f} s")
        results["warmup"] = await phases.warm_up(driver)
        phase(f"idle: {config.idle_bookings} bookings at one a second")
        results["idle"] = await phases.idle(driver)
        first, rest = list(config.line_steps[:1]), list(config.line_steps[1:])
        # The smallest total first, while the databases are still that small.
        phase(f"every message kind at {first[0]:,} lines in total")
        results["total_lines"] = await phases.total_lines(driver, first)
        phase(f"rate sweep from {config.sweep_start}/s, {config.sweep_seconds:.0f} s a step")
        if config.profile:
            profiling = asyncio.create_task(profile(system, 15))
        results["sweep"] = await phases.sweep(driver)
        if config.profile:
            results["profile"] = await profiling
        phase(f"every message kind, lines per patient {list(config.per_patient)}")
        results["per_patient"] = await phases.per_patient(driver)
        phase(f"every message kind, total lines {rest or '(no more steps)'}")
        if rest and results["total_lines"][-1]["reached"]:
            results["total_lines"] += await phases.total_lines(driver, rest)
        phase(f"backlog of {config.backlog:,}")
        results["backlog"] = await phases.backlog(driver)
        results["note_looks"] = driver.note_looks
        phase("done")
    finally:
        await driver.stop()
        await drop_system(system)
    return results


def finite(value: Any) -> Any:
    """JSON has no infinity: missing results (inf) and absent figures (nan) become null."""
    if isinstance(value, float) and (math.isinf(value) or math.isnan(value)):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def cli() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke version")
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument("--seconds", type=float, help="length of each sweep step (12)")
    parser.add_argument("--sweep", help="first and highest rate of the sweep, e.g. 50,6400")
    parser.add_argument("--idle", type=int, help="bookings of the idle run, one a second (60)")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up at 100/s (10)")
    parser.add_argument("--per-patient", help="lines per patient of each step, e.g. 5,20,100,1000")
    parser.add_argument("--lines", help="total lines of each step, e.g. 10000,100000,1000000")
    parser.add_argument(
        "--fill-seconds", type=float, help="most seconds the total-lines fills may take (360)"
    )
    parser.add_argument("--patients", type=int, help="patients of each kinds step (50)")
    parser.add_argument("--backlog", type=int, help="bookings queued while the matcher stops")
    parser.add_argument("--partitions", type=int, help="partitions of every topic (12)")
    parser.add_argument(
        "--profile", action="store_true", help="py-spy every service during the sweep"
    )
    args = parser.parse_args()
    out = args.out / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out.mkdir(parents=True, exist_ok=True)
    config = Config(
        kafka=os.environ.get("PACKLINE_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        admin_url=os.environ["PACKLINE_BENCH_DATABASE_URL"],
        quick=args.quick,
        out=out,
    )
    if args.seconds:
        config.sweep_seconds = args.seconds
    if args.sweep:
        config.sweep_start, config.sweep_max = (int(n) for n in args.sweep.split(","))
    if args.idle:
        config.idle_bookings = args.idle
    if args.warmup is not None:
        config.warmup_seconds = args.warmup
    if args.per_patient:
        config.per_patient = tuple(int(n) for n in args.per_patient.split(","))
    if args.lines:
        config.line_steps = tuple(int(n) for n in args.lines.split(","))
    if args.fill_seconds:
        config.fill_seconds = args.fill_seconds
    if args.patients:
        config.kind_patients = args.patients
    if args.backlog:
        config.backlog = args.backlog
    if args.partitions:
        config.partitions = args.partitions
    config.profile = args.profile
    results = asyncio.run(main(config))
    table = report(results)
    (out / "results.json").write_text(json.dumps(finite(results), indent=1) + "\n")
    (out / "results.md").write_text(table)
    plot(results, out / "latency.png")
    print(table)
    print(f"results in {out}/ (results.md, results.json, latency.png)")


if __name__ == "__main__":
    cli()
