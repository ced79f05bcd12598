"""Database types shared by the core and the services' SQL."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

if TYPE_CHECKING:
    # A connection of its own or one borrowed from the pool: the same to a handler.
    Connection: TypeAlias = asyncpg.Connection[Any] | PoolConnectionProxy[Any]
else:  # asyncpg's classes are generic only in its type stubs
    Connection: TypeAlias = asyncpg.Connection | PoolConnectionProxy
