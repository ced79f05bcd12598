"""Reading Kafka records that other clients wrote, whatever bytes they hold.

aiokafka decodes every header name as strict UTF-8 while it unpacks a fetched batch. One record
whose header name is not UTF-8 (``kcat -H $'\\xff\\xfe=x'``) makes ``getmany()`` raise for the whole
fetch: the partition never moves, the consume loop restarts hot, and records already unpacked
from other partitions are dropped from memory. So the fetcher is given record sets that read such a
batch again, leniently, when the fast reader refuses it: the header name keeps its bytes as
surrogate escapes (``str.encode("utf-8", "surrogateescape")`` gives them back), and the
consumer dead-letters the record with that reason (``packline_contracts.envelope.decode``).

Only a batch the fast reader refused is read the slow way; the records before the bad one are
not handed over twice.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

from aiokafka.consumer import fetcher
from aiokafka.record.default_records import _DefaultRecordBatchPy
from aiokafka.record.memory_records import MemoryRecords

# Every record batch (v0-v2) starts with offset (int64) and length (int32); the length counts
# the bytes after those twelve.
_FRAMING = struct.Struct(">qi")


class _LenientBytes(bytearray):
    """A batch's buffer whose slices decode text with surrogate escapes instead of failing."""

    def __getitem__(self, index: Any) -> Any:
        part = super().__getitem__(index)
        return _LenientSlice(part) if isinstance(index, slice) else part


class _LenientSlice(bytes):
    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return super().decode(encoding, "surrogateescape")


def _lenient_records(raw: bytes) -> Iterator[Any]:
    batch = _DefaultRecordBatchPy(raw)
    iter(batch)  # decompresses
    batch._buffer = _LenientBytes(batch._buffer)
    yield from batch


class _TolerantBatch:
    """One record batch: the fast reader's, with the lenient one behind it."""

    def __init__(self, batch: Any, raw: bytes) -> None:
        self._batch = batch
        self._raw = raw
        self._records: Iterator[Any] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._batch, name)

    def __iter__(self) -> _TolerantBatch:
        return self

    def __next__(self) -> Any:
        if self._records is None:
            self._records = self._read()
        return next(self._records)

    def _read(self) -> Iterator[Any]:
        last: int | None = None
        try:
            for record in self._batch:
                last = record.offset
                yield record
        except UnicodeDecodeError:
            for record in _lenient_records(self._raw):
                if last is None or record.offset > last:
                    yield record


class TolerantMemoryRecords:
    """aiokafka's record set, whose batches fall back to the lenient reader."""

    def __init__(self, data: bytes) -> None:
        self._records = MemoryRecords(data)
        self._data = data
        self._position = 0

    def size_in_bytes(self) -> int:
        return int(self._records.size_in_bytes())

    def has_next(self) -> bool:
        return bool(self._records.has_next())

    def next_batch(self) -> Any:
        batch = self._records.next_batch()
        if batch is None:
            return None
        start = self._position
        _, length = _FRAMING.unpack_from(self._data, start)
        self._position = start + _FRAMING.size + length
        return _TolerantBatch(batch, bytes(self._data[start : self._position]))


def install() -> None:
    """Make every aiokafka consumer of this process read fetched records tolerantly."""
    fetcher.MemoryRecords = TolerantMemoryRecords
