"""The measured steps. Every step has the same shape (``measure``): its commands are encoded
first, the machine's and every process's CPU and the broker's offsets are read, the commands go
out on schedule, the step waits for each command's last event (and each booking's package note),
then until the system is quiet (every service group has committed every record), and reads the
CPU and offsets again. CPU and record operations are therefore the whole cost of the step's
commands, tails included, divided by the number of commands."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from typing import Any

import asyncpg
from packline_contracts.appointments import BookAppointment

from benchmarks import machine
from benchmarks.driver import DONE, Command, Driver, Patient, Sent
from benchmarks.offsets import record_operations


def percentiles(values: Sequence[float], missing: int = 0) -> dict[str, float]:
    """p50 / p95 / p99 / max in ms of ``values`` (seconds); ``missing`` results count as
    infinitely late (a p99 over missing results is not a number to trust: it is inf)."""
    if not values and not missing:
        return {"p50": math.nan, "p95": math.nan, "p99": math.nan, "max": math.nan, "n": 0}
    ordered = sorted(values) + [math.inf] * missing

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {
        "p50": at(0.50),
        "p95": at(0.95),
        "p99": at(0.99),
        "max": ordered[-1] * 1000,
        "n": len(values),
    }


def cpu_snapshot(driver: Driver) -> dict[str, float]:
    return machine.snapshot(driver.system.pids(), driver.infrastructure)


async def measure(
    driver: Driver, commands: Sequence[Command], rate: float | None, *, keep_series: bool = False
) -> dict[str, Any]:
    batch = driver.prepare(commands)
    kind = commands[0].kind
    offsets = await driver.broker.offsets()
    cpu = cpu_snapshot(driver)
    start = await driver.send(batch, rate)
    duration = len(batch) / rate if rate else 0.0
    missing = 0
    try:
        await driver.until_done(batch, within=60 + 4 * duration)
    except TimeoutError:
        missing = -1  # counted below
        driver.forget(batch)
    quiet = await driver.broker.quiet(within=driver.config.quiet_seconds)
    spent = machine.used(cpu, cpu_snapshot(driver))
    operations = record_operations(offsets, quiet)
    return summarise(driver, kind, batch, rate, start, spent, operations, missing, keep_series)


def summarise(
    driver: Driver,
    kind: str,
    batch: Sequence[Sent],
    rate: float | None,
    start: float,
    spent: dict[str, float],
    operations: dict[str, int],
    missing: int,
    keep_series: bool,
) -> dict[str, Any]:
    n = len(batch)
    done_type = DONE[kind]
    failed = [s for s in batch if s.cid in driver.failed]
    failures: dict[str, int] = {}
    for s in failed:
        failures[driver.failed[s.cid]] = failures.get(driver.failed[s.cid], 0) + 1
    latency = [
        driver.seen[(done_type, s.cid)] - s.scheduled
        for s in batch
        if (done_type, s.cid) in driver.seen and s.cid not in driver.failed
    ]
    lost = n - len(latency) - len(failed)
    result: dict[str, Any] = {
        "kind": kind,
        "count": n,
        "asked_per_second": rate,
        "achieved_per_second": n / max(batch[-1].sent - start, 1e-9) if rate and n > 1 else None,
        "send_lag_ms": percentiles([s.sent - s.scheduled for s in batch]),
        "done_event": done_type,
        "to_done_ms": percentiles(latency, lost + len(failed)),
        "failed": failures,
        "missing": lost,
        "seconds": spent["wall"],
        "machine_ms": spent["machine"] / n * 1000,
        "ms_by_process": {k: v / n * 1000 for k, v in spent.items() if k != "wall"},
        "cores_busy": {k: v / spent["wall"] for k, v in spent.items() if k != "wall"},
        "record_operations": operations,
        "record_operations_per_message": operations["total"] / n,
        "timed_out": missing < 0,
    }
    if batch[0].command.note:
        notes = [driver.notes.get(s.appointment_id) for s in batch]
        seen = [note[0] - s.scheduled for note, s in zip(notes, batch, strict=True) if note]
        row = [note[1] - s.scheduled for note, s in zip(notes, batch, strict=True) if note]
        result["to_note_ms"] = percentiles(seen, n - len(seen))
        result["to_note_row_time_ms"] = percentiles(row, n - len(row))
        result["to_link_ms"] = result["to_done_ms"]
    if keep_series:
        result["series"] = [
            [round(s.scheduled - start, 3), round(driver.seen[(done_type, s.cid)] - s.scheduled, 4)]
            for s in batch
            if (done_type, s.cid) in driver.seen
        ]
    return result


def passes(step: dict[str, Any], limit_ms: float) -> bool:
    """All done and noted, refused none, sent at >= 95 % of the asked rate, p99 to the package
    note under ``limit_ms``."""
    achieved = step["achieved_per_second"] or step["asked_per_second"]
    return (
        not step["failed"]
        and step["missing"] == 0
        and achieved >= 0.95 * step["asked_per_second"]
        and step["to_note_ms"]["p99"] < limit_ms
    )


async def bookings_at(driver: Driver, rate: float, count: int) -> dict[str, Any]:
    await driver.ensure_free(count)  # bought before the step: not in its figures
    return await measure(driver, [driver.booking() for _ in range(count)], rate, keep_series=True)


async def warm_up(driver: Driver) -> dict[str, Any]:
    config = driver.config
    step = await bookings_at(
        driver, config.warmup_rate, max(1, int(config.warmup_rate * config.warmup_seconds))
    )
    return {"bookings": step["count"], "rate": config.warmup_rate}


async def idle(driver: Driver) -> dict[str, Any]:
    return await bookings_at(driver, 1, driver.config.idle_bookings)


async def sweep(driver: Driver) -> dict[str, Any]:
    """Rates doubling from ``sweep_start`` until a step misses the sustained limit (p99 to the
    note under 1 s, sent at the asked rate, all linked), then steps between the knee (p99 under
    250 ms) and the first rate above it."""
    config = driver.config
    steps: list[dict[str, Any]] = []

    async def step(rate: int) -> dict[str, Any]:
        result = await bookings_at(driver, rate, max(1, int(rate * config.sweep_seconds)))
        steps.append(result)
        return result

    knee = sustained = first_over = None
    rate = config.sweep_start
    while rate <= config.sweep_max:
        result = await step(rate)
        if passes(result, config.knee_ms):
            knee = rate
        elif first_over is None:
            first_over = rate
        if not passes(result, config.sustained_ms):
            break
        sustained = rate
        rate *= 2
    for _ in range(config.sweep_bisect):
        low = knee or 0
        if first_over is None or first_over - low <= max(low * 0.1, 10):
            break
        middle = (low + first_over) // 2
        if passes(await step(middle), config.knee_ms):
            knee = middle
        else:
            first_over = middle
    steps.sort(key=lambda s: s["asked_per_second"])
    return {
        "steps": steps,
        "knee_per_second": knee,
        "first_over_knee_per_second": first_over,
        "sustained_per_second": sustained,
        "knee_ms": config.knee_ms,
        "sustained_ms": config.sustained_ms,
    }


async def every_kind(driver: Driver, patients: Sequence[Patient]) -> dict[str, dict[str, Any]]:
    """Each kind of message at ``kind_rate``, for patients who hold their lines: 5 bookings
    each; those rescheduled, then cancelled (their lines released); 2 purchases each of a
    1-line package; a payment on each patient's first invoice for each purchase; those
    purchases voided (no links on them)."""
    rate = driver.config.kind_rate
    kinds: dict[str, dict[str, Any]] = {}
    booked = [driver.booking(p, note=True) for _ in range(5) for p in patients]
    kinds["book"] = await measure(driver, booked, rate)
    appointments = [c.message for c in booked if isinstance(c.message, BookAppointment)]
    kinds["reschedule"] = await measure(driver, [driver.reschedule(a) for a in appointments], rate)
    kinds["cancel"] = await measure(driver, [driver.cancel(a) for a in appointments], rate)
    for p in patients:  # the cancelled bookings' lines are free again
        p.free += 5
    first = {p.patient_id: p.invoices[0] for p in patients}
    purchases = [driver.purchase(p, 1) for _ in range(2) for p in patients]
    kinds["purchase"] = await measure(driver, purchases, rate)
    kinds["payment"] = await measure(
        driver, [driver.payment(p, first[p.patient_id]) for _ in range(2) for p in patients], rate
    )
    kinds["void"] = await measure(
        driver, [driver.void(p, p.invoices[-1 - i]) for i in range(2) for p in patients], rate
    )
    for p in patients:
        p.free -= 2
    return kinds


async def per_patient(driver: Driver) -> list[dict[str, Any]]:
    steps = []
    for lines in driver.config.per_patient:
        patients = driver.new_patients(driver.config.kind_patients, f"holds{lines}")
        await driver.buy(patients, lines, within=600)
        steps.append({"lines_per_patient": lines, "kinds": await every_kind(driver, patients)})
    return steps


async def total_lines(driver: Driver, targets: Sequence[int]) -> list[dict[str, Any]]:
    """Filler patients buy 100-line packages until the databases hold each step's total; then
    every kind is measured for fresh patients holding 20 lines each. The fills share one
    deadline (``fill_seconds``): a fill that cannot reach its total in time is measured where
    it stopped, and the larger totals are left out (the report says so)."""
    config = driver.config
    deadline = time.monotonic() + config.fill_seconds
    steps = []
    for target in targets:
        have = await driver.lines_in_databases()
        reached = True
        chunk = 100  # invoices of 100 lines; then what the last chunk's rate buys in ~20 s
        while have < target:
            if time.monotonic() > deadline:
                reached = False
                break
            invoices = min((target - have) // 100 + 1, chunk)
            filler = driver.new_patients(invoices, "filler")
            started = time.monotonic()
            try:
                await driver.buy(filler, 100, within=max(deadline - time.monotonic(), 30))
            except TimeoutError:  # purchases crawl: measure where the fill stopped
                reached = False
                await driver.broker.quiet(within=1.5 * config.quiet_seconds)
                break
            rate = invoices * 100 / max(time.monotonic() - started, 1e-9)
            chunk = max(10, min(int(rate * 20 / 100), 1_000))
            have = await driver.lines_in_databases()
            print(f"[bench] {have:,} lines ({rate:,.0f} lines/s bought)", flush=True)
        patients = driver.new_patients(config.kind_patients, "total")
        await driver.buy(patients, 20, within=600)
        lines = await driver.lines_in_databases()
        steps.append(
            {
                "target_lines": target,
                "lines": lines,
                "reached": reached,
                "kinds": await every_kind(driver, patients),
            }
        )
        if not reached:
            break
    return steps


async def backlog(driver: Driver) -> dict[str, Any]:
    """The matcher stopped while ``backlog`` bookings queue; after its restart, how fast it
    drains them, and the latency of new bookings (20 a second) meanwhile."""
    system, count = driver.system, driver.config.backlog
    # The trickle books 20 a second for as long as the drain lasts: enough for a drain of 100
    # a second, and more are bought (untimed, between its batches) if it lasts longer.
    await driver.ensure_free(count + max(2_000, count // 5))
    await system.processes["matcher"].stop()
    queued = driver.prepare(driver.booking(note=False) for _ in range(count))
    await driver.send(queued, None)
    # Until the calendar has booked them all: the backlog is then the matcher's alone.
    conn = await asyncpg.connect(system.urls["calendar"])
    try:
        ids = [s.appointment_id for s in queued]
        deadline = time.monotonic() + 600
        while await conn.fetchval(
            "SELECT count(*) FROM appointments WHERE appointment_id = ANY($1::uuid[])", ids
        ) < len(ids):
            if time.monotonic() > deadline:
                raise TimeoutError("the calendar did not book the backlog in 600 s")
            await asyncio.sleep(0.5)  # a poll of the database, bounded by the deadline
    finally:
        await conn.close()
    await system.processes["matcher"].start()
    cpu = cpu_snapshot(driver)
    restarted = time.time()  # ready: from here on it drains
    probes: list[Sent] = []
    drained_all = asyncio.Event()

    async def trickle() -> None:
        while not drained_all.is_set():
            await driver.ensure_free(20)
            batch = driver.prepare([driver.booking() for _ in range(20)])
            probes.extend(batch)
            await driver.send(batch, 20)

    trickling = asyncio.create_task(trickle())
    await driver.until_done(queued, within=3600)
    linked = [driver.seen[("LineLinked", s.cid)] for s in queued]
    first, drained = min(linked), max(linked)
    drained_all.set()
    await trickling
    await driver.until_done(probes, within=300)
    await driver.broker.quiet(within=driver.config.quiet_seconds)
    spent = machine.used(cpu, cpu_snapshot(driver))
    done = [driver.seen[("LineLinked", s.cid)] - s.scheduled for s in probes]
    notes = [driver.notes[s.appointment_id][0] - s.scheduled for s in probes]
    return {
        "queued": count,
        # From the matcher's readiness: its group's rebalance, then the drain itself.
        "first_link_after_restart_seconds": first - restarted,
        "drain_seconds": drained - restarted,
        "drain_per_second": count / max(drained - restarted, 1e-9),
        # From its first link to its last: the drain rate once the matcher has its partitions.
        "drain_per_second_once_assigned": count / max(drained - first, 1e-9),
        "machine_ms_per_booking": spent["machine"] / (count + len(probes)) * 1000,
        "new_bookings": len(probes),
        "new_bookings_to_link_ms": percentiles(done),
        "new_bookings_to_note_ms": percentiles(notes),
    }
