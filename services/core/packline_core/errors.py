"""How the messaging core tells a failure that will pass from one that never will."""

from __future__ import annotations

import asyncio

import asyncpg
from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError
from asyncpg.exceptions._base import DataError as ArgumentError

__all__ = ["ArgumentError", "Rejected", "ShuttingDown", "is_permanent", "is_transient"]


class Rejected(Exception):
    """Raised by a handler: this message can never be applied (it goes to the dead letters)."""


class ShuttingDown(Exception):
    """The service is stopping; the message in hand is left uncommitted for the next owner."""


# Connection-level PostgreSQL failures and transaction conflicts: retry, never skip.
_TRANSIENT_POSTGRES = (
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InterfaceError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.QueryCanceledError,
    # Two transactions inserting into the same practitioner's time at once: the loser's
    # ON CONFLICT DO NOTHING cannot see the winner's uncommitted row and fails instead; retried,
    # it sees the row and answers "time taken".
    asyncpg.ExclusionViolationError,
)


def is_transient(error: BaseException) -> bool:
    """True for failures of the database or the broker that retrying will get past."""
    if is_permanent(error):
        return False
    if isinstance(error, (*_TRANSIENT_POSTGRES, KafkaConnectionError, KafkaTimeoutError)):
        return True
    if isinstance(error, KafkaError):
        return bool(getattr(error, "retriable", False))
    return isinstance(error, OSError | ConnectionError | asyncio.TimeoutError)


# Values the database cannot hold (NUL in text, a date out of range, a number too large) fail
# the same way on every attempt: retrying would only hold the partition.
# asyncpg's own ArgumentError (a query argument it cannot encode, e.g. an int over int32) is an
# InterfaceError, which would otherwise count as a connection problem.
_PERMANENT_POSTGRES = (asyncpg.DataError, ArgumentError)


def is_permanent(error: BaseException) -> bool:
    """True for failures that no retry will get past: the message itself is the problem."""
    from packline_contracts.envelope import InvalidMessage
    from pydantic import ValidationError

    return isinstance(
        error, (Rejected, *_PERMANENT_POSTGRES, InvalidMessage, ValidationError, RecursionError)
    )
