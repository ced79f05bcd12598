"""What JSON costs a message, in CPU: Packline's decode (bytes to a validated Envelope, pydantic)
and encode, beside parsing the same bytes with the standard library, and with orjson and msgspec
when they are importable (they are not Packline's dependencies: install them beside it to
compare). Run: ``python -m benchmarks.codecs``. docs/benchmark.md keeps a run's figures and what
they decided."""

from __future__ import annotations

import functools
import importlib
import json
import time
from collections.abc import Callable
from typing import Any

from packline_contracts.envelope import decode, encode
from packline_contracts.examples import example_envelope

# A booking's path: the messages each hop decodes and encodes.
KINDS = ("AppointmentBooked", "LinkAppointment", "LineLinked", "PackageInvoiceIssued")


def cpu_microseconds(operation: Callable[[], object], times: int = 3000) -> float:
    for _ in range(200):  # warm
        operation()
    began = time.process_time()
    for _ in range(times):
        operation()
    return (time.process_time() - began) / times * 1e6


def parsers() -> dict[str, Callable[[bytes], Any]]:
    found: dict[str, Callable[[bytes], Any]] = {"json.loads": json.loads}
    try:
        found["orjson"] = importlib.import_module("orjson").loads
    except ImportError:
        pass
    try:
        found["msgspec"] = importlib.import_module("msgspec.json").Decoder().decode
    except ImportError:
        pass
    return found


def main() -> None:
    others = parsers()
    print(
        f"{'message':22} {'bytes':>6} {'decode':>8} {'encode':>8}"
        + "".join(f" {name:>10}" for name in others)
        + "   (µs of CPU per message; decode and encode are Packline's, with pydantic)"
    )
    for kind in KINDS:
        size, figures = costs(kind, list(others.values()))
        print(
            f"{kind:22} {size:6}"
            + "".join(f" {figure:8.1f}" for figure in figures[:2])
            + "".join(f" {figure:10.1f}" for figure in figures[2:])
        )


def costs(kind: str, others: list[Callable[[bytes], Any]]) -> tuple[int, list[float]]:
    """The example message of ``kind``: its size, Packline's decode and encode, the others'."""
    envelope = example_envelope(kind)
    record = encode(envelope)
    value = record.value
    return len(value), [
        cpu_microseconds(lambda: decode(value, tuple(record.headers), record.key)),
        cpu_microseconds(lambda: encode(envelope)),
        *(cpu_microseconds(functools.partial(parse, value)) for parse in others),
    ]


if __name__ == "__main__":
    main()
