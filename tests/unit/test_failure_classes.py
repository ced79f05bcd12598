from __future__ import annotations

import asyncpg
import pytest
from aiokafka.errors import KafkaConnectionError, RequestTimedOutError, UnknownTopicOrPartitionError
from packline_core.errors import Rejected, is_transient


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
