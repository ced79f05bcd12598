from __future__ import annotations

import asyncpg
import pytest
from aiokafka.errors import KafkaConnectionError, RequestTimedOutError, UnknownTopicOrPartitionError
from packline_contracts.envelope import InvalidMessage
from packline_core.errors import ArgumentError, Rejected, is_permanent, is_transient


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(),
        ConnectionResetError(),
        TimeoutError(),
        asyncpg.CannotConnectNowError(),
        asyncpg.TooManyConnectionsError(),
        asyncpg.SerializationError(),
        asyncpg.DeadlockDetectedError(),
        asyncpg.InterfaceError("connection closed"),
        KafkaConnectionError(),
        RequestTimedOutError(),
        UnknownTopicOrPartitionError(),  # Kafka's own verdict: retriable (metadata catching up)
    ],
)
def test_outages_and_conflicts_are_retried(error: BaseException) -> None:
    assert is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        Rejected("no such line"),
        ValueError("bad value"),
        KeyError("x"),
        asyncpg.UniqueViolationError(),
        asyncpg.UndefinedColumnError(),
    ],
)
def test_everything_else_is_not(error: BaseException) -> None:
    assert not is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        Rejected("no such line"),
        asyncpg.CharacterNotInRepertoireError(),  # NUL in text
        asyncpg.DatetimeFieldOverflowError(),
        asyncpg.NumericValueOutOfRangeError(),
        asyncpg.StringDataRightTruncationError(),
        # asyncpg's own "invalid input for query argument" (e.g. an int over int32) is an
        # InterfaceError: once taken for a lost connection and retried for ever.
        ArgumentError("invalid input for query argument $1: 3000000000 (out of int32 range)"),
        InvalidMessage.single("payload", "too large for an event"),
        RecursionError(),
    ],
)
def test_what_the_message_itself_causes_is_permanent_and_never_retried(
    error: BaseException,
) -> None:
    assert is_permanent(error)
    assert not is_transient(error)


@pytest.mark.parametrize(
    "error",
    [asyncpg.InterfaceError("connection closed"), asyncpg.UniqueViolationError(), KeyError("x")],
)
def test_outages_races_and_bugs_are_not_permanent(error: BaseException) -> None:
    assert not is_permanent(error)
