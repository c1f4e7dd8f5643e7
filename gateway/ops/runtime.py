"""Turns settings into running stores: the embedded stack when no URLs are set, secrets checked."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg

from gateway.config.settings import Settings, SettingsError
from gateway.ops.embedded import EmbeddedStack, load_or_create_secrets
from gateway.store.migrate import apply_migrations

__all__ = ["migrate_database", "require_secrets", "resolved"]

log = logging.getLogger(__name__)


@contextmanager
def resolved(settings: Settings) -> Iterator[Settings]:
    """Settings with concrete store URLs and secrets.

    Embedded mode attaches to (or starts) the servers under the data folder and reads the
    secrets `gateway dev` generated there; what this process started stops on exit.
    """
    if not settings.is_embedded:
        yield settings
        return
    stack = EmbeddedStack(settings.data_dir)
    try:
        secrets = load_or_create_secrets(settings.data_dir)
        yield settings.replace(
            database_url=stack.database_url,
            redis_url=stack.redis_url,
            secret_key=settings.secret_key or secrets["secret_key"],
            key_pepper=settings.key_pepper or secrets["key_pepper"],
        )
    finally:
        stack.close()


def require_secrets(settings: Settings) -> None:
    """`serve` and `admin` refuse to start without their secrets."""
    missing = [
        f"{var} is not set"
        for var, value in (("GATEWAY_SECRET_KEY", settings.secret_key),
                           ("GATEWAY_KEY_PEPPER", settings.key_pepper))
        if not value
    ]
    if missing:
        raise SettingsError(missing)


async def migrate_database(database_url: str) -> list[str]:
    conn = await asyncpg.connect(database_url)
    try:
        return await apply_migrations(conn)
    finally:
        await conn.close()
