"""Producing with kcat (librdkafka), a Kafka client Packline did not write."""

from __future__ import annotations

import asyncio
import shutil

from tests.conftest import Infrastructure


async def kcat(
    infrastructure: Infrastructure,
    topic: str,
    value: bytes,
    *,
    key: bytes | str | None = None,
    headers: dict[str, str] | list[tuple[bytes, bytes]] | None = None,
    partition: int | None = None,
    partitioner: str = "murmur2_random",
) -> None:
    """Produce one record with kcat: value from stdin, as any non-Python client would.

    Packline's producers place a key with murmur2 (the Java client's and aiokafka's default);
    librdkafka's default (``consistent_random``, CRC32) places most keys elsewhere, so clients
    must set ``partitioner=murmur2_random``, as here unless a test says otherwise."""
    binary = shutil.which("kcat")
    assert binary, "kcat is needed (deploy/packline setup installs it)"
    arguments: list[str | bytes] = [
        binary,
        "-P",
        "-b",
        infrastructure.kafka_bootstrap,
        "-t",
        topic,
        "-X",
        "message.max.bytes=2000000",
        "-X",
        f"partitioner={partitioner}",
    ]
    if partition is not None:
        arguments += ["-p", str(partition)]
    if key is not None:
        arguments += ["-K", "\t"]
        value = (key.encode() if isinstance(key, str) else key) + b"\t" + value
    pairs = headers.items() if isinstance(headers, dict) else headers or []
    for name, header in pairs:
        name_bytes = name.encode() if isinstance(name, str) else name
        header_bytes = header.encode() if isinstance(header, str) else header
        arguments += ["-H", name_bytes + b"=" + header_bytes]
    process = await asyncio.create_subprocess_exec(
        *arguments, stdin=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, error = await process.communicate(value)
    assert process.returncode == 0, error.decode(errors="replace")
