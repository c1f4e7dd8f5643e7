"""Failed logins and 2FA codes, counted per account and per client IP in Redis.

Counters are fixed windows (`login_fail_window`), shared by every admin UI process. When
Redis is unreachable the check lets the attempt through (logged): a Redis outage must not
stop a user from logging in to delete a leaked key, and argon2 keeps guessing slow anyway.
"""

from __future__ import annotations

import hashlib
import logging

import redis.asyncio as aioredis
from aiohttp import web

from gateway.store.errors import REDIS_ERRORS

__all__ = ["IP_LIMIT_FACTOR", "MAIL_LIMIT", "THROTTLE_KEY", "Throttle"]

log = logging.getLogger(__name__)

# Many users may share one address (an office NAT): the per-IP budget is a few accounts' worth.
IP_LIMIT_FACTOR = 5
# Emails one address or key may be sent per window (sign-up, reset, verify, resend): enough for
# a lost message or two, too few to flood someone's inbox through our forms.
MAIL_LIMIT = 5


class Throttle:
    """`retry_after` before an attempt, `record_failure` after a wrong answer."""

    def __init__(self, client: aioredis.Redis, prefix: str, limit: int, window: float) -> None:
        self._client = client
        self._prefix = f"{prefix}admin:fail:"
        self._limit = max(1, limit)
        self._window = max(1, int(window))

    def _keys(self, account: str, ip: str) -> tuple[str, str]:
        # The email is hashed: no address sits in Redis in clear.
        digest = hashlib.sha256(account.strip().lower().encode()).hexdigest()[:32]
        return f"{self._prefix}acct:{digest}", f"{self._prefix}ip:{ip}"

    async def retry_after(self, account: str, ip: str) -> int | None:
        """Seconds to wait when either counter is over its limit, else None."""
        acct_key, ip_key = self._keys(account, ip)
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.get(acct_key)
                pipe.get(ip_key)
                pipe.ttl(acct_key)
                pipe.ttl(ip_key)
                acct, by_ip, acct_ttl, ip_ttl = await pipe.execute()
        except REDIS_ERRORS as exc:
            log.warning("login throttle unavailable (redis): %r", exc)
            return None
        waits = []
        if acct is not None and int(acct) >= self._limit:
            waits.append(max(1, int(acct_ttl)))
        if by_ip is not None and int(by_ip) >= self._limit * IP_LIMIT_FACTOR:
            waits.append(max(1, int(ip_ttl)))
        return max(waits) if waits else None

    async def record_failure(self, account: str, ip: str) -> None:
        acct_key, ip_key = self._keys(account, ip)
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                # SET NX EX then INCR (which keeps the TTL): the window starts at the first
                # failure and later ones do not extend it (EXPIRE NX would need Redis 7).
                for key in (acct_key, ip_key):
                    pipe.set(key, 0, ex=self._window, nx=True)
                    pipe.incr(key)
                await pipe.execute()
        except REDIS_ERRORS as exc:
            log.warning("login throttle unavailable (redis): %r", exc)

    async def allow_mail(self, kind: str, identity: str) -> bool:
        """Count one email of `kind` to `identity`; False once over `MAIL_LIMIT` a window."""
        digest = hashlib.sha256(identity.strip().lower().encode()).hexdigest()[:32]
        key = f"{self._prefix}mail:{kind}:{digest}"
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.set(key, 0, ex=self._window, nx=True)
                pipe.incr(key)
                _, count = await pipe.execute()
        except REDIS_ERRORS as exc:
            log.warning("mail throttle unavailable (redis): %r", exc)
            return True
        return int(count) <= MAIL_LIMIT

    async def reset(self, account: str) -> None:
        """After a full login: the account's count starts again (the IP's does not)."""
        acct_key, _ = self._keys(account, "")
        try:
            await self._client.delete(acct_key)
        except REDIS_ERRORS as exc:
            log.warning("login throttle unavailable (redis): %r", exc)


THROTTLE_KEY: web.AppKey[Throttle] = web.AppKey("throttle", Throttle)
