"""Where the machine's CPU goes: the whole machine from /proc/stat, and each process we can name.

The whole machine is the figure that counts (every process: the services, Kafka, PostgreSQL, the
load generator, the kernel's work for them, and anything else running). The named processes are
the services' own share beside it: the three services (and any extra replica), this load
generator, the Kafka broker and the PostgreSQL server found by the ports they listen on; "other"
is what the machine spent beyond them (the kernel's interrupt work, and on a shared machine other
people's processes: run on a quiet machine for figures).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine was busy since boot (all cores, every process)."""
    # /proc/stat's first line: user nice system idle iowait irq softirq steal guest guest_nice;
    # guest time is already inside user, so only the first eight count.
    ticks = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / TICK


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def process_seconds(pid: int, *, children: bool = False) -> float:
    """utime + stime of a process (and of its children it has waited for, with ``children``)."""
    fields = _stat(pid)
    if fields is None:
        return 0.0
    used = int(fields[11]) + int(fields[12])
    if children:
        used += int(fields[13]) + int(fields[14])
    return used / TICK


def listener_pid(port: int) -> int | None:
    """The process listening on a local TCP port (IPv4 or IPv6), from /proc/net/tcp*."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    return int(entry.name)
        except (PermissionError, FileNotFoundError, ProcessLookupError):
            continue
    return None


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


@dataclass
class Infrastructure:
    """The broker's and the database server's processes (None: not found on this machine, for
    example when they run in containers of another host)."""

    kafka: int | None
    postgres: int | None

    @classmethod
    def find(cls, kafka_port: int, postgres_port: int) -> Infrastructure:
        return cls(listener_pid(kafka_port), listener_pid(postgres_port))

    def seconds(self) -> dict[str, float]:
        used = {}
        if self.kafka is not None:
            used["Kafka"] = process_seconds(self.kafka)
        if self.postgres is not None:
            # The postmaster, its live backends, and the backends that exited (reaped: in the
            # postmaster's children's time). The whole server: every database on it.
            used["PostgreSQL"] = process_seconds(self.postgres, children=True) + sum(
                process_seconds(child) for child in children_of(self.postgres)
            )
        return used


def snapshot(services: dict[str, int], infrastructure: Infrastructure) -> dict[str, float]:
    """CPU seconds so far: each service process, this load generator, Kafka, PostgreSQL, and the
    whole machine (key "machine"); plus the wall clock (key "wall")."""
    return {
        **{name: process_seconds(pid) for name, pid in services.items()},
        "load generator": time.process_time(),
        **infrastructure.seconds(),
        "machine": machine_busy_seconds(),
        "wall": time.monotonic(),
    }


def used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds each part used between two snapshots, with "other" (the machine beyond the
    named processes) and "wall" (seconds elapsed)."""
    spent = {name: after[name] - before.get(name, 0.0) for name in after}
    named = sum(v for k, v in spent.items() if k not in ("machine", "wall"))
    spent["other"] = max(spent["machine"] - named, 0.0)
    return spent
