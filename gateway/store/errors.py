"""The exceptions that mean "a store did not answer", caught as one wherever a store is asked.

A server that is down, restarting or slow shows up as any of these; code that degrades
(falls back, retries, logs and drops) catches exactly these tuples and lets bugs through.
"""

from __future__ import annotations

import asyncpg
from redis.exceptions import RedisError

__all__ = ["POSTGRES_ERRORS", "REDIS_ERRORS", "STORE_ERRORS"]

POSTGRES_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError)
STORE_ERRORS: tuple[type[BaseException], ...] = (*POSTGRES_ERRORS, RedisError)
