"""Schema migrations: numbered SQL files, each applied once, in its own transaction."""

from __future__ import annotations

from importlib import resources

import asyncpg

__all__ = ["apply_migrations", "available_migrations"]

# An arbitrary constant: serialises concurrent `gateway migrate` runs (several replicas starting).
_LOCK_ID = 0x6B657967


def available_migrations() -> list[tuple[str, str]]:
    """(name, sql) for every migration shipped with the package, in order."""
    folder = resources.files("gateway.store") / "migrations"
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")),
                   key=lambda f: f.name)
    return [(f.name.removesuffix(".sql"), f.read_text()) for f in files]


async def apply_migrations(conn: asyncpg.Connection) -> list[str]:
    """Apply the pending migrations; return their names. Safe to run again and concurrently."""
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
    try:
        done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        for name, sql in available_migrations():
            if name in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
            applied.append(name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
    return applied
