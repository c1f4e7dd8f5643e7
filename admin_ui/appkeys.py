"""Typed keys of the application's shared state."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    import asyncpg
    import redis.asyncio as aioredis

    from admin_ui.devmail import DevMailbox
    from admin_ui.mail import Mailer
    from admin_ui.permissions import PermissionCatalog
    from admin_ui.security import DerivedKeys
    from admin_ui.throttle import Throttle
    from gateway.settings import Settings
    from gateway.store.redis import RedisKeyCache

__all__ = [
    "CACHE_KEY",
    "KEYS_KEY",
    "MAILBOX_KEY",
    "MAILER_KEY",
    "PERMISSIONS_KEY",
    "POOL_KEY",
    "REDIS_KEY",
    "SETTINGS_KEY",
    "THROTTLE_KEY",
]

SETTINGS_KEY: web.AppKey[Settings] = web.AppKey("settings")
POOL_KEY: web.AppKey[asyncpg.Pool] = web.AppKey("pool")
REDIS_KEY: web.AppKey[aioredis.Redis] = web.AppKey("redis")
CACHE_KEY: web.AppKey[RedisKeyCache] = web.AppKey("key_cache")
MAILER_KEY: web.AppKey[Mailer] = web.AppKey("mailer")
KEYS_KEY: web.AppKey[DerivedKeys] = web.AppKey("derived_keys")
THROTTLE_KEY: web.AppKey[Throttle] = web.AppKey("throttle")
PERMISSIONS_KEY: web.AppKey[PermissionCatalog] = web.AppKey("permissions")
MAILBOX_KEY: web.AppKey[DevMailbox] = web.AppKey("dev_mailbox")
