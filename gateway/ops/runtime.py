"""Turns settings into running stores: the embedded stack when no URLs are set, secrets checked."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg

from gateway.config.settings import Settings
from gateway.ops.embedded import EmbeddedStack, load_or_create_secrets
from gateway.ops.startup import StartupError, database_problem
from gateway.store.migrate import apply_migrations

__all__ = ["migrate_database", "resolved"]

log = logging.getLogger(__name__)


@contextmanager
def resolved(settings: Settings) -> Iterator[Settings]:
    """Settings with concrete store URLs and secrets.

    Embedded mode attaches to (or starts) the servers under the data folder and reads the
    secrets `gateway dev` generated there; what this process started stops on exit. With
    URLs set, PostgreSQL must take a connection. Either failure is a `StartupError`.
    """
    if not settings.is_embedded:
        problem = database_problem(settings.database_url or "", settings.store_timeout * 5)
        if problem:
            raise StartupError.of([problem])
        yield settings
        return
    try:
        stack = EmbeddedStack(settings.data_dir)
    except ImportError as exc:
        raise StartupError.of([
            "GATEWAY_DATABASE_URL and GATEWAY_REDIS_URL are not set, and embedded mode needs "
            f"the 'embedded' extra ({exc.name or exc} not installed): set both URLs, or install "
            "keygate[embedded]"]) from exc
    except Exception as exc:  # the servers' own start-up failures, whatever their type
        raise StartupError.of([
            f"the embedded PostgreSQL and Redis under {settings.data_dir} could not start: "
            f"{exc}"]) from exc
    try:
        secrets = load_or_create_secrets(settings.data_dir)
    except (OSError, ValueError) as exc:
        stack.close()
        raise StartupError.of([f"the dev secrets in {settings.data_dir} cannot be read or "
                               f"written: {exc}"]) from exc
    try:
        yield settings.replace(
            database_url=stack.database_url,
            redis_url=stack.redis_url,
            secret_key=settings.secret_key or secrets["secret_key"],
            key_pepper=settings.key_pepper or secrets["key_pepper"],
        )
    finally:
        stack.close()


async def migrate_database(database_url: str) -> list[str]:
    conn = await asyncpg.connect(database_url)
    try:
        return await apply_migrations(conn)
    finally:
        await conn.close()
